"""verify's judge call over real HTTP (the default model factory's ChatOpenAI clients, the fake
OpenAI-compatible upstream): it asks with the judge's structured-output method (a JSON schema of
JudgeTests, llama.cpp's json_object with a schema, native function calling, or the prompt alone),
reads the reply, and the run answers with the code that passes."""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterator

import pytest
from langchain_core.messages import HumanMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.tools.sandbox import bwrap_problem
from tests.support.upstream import Behaviour, FakeUpstream, UpstreamServer
from tests.unit.test_verify_graph import RIGHT, TASK, TESTS, WRONG

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("FUSIONGRAPH_TEST_BWRAP_ERROR")) or bwrap_problem() is not None,
    reason=f"bubblewrap cannot run here ({bwrap_problem()}); run scripts/ci_bubblewrap.sh install",
)
SCRIPTED = {
    "vp1": WRONG,
    "vp2": WRONG,
    "vp3": RIGHT,
    "vjudge": json.dumps({"entry_point": "median", "tests": TESTS}),
}


@pytest.fixture
def scripted(upstream: UpstreamServer) -> Iterator[FakeUpstream]:
    fake = typing.cast(FakeUpstream, upstream.app)
    for name, text in SCRIPTED.items():
        fake.models[name] = Behaviour(ttft_s=0.0, chunks=1, content=text)
    yield fake
    for name in SCRIPTED:
        fake.models.pop(name, None)


@pytest.mark.parametrize(
    ("method", "sent"),
    [
        ("json_schema", "json_schema"),
        ("json_object_schema", "json_object"),
        ("function_calling", "tools"),
        ("prompt", None),
    ],
)
async def test_the_judge_writes_tests_with_its_structured_output_method(
    openai_env: str, scripted: FakeUpstream, method: str, sent: str | None
) -> None:
    since = scripted.records[-1].id if scripted.records else 0
    context = {
        "panel": ["openai:vp1", "openai:vp2", "openai:vp3"],
        "judge": {"provider": "openai", "model": "vjudge", "structured_output": method},
        "synthesizer": "openai:vp3",
        "tool_mode": "off",
        "aggregation": "verify",
    }
    result = await build_graph().ainvoke(
        {"messages": [HumanMessage(content=TASK)]}, context=context
    )
    final = result["messages"][-1]
    checked = final.response_metadata["fusion"]["aggregation"]["verify"]
    assert final.content == RIGHT and checked["winner"] == "p3"
    assert checked["judge"]["ok"] and checked["judge"]["usage"]["total_tokens"] > 0
    asked = [r for r in scripted.records_since(since) if r.model == "vjudge"]
    assert len(asked) == 1  # one call: tests, no analysis
    options = asked[0].options
    if sent == "json_schema":
        fmt = options["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "JudgeTests"
        assert "tests" in fmt["json_schema"]["schema"]["properties"]
    elif sent == "json_object":
        fmt = options["response_format"]
        assert fmt["type"] == "json_object" and "entry_point" in fmt["schema"]["properties"]
    elif sent == "tools":
        assert options["tools"][0]["function"]["name"] == "JudgeTests"
    else:
        assert "response_format" not in options and "tools" not in options
