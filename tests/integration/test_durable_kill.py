"""A real crash: SIGKILL the process running the graph, resume in a new process, count calls.

The graph runs in a child process against a fake OpenAI upstream on 127.0.0.1 with the real
model factory (ChatOpenAI over HTTP) and a SQLite file or the PostgreSQL test server. The third
panelist's request is held; once the first two have been answered and saved, the child is
killed with SIGKILL. The same command run again finds the unfinished run on the thread and
resumes it, and the upstream's counters show the two finished panelists were not asked again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fusiongraph.graph.persistence import open_checkpointer_sync
from tests.integration.services import postgres_url
from tests.support.fakes import judge_json
from tests.support.http_fixtures import LocalHTTPServer, Recorded, Reply, json_reply

pytestmark = pytest.mark.integration

# The child: the same command twice, as a user would re-run `fusiongraph ask` after a crash.
CHILD = """
import asyncio, json, sys

from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import open_graph
from fusiongraph.graph.persistence import has_unfinished_run


async def main(url: str, context: str, thread_id: str) -> None:
    config = {"configurable": {"thread_id": thread_id}}
    async with open_graph(url) as graph:
        resumed = await has_unfinished_run(graph, config)
        question = {"messages": [HumanMessage("Why is the sky blue?")]}
        out = await graph.ainvoke(
            None if resumed else question, config, context=json.loads(context)
        )
    final = out["messages"][-1]
    fusion = final.response_metadata["fusion"]
    print(json.dumps({
        "resumed": resumed,
        "content": final.content,
        "panel": sorted(p["panelist"] for p in fusion["panel"]),
        "failed": fusion["failed_models"],
    }))


asyncio.run(main(*sys.argv[1:4]))
"""


def panel_context(base: str) -> dict[str, Any]:
    """Three panelists, a judge and a synthesizer, all on the fake upstream at `base`."""

    def spec(name: str, **extra: Any) -> dict[str, Any]:
        return {"model": name, "base_url": base, "timeout_s": 60, **extra}

    return {
        "preset": "quality",
        "panel": [spec("m1"), spec("m2"), spec("m3")],
        "judge": spec("judge", structured_output="prompt"),
        "synthesizer": spec("synth"),
        "tool_mode": "off",
    }


class FakeOpenAI:
    """/v1/chat/completions on 127.0.0.1 that counts requests per model and can hold one."""

    def __init__(self) -> None:
        self.arrived: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.hold: set[str] = set()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = LocalHTTPServer({"/v1/chat/completions": self.complete})

    def complete(self, request: Recorded) -> Reply:
        body = request.json()
        model = body["model"]
        with self._lock:
            self.arrived[model] += 1
            held = model in self.hold
        if held:
            self.release.wait(120)  # the client is killed meanwhile; the reply goes nowhere
        text = {"judge": judge_json(consensus=["scattering"]), "synth": "Final answer."}.get(
            model, f"Rayleigh scattering, says {model}."
        )
        usage = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
        reply: Reply
        if body.get("stream"):
            chunks = [
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
            ]
            head = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model}
            sse = "".join(f"data: {json.dumps({**head, **c})}\n\n" for c in chunks)
            sse += "data: [DONE]\n\n"
            reply = 200, {"Content-Type": "text/event-stream"}, sse.encode()
        else:
            reply = json_reply(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            )
        with self._lock:
            self.answered[model] += 1
        return reply


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    with fake.server:
        yield fake
        fake.release.set()


@pytest.fixture(params=["sqlite", "postgres"])
def checkpointer_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    return postgres_url()


def saved_panel_answers(url: str, thread_id: str) -> int:
    with open_checkpointer_sync(url) as saver:
        assert saver is not None
        saved = saver.get_tuple({"configurable": {"thread_id": thread_id}})
    return 0 if saved is None else sum(1 for w in saved.pending_writes if w[1] == "panel")


def child(script: Path, url: str, base: str, thread_id: str, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return subprocess.Popen(
        [sys.executable, str(script), url, json.dumps(panel_context(base)), thread_id],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=env,
    )


def test_sigkilled_run_resumes_without_calling_finished_panelists(
    upstream: FakeOpenAI, checkpointer_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "ask.py"
    script.write_text(CHILD)
    base = upstream.server.url("/v1")
    thread_id = f"kill-{os.getpid()}-{time.time_ns()}"
    upstream.hold = {"m3"}

    first = child(script, checkpointer_url, base, thread_id, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 60
        while not (
            upstream.answered["m1"] == upstream.answered["m2"] == 1
            and upstream.arrived["m3"] == 1
            and saved_panel_answers(checkpointer_url, thread_id) == 2
        ):
            if first.poll() is not None:
                pytest.fail(f"the first run ended early:\n{(tmp_path / 'first.log').read_text()}")
            assert time.monotonic() < deadline, (dict(upstream.arrived), dict(upstream.answered))
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        assert first.wait(30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    assert upstream.answered["judge"] == upstream.answered["synth"] == 0

    upstream.hold = set()
    second = child(script, checkpointer_url, base, thread_id, tmp_path / "second.log")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])

    assert result["resumed"] is True
    assert result["content"] == "Final answer."
    assert result["panel"] == ["p1", "p2", "p3"] and result["failed"] == []
    # m3: the request cut off by the kill, and the one of the resumed run.
    assert dict(upstream.arrived) == {"m1": 1, "m2": 1, "m3": 2, "judge": 1, "synth": 1}
