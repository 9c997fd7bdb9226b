"""The playground's server side: its settings follow the graph's context schema, its API takes
the server's key, and eval report files are served only from inside their folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.config import FusionContext
from fusiongraph.serve import playground
from fusiongraph.serve.openai_errors import OpenAIError
from fusiongraph.serve.playground import conversation_of, eval_file, list_evals
from fusiongraph.serve.server import create_app
from tests.support.fakes import FakeFactory
from tests.support.server_app import ALIAS, ANSWER, MODEL, scripts
from tests.support.servers import bind, running_server


class ExtendedContext(FusionContext):
    """An extension's own setting: the page must offer it without any change to serve/."""

    house_style: str | None = Field(default=None, description="an extension's setting")


@pytest.fixture
def evals(tmp_path: Path) -> Path:
    root = tmp_path / "fusion-evals"
    (root / "math-20261201-120000").mkdir(parents=True)
    (root / "math-20261201-120000" / "report.html").write_text("<h1>math</h1>")
    (root / "math-20261201-120000" / "summary.json").write_text('{"items": 4}')
    (root / "empty-20261201-130000").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (root / "math-20261201-120000" / "escape.html").symlink_to(tmp_path / "secret.txt")
    return root


def test_info_lists_the_graphs_own_settings_and_needs_the_key(evals: Path) -> None:
    graph = build_graph(FakeFactory(scripts()), context_schema=ExtendedContext)
    app = create_app(graph, api_keys=["k1"], aliases={MODEL: ALIAS}, evals_dir=str(evals))
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
        assert "script-src 'self'" in client.get("/").headers["content-security-policy"]
        assert client.get("/playground/api/info").status_code == 401
        info = client.get("/playground/api/info", headers={"Authorization": "Bearer k1"}).json()
    assert set(info["settings_schema"]["properties"]) == set(ExtendedContext.model_fields)
    assert "house_style" in info["settings_schema"]["properties"]
    assert info["presets"]["local"]["panel"] and info["auth_required"] is True
    assert info["durable"] is False and info["evals_dir"] == str(evals.resolve())


def test_eval_files_stay_inside_their_folder(evals: Path) -> None:
    root = evals.resolve()
    assert eval_file(root, "math-20261201-120000", "report.html").read_text() == "<h1>math</h1>"
    for name, file in [
        ("math-20261201-120000", "../../secret.txt"),
        ("math-20261201-120000", "/etc/passwd"),
        ("math-20261201-120000", "escape.html"),  # a symlink that leads outside
        ("..", "secret.txt"),
        ("math-20261201-120000/..", "secret.txt"),
        ("math-20261201-120000", "."),
        ("missing", "report.html"),
    ]:
        with pytest.raises(OpenAIError) as caught:
            eval_file(root, name, file)
        assert caught.value.status == 404


def test_eval_folders_are_listed_with_what_they_hold(evals: Path) -> None:
    listed = {f.name: f for f in list_evals(evals.resolve())}
    assert set(listed) == {"math-20261201-120000", "empty-20261201-130000"}
    assert listed["math-20261201-120000"].has_report
    assert listed["math-20261201-120000"].summary == {"items": 4}
    assert not listed["empty-20261201-130000"].has_report
    assert list_evals(evals / "absent") == []


def test_an_eval_report_takes_the_key_as_a_header_only_and_opens_in_a_sandbox(
    evals: Path,
) -> None:
    """The page keeps the key in the tab (sessionStorage): a cookie, which every tab and every
    request to the path would carry, is no way in."""
    app = create_app(build_graph(FakeFactory(scripts())), api_keys=["k1"], evals_dir=str(evals))
    url = "/playground/api/evals/math-20261201-120000/report.html"
    with TestClient(app) as client:
        assert client.get(url).status_code == 401
        client.cookies.set("fusiongraph_key", "k1")  # where earlier versions of the page kept it
        assert client.get(url).status_code == 401
        client.cookies.clear()
        response = client.get(url, headers={"Authorization": "Bearer k1"})
    assert response.status_code == 200 and response.text == "<h1>math</h1>"
    assert "set-cookie" not in response.headers
    assert response.headers["content-security-policy"].startswith("sandbox")


def test_a_thread_becomes_the_pages_turns() -> None:
    record = {"panel": [], "analysis": None}
    messages = [
        HumanMessage("first"),
        AIMessage("answer one", response_metadata={"fusion": record}),
        HumanMessage("second"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {}, "id": "c1"}]),
    ]
    assert conversation_of(messages) == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer one", "fusion": record},
        {"role": "user", "content": "second"},
    ]


def test_threads_are_listed_and_reopened_for_their_own_key_only() -> None:
    graph = build_graph(FakeFactory(scripts()), checkpointer=InMemorySaver())
    app = create_app(graph, api_keys=["k1", "k2"], aliases={MODEL: ALIAS})
    one, two = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}]}
    with TestClient(app) as client:
        assert client.get("/playground/api/info", headers=one).json()["durable"] is True
        thread_id = client.post("/v1/chat/completions", json=body, headers=one).headers[
            "X-Fusion-Thread-Id"
        ]
        mine = client.get("/playground/api/threads", headers=one).json()["data"]
        theirs = client.get("/playground/api/threads", headers=two).json()["data"]
        detail = client.get(f"/playground/api/threads/{thread_id}", headers=one).json()
        hidden = client.get(f"/playground/api/threads/{thread_id}", headers=two)
    assert [t["thread_id"] for t in mine] == [thread_id] and theirs == []
    assert mine[0]["title"] == "Capital of France?" and mine[0]["turns"] == 1
    user, answer = detail["messages"]
    assert user == {"role": "user", "content": "Capital of France?"}
    assert answer["content"] == ANSWER and len(answer["fusion"]["panel"]) == 3
    assert hidden.status_code == 404


def test_the_browser_opens_once_the_server_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(playground.webbrowser, "open", opened.append)
    sock = bind()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    waiter = playground.open_when_ready(url, timeout_s=10)
    time.sleep(0.3)
    assert opened == []  # nothing listens yet
    app = create_app(build_graph(FakeFactory(scripts())), api_keys=[])
    with running_server(app, sock):
        waiter.join(timeout=10)
    assert opened == [url]
