"""A durable server: a retried request never pays twice (resume midway, replay when finished)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from langgraph.checkpoint.memory import InMemorySaver

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.server import THREAD_HEADER, create_app
from tests.fakes import FakeFactory, Script
from tests.unit.test_server_support import ALIAS, ANSWER, MODEL, running_server, scripts, wait_for

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]}


def durable_app(factory: FakeFactory):
    graph = build_graph(factory, checkpointer=InMemorySaver())
    return create_app(graph, api_keys=[], aliases={MODEL: ALIAS})


def panel_calls(factory: FakeFactory) -> list[int]:
    return [len(factory.scripts[f"m{i}"].calls) for i in (1, 2, 3)]


def test_a_retried_finished_request_replays_its_answer_without_new_calls() -> None:
    factory = FakeFactory(scripts())
    with running_server(durable_app(factory)) as url, httpx.Client(base_url=url) as client:
        first = client.post("/v1/chat/completions", json=BODY, headers={THREAD_HEADER: "t-1"})
        again = client.post("/v1/chat/completions", json=BODY, headers={THREAD_HEADER: "t-1"})
        streamed = client.post(
            "/v1/chat/completions", json={**BODY, "stream": True}, headers={THREAD_HEADER: "t-1"}
        )
    assert first.status_code == again.status_code == streamed.status_code == 200
    assert first.headers[THREAD_HEADER] == again.headers[THREAD_HEADER] == "t-1"
    assert again.json()["choices"][0]["message"]["content"] == ANSWER
    assert ANSWER.split()[0] in streamed.text and "[DONE]" in streamed.text
    assert panel_calls(factory) == [1, 1, 1] and len(factory.scripts["synth"].calls) == 1


def test_every_durable_response_names_its_thread() -> None:
    factory = FakeFactory(scripts())
    with running_server(durable_app(factory)) as url, httpx.Client(base_url=url) as client:
        a = client.post("/v1/chat/completions", json=BODY)
        b = client.post("/v1/chat/completions", json=BODY)
    assert a.headers[THREAD_HEADER] and a.headers[THREAD_HEADER] != b.headers[THREAD_HEADER]
    assert panel_calls(factory) == [2, 2, 2]


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_cut_off_midway_resumes_without_recalling_finished_panelists(
    stream: bool,
) -> None:
    factory = FakeFactory(scripts(m3=Script(["Panelist 3 says Paris."], delay_s=3600)))
    body = {**BODY, "stream": stream}
    with running_server(durable_app(factory)) as url:
        with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=url, timeout=1.0) as client:
            client.post("/v1/chat/completions", json=body, headers={THREAD_HEADER: "t-2"})
        assert wait_for(lambda: factory.scripts["m3"].cancelled == 1)
        assert panel_calls(factory) == [1, 1, 0]
        factory.scripts["m3"].delay_s = 0
        with httpx.Client(base_url=url) as client:
            resumed = client.post("/v1/chat/completions", json=body, headers={THREAD_HEADER: "t-2"})
    assert resumed.status_code == 200
    assert panel_calls(factory) == [1, 1, 1]
    if stream:
        assert ANSWER.split()[0] in resumed.text and "[DONE]" in resumed.text
        return
    assert resumed.json()["choices"][0]["message"]["content"] == ANSWER
    assert len(resumed.json()["fusion"]["panel"]) == 3


def test_checkpointer_url_opens_a_durable_graph_at_startup(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    app = create_app(api_keys=[], checkpointer_url=f"sqlite:///{db}")
    with TestClient(app) as client:
        assert client.get("/v1/models").status_code == 200
    assert db.exists()
