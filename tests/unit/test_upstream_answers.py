"""The bench's item 5 needs a panel that agrees or disagrees: the fake upstream makes one."""

from __future__ import annotations

import openai

from fusiongraph.graph.answers import answers_agree
from tests.support.upstream import UpstreamServer


def _answers(upstream: UpstreamServer, models: list[str], tag: str) -> list[str]:
    client = openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0)
    messages = [{"role": "user", "content": f"[bench:{tag}] How hot does water boil up high?"}]
    return [
        client.chat.completions.create(model=m, messages=messages).choices[0].message.content or ""
        for m in models
    ]


def test_a_panel_agrees_or_disagrees_by_its_model_names(upstream: UpstreamServer) -> None:
    agree = _answers(upstream, ["s1-ans42-0.050s", "s2-ans42-0.010s"], "agree")
    assert all(text.endswith("Answer: 42.") for text in agree)
    assert agree[0] != agree[1]  # different texts, the same final answer
    assert answers_agree(agree) == "42"
    disagree = _answers(upstream, ["s1-ans41-0.010s", "s2-ans42-0.010s"], "disagree")
    assert answers_agree(disagree) is None
    slow = next(r for r in upstream.app.records if r.model == "s1-ans42-0.050s")
    assert slow.duration is not None and slow.duration >= 0.045  # the latency still applies
