"""The two surfaces a run goes through: the graph in this process, and the HTTP server."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from langchain_core.messages import HumanMessage

from bench.plans import QUESTION, Plan, Sample, tag
from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.runner import stream_run


class GraphDriver:
    """Runs the compiled graph in this process (real ChatOpenAI clients via the default factory)."""

    name = "graph"

    def __init__(self) -> None:
        self.graph = build_graph()

    async def run(self, plan: Plan, *, stream: bool, timeout_s: float = 60.0) -> Sample:
        run_tag = tag()
        messages = [HumanMessage(content=f"[bench:{run_tag}] {QUESTION}")]
        context = plan.context()
        sample = Sample(tag=run_tag, start=0.0, end=0.0)
        cpu0 = time.process_time()
        sample.start = time.monotonic()
        try:
            final = await asyncio.wait_for(self._run(messages, context, stream, sample), timeout_s)
            sample.ok = bool(final.text)
        except Exception as exc:  # a failed run is a result to report, not a crash
            sample.error = f"{type(exc).__name__}: {exc}"[:300]
        sample.end = time.monotonic()
        sample.cpu_ms = (time.process_time() - cpu0) * 1000
        return sample

    async def _run(
        self, messages: list[Any], context: dict[str, Any], stream: bool, sample: Sample
    ) -> Any:
        if not stream:
            out = await self.graph.ainvoke({"messages": messages}, context=context)
            return out["messages"][-1]
        final = None
        async for event in stream_run(self.graph, messages, context):
            if event.kind == "token" and sample.first_token is None and event.chunk is not None:
                if event.chunk.text:
                    sample.first_token = time.monotonic()
            elif event.kind == "final":
                final = event.message
        return final


class HttpDriver:
    """Calls the real OpenAI-compatible server with httpx, like any OpenAI client would."""

    name = "http"

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.url = f"{base_url}/chat/completions"
        self.client = client

    def body(self, plan: Plan, run_tag: str, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": "fusion",
            "messages": [{"role": "user", "content": f"[bench:{run_tag}] {QUESTION}"}],
            "stream": stream,
            "fusion": plan.context(),
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def run(self, plan: Plan, *, stream: bool, timeout_s: float = 60.0) -> Sample:
        run_tag = tag()
        body = self.body(plan, run_tag, stream)
        sample = Sample(tag=run_tag, start=time.monotonic(), end=0.0)
        try:
            await asyncio.wait_for(self._run(body, stream, sample), timeout_s)
        except Exception as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:300]
        sample.end = time.monotonic()
        return sample

    async def _run(self, body: dict[str, Any], stream: bool, sample: Sample) -> None:
        if not stream:
            response = await self.client.post(self.url, json=body)
            data = response.json()
            if response.status_code != 200:
                sample.error = f"HTTP {response.status_code}: {str(data)[:200]}"
                return
            sample.ok = bool(data["choices"][0]["message"]["content"])
            return
        text, done = [], False
        async with self.client.stream("POST", self.url, json=body) as response:
            if response.status_code != 200:
                sample.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    done = True
                    break
                chunk = json.loads(payload)
                if "error" in chunk:
                    sample.error = str(chunk["error"])[:200]
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if sample.first_token is None:
                            sample.first_token = time.monotonic()
                        text.append(content)
        sample.ok = done and bool(text) and sample.error is None


Driver = GraphDriver | HttpDriver
