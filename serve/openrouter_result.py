"""OpenRouter Fusion's result, read from a fusiongraph run's record (`response_metadata
["fusion"]`): the `openrouter:fusion` output item (the SDK's OutputFusionServerToolItem, its
analysis keyed by the caller's model slugs), the tool result a chat completion carries in
`reasoning_details`, and the Responses stream's `response.fusion_call.*` events.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.messages import AIMessage
from sse_starlette import ServerSentEvent

from fusiongraph.graph.errors import FusionError
from fusiongraph.serve.openrouter_protocol import TOOL_TYPE
from fusiongraph.serve.responses_api import ResponseStreamWriter, finished

# fusiongraph's failures that OpenRouter reports as a failed tool (the calling model then
# answers alone), with OpenRouter's names for them.
FALLBACK_REASONS = {
    "all_panelists_failed": "all_panels_failed",
    "rate_limited": "rate_limited",
    "budget_exceeded": "insufficient_credits",
}
# The judge's failure reasons (nodes/judge.py) as OpenRouter's analysis-stage codes.
JUDGE_REASONS = {"invalid_response": "judge_not_valid_json", "empty": "judge_empty_completion"}


# ------------------------------------------------------------------------------- the result


def _slug(names: dict[str, str], panelist: Any) -> str:
    return names.get(str(panelist), str(panelist))


def analysis_of(record: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """fusiongraph's analysis (keyed by panelist id) as OpenRouter's FusionAnalysisResult
    (keyed by the model slugs the caller sent)."""
    analysis = record.get("analysis")
    if not isinstance(analysis, dict):
        return None
    return {
        "consensus": list(analysis.get("consensus") or []),
        "contradictions": [
            {
                "topic": c.get("topic", ""),
                "stances": [
                    {"model": _slug(names, s.get("panelist")), "stance": s.get("stance", "")}
                    for s in c.get("stances") or []
                ],
            }
            for c in analysis.get("contradictions") or []
        ],
        "partial_coverage": [
            {
                "point": p.get("point", ""),
                "models": [_slug(names, x) for x in p.get("panelists") or []],
            }
            for p in analysis.get("partial_coverage") or []
        ],
        "unique_insights": [
            {"insight": u.get("insight", ""), "model": _slug(names, u.get("panelist"))}
            for u in analysis.get("unique_insights") or []
        ],
        "blind_spots": list(analysis.get("blind_spots") or []),
    }


_STATUS_OF_REASON = {"rate_limited": 429, "auth": 401, "budget_exceeded": 402}


def failed_models(record: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for failure in record.get("failed_models") or []:
        entry: dict[str, Any] = {
            "model": _slug(names, failure.get("panelist")),
            "error": f"{failure.get('reason')}: {failure.get('message') or ''}".rstrip(": "),
        }
        status = _STATUS_OF_REASON.get(str(failure.get("reason")))
        if status is not None:
            entry["status_code"] = status
        out.append(entry)
    return out


def sources_of(record: dict[str, Any]) -> list[dict[str, str]]:
    """The pages the panel read, once each (OpenRouter's `sources`)."""
    seen: dict[str, str] = {}
    for entry in record.get("panel") or []:
        for source in entry.get("sources") or []:
            url = source.get("url")
            if url and url not in seen:
                seen[url] = source.get("title") or url
    return [{"url": url, "title": title} for url, title in seen.items()]


def judge_failure(record: dict[str, Any]) -> str | None:
    """OpenRouter's analysis-stage code for a judge that gave no analysis (None: it did)."""
    judge = record.get("judge") or {}
    if record.get("analysis") is not None or not judge.get("model") or judge.get("ok"):
        return None
    reason = str((judge.get("error") or {}).get("reason") or "")
    return JUDGE_REASONS.get(reason, "judge_upstream_error")


def fusion_item(
    record: dict[str, Any] | None,
    names: dict[str, str],
    *,
    iid: str,
    failure: tuple[str, str] | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    """The `openrouter:fusion` output item (the SDK's OutputFusionServerToolItem). `failure`:
    (OpenRouter's failure_reason, message) of a run that produced nothing usable."""
    record = record or {}
    item: dict[str, Any] = {"id": iid, "type": TOOL_TYPE, "status": status}
    if status == "in_progress":
        return item
    analysis = analysis_of(record, names)
    if analysis is not None:
        item["analysis"] = analysis
    responses = [
        {"model": _slug(names, p.get("panelist")), "content": p.get("content", "")}
        for p in record.get("panel") or []
    ]
    if responses:
        item["responses"] = responses
    failed = failed_models(record, names)
    if failed:
        item["failed_models"] = failed
    sources = sources_of(record)
    if sources:
        item["sources"] = sources
    if failure is not None:
        item["status"] = "incomplete"
        item["failure_reason"], item["error"] = failure
    elif analysis is None and (code := judge_failure(record)) is not None:
        # The judge gave no analysis: still a usable result from the raw answers (OpenRouter's
        # "judge degradation"), with why there is no analysis.
        message = ((record.get("judge") or {}).get("error") or {}).get("message") or ""
        item["error"] = f"{code}: {message}".rstrip(": ")
    return item


def tool_result(item: dict[str, Any]) -> dict[str, Any]:
    """The tool's result as the calling model and a chat-completions caller read it (the
    server-tool guide's shape: status ok or error, then the item's fields)."""
    ok = item.get("status") == "completed"
    body = {"status": "ok" if ok else "error"}
    body.update({k: v for k, v in item.items() if k not in ("id", "type", "status")})
    return body


def server_tool_detail(item: dict[str, Any], call_id: str) -> dict[str, Any]:
    """The chat-completions form of the fusion call: a `reasoning.server_tool_call` entry of the
    message's reasoning_details (the SDK's ReasoningDetailServerToolCall)."""
    return {
        "type": "reasoning.server_tool_call",
        "id": item["id"],
        "tool_call_id": call_id,
        "tool_name": TOOL_TYPE,
        "arguments": "{}",
        "result": json.dumps(tool_result(item), ensure_ascii=False),
        "index": 0,
    }


def failure_of(exc: FusionError) -> tuple[str, str] | None:
    """OpenRouter's failure_reason for a run that failed in a way its tool reports as failed
    (the calling model then answers alone); None for the failures that stay errors."""
    reason = FALLBACK_REASONS.get(exc.reason)
    return (reason, exc.message) if reason else None


class FusionStreamWriter(ResponseStreamWriter):
    """The Responses stream of an OpenRouter Fusion run: OpenAI's events for the answer, and
    before them the `openrouter:fusion` item with its `response.fusion_call.*` events (the
    SDK's FusionCall*Event): in_progress, panel.added / panel.failed as panelists start and
    fail, analysis.in_progress when the judge starts; panel.completed, analysis.completed and
    completed once the run's record holds the answers and the analysis."""

    def __init__(
        self, base: dict[str, Any], *, item_id: str, slugs: dict[str, str], analyst: str
    ) -> None:
        super().__init__(base)
        self.item_id = item_id
        self.slugs = slugs  # panelist id -> the slug the caller knows it by
        self.analyst = analyst
        self.fusion_index: int | None = None

    def _fusion(self, kind: str, **data: Any) -> ServerSentEvent:
        return self._event(
            f"response.fusion_call.{kind}",
            item_id=self.item_id,
            output_index=self.fusion_index,
            **data,
        )

    def fusion_start(self) -> list[ServerSentEvent]:
        item = {"id": self.item_id, "type": TOOL_TYPE, "status": "in_progress"}
        self.items.append(item)
        self.fusion_index = len(self.items) - 1
        return [
            self._event("response.output_item.added", output_index=self.fusion_index, item=item),
            self._fusion("in_progress"),
        ]

    def progress(self, progress: dict[str, Any]) -> list[ServerSentEvent]:
        if self.fusion_index is None:
            return []
        names = self.slugs
        kind = progress.get("event")
        panelist = str(progress.get("panelist", ""))
        if kind == "panelist_started":
            return [self._fusion("panel.added", model=names.get(panelist, panelist))]
        if kind == "panelist_failed":
            error = f"{progress.get('reason')}: {progress.get('message') or ''}".rstrip(": ")
            extra = {}
            status = _STATUS_OF_REASON.get(str(progress.get("reason")))
            if status is not None:
                extra["status_code"] = status
            return [
                self._fusion(
                    "panel.failed", model=names.get(panelist, panelist), error=error, **extra
                )
            ]
        if kind == "judge_started":
            analyst = self.analyst
            return [
                self._fusion("analysis.in_progress", analyst_model=analyst, judge_model=analyst)
            ]
        return []

    def fusion_done(self, item: dict[str, Any]) -> list[ServerSentEvent]:
        if self.fusion_index is None:
            return []
        out = [
            self._fusion("panel.completed", model=r["model"], content=r.get("content", ""))
            for r in item.get("responses") or []
        ]
        if "analysis" in item:
            out.append(self._fusion("analysis.completed", analysis=item["analysis"]))
        out.append(self._fusion("completed"))
        self.items[self.fusion_index] = item
        out.append(
            self._event("response.output_item.done", output_index=self.fusion_index, item=item)
        )
        self.fusion_index = None
        return out

    def finish(self, message: AIMessage) -> list[ServerSentEvent]:
        """The answer's remaining events; the fusion item is done before response.completed."""
        out = super().finish(message)
        if self.fusion_index is None:
            return out
        out.pop()  # response.completed, written again once the fusion item is done
        self.sequence -= 1
        record = (message.response_metadata or {}).get("fusion") or {}
        item = fusion_item(record, self.slugs, iid=self.item_id)
        out += self.fusion_done(item)
        out.append(
            self._event("response.completed", response=finished(self.base, self.items, message))
        )
        return out
