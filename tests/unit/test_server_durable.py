"""A durable server: a retried request never pays twice (resume midway, replay when finished);
another request on a thread is a new turn or a 409, never the old answer; threads are per key."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from langgraph.checkpoint.memory import InMemorySaver

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.server import THREAD_HEADER, create_app
from tests.support.fakes import FakeFactory, Script
from tests.support.server_app import ALIAS, ANSWER, MODEL, scripts
from tests.support.servers import running_server, wait_for

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]}


def durable_app(factory: FakeFactory, api_keys: list[str] | None = None):
    graph = build_graph(factory, checkpointer=InMemorySaver())
    return create_app(graph, api_keys=api_keys or [], aliases={MODEL: ALIAS})


def numbered_answers() -> Script:
    """A synthesizer whose every answer is new: answer 1, answer 2, ..."""
    script = Script([])
    script.replies = [lambda _messages: f"answer {len(script.calls)}"]
    return script


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


def test_another_question_on_a_finished_thread_is_a_new_turn_not_the_old_answer() -> None:
    factory = FakeFactory(scripts(synth=numbered_answers()))
    app = durable_app(factory)
    other = {**BODY, "messages": [{"role": "user", "content": "Capital of Spain?"}]}
    with running_server(app) as url, httpx.Client(base_url=url) as client:
        first = client.post("/v1/chat/completions", json=BODY, headers={THREAD_HEADER: "t-3"})
        unrelated = client.post("/v1/chat/completions", json=other, headers={THREAD_HEADER: "t-3"})
        history = [
            *other["messages"],
            {"role": "assistant", "content": unrelated.json()["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And its population?"},
        ]
        follow_up = client.post(
            "/v1/chat/completions",
            json={**BODY, "messages": history},
            headers={THREAD_HEADER: "t-3"},
        )
    answers = [r.json()["choices"][0]["message"]["content"] for r in (first, unrelated, follow_up)]
    assert answers == ["answer 1", "answer 2", "answer 3"]
    assert panel_calls(factory) == [3, 3, 3]
    # The follow-up's panel saw the whole conversation, once (the thread's history was replaced
    # by what the client sent, not appended to it).
    seen = [m.content for m in factory.scripts["m1"].calls[-1] if m.type != "system"]
    assert seen == ["Capital of Spain?", "answer 2", "And its population?"]


def test_another_request_on_an_unfinished_thread_is_a_409_naming_it() -> None:
    factory = FakeFactory(scripts(m3=Script(["Panelist 3 says Paris."], delay_s=3600)))
    other = {**BODY, "messages": [{"role": "user", "content": "Capital of Spain?"}]}
    with running_server(durable_app(factory)) as url:
        with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=url, timeout=1.0) as client:
            client.post("/v1/chat/completions", json=BODY, headers={THREAD_HEADER: "t-4"})
        assert wait_for(lambda: factory.scripts["m3"].cancelled == 1)
        with httpx.Client(base_url=url) as client:
            conflict = client.post(
                "/v1/chat/completions", json=other, headers={THREAD_HEADER: "t-4"}
            )
    assert conflict.status_code == 409
    error = conflict.json()["error"]
    assert error["code"] == "thread_conflict" and "t-4" in error["message"]
    assert panel_calls(factory) == [1, 1, 0]  # nothing ran for the refused request


def test_threads_belong_to_the_api_key_that_made_them() -> None:
    factory = FakeFactory(scripts())
    app = durable_app(factory, api_keys=["key-a", "key-b"])
    with running_server(app) as url, httpx.Client(base_url=url) as client:

        def ask(key: str) -> httpx.Response:
            headers = {THREAD_HEADER: "t-5", "authorization": f"Bearer {key}"}
            return client.post("/v1/chat/completions", json=BODY, headers=headers)

        first, stolen, again = ask("key-a"), ask("key-b"), ask("key-a")
    assert first.status_code == 200 and again.status_code == 200
    assert again.json()["choices"][0]["message"]["content"] == ANSWER
    assert stolen.status_code == 404 and stolen.json()["error"]["code"] == "thread_not_found"
    assert ANSWER not in stolen.text
    assert panel_calls(factory) == [1, 1, 1]  # the replay and the refusal paid nothing
