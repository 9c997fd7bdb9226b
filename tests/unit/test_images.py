"""Images: the panelists that accept them receive them, every other model a note in their place.

Real ChatOpenAI clients of the default factory against the fake upstream (tests/support/
upstream.py), which records per request how many image parts it held and how many omitted-image
notes its text did; the server's three APIs carry images into the same runs; bad images (too
large, too many, pointing inside the network, not images at all) are refused before any call.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from fusiongraph.graph.builder import build_graph
from fusiongraph.graph.chat_model import FusionChatModel
from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.nodes import panel as panel_node
from fusiongraph.nodes import prompts
from fusiongraph.nodes.images import (
    IMAGE_OMITTED,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    accepts_images,
    without_images,
)
from fusiongraph.nodes.messages import check_conversation
from fusiongraph.nodes.panel import panel_cache_key
from fusiongraph.serve.openai_request import RequestLimits
from fusiongraph.serve.server import create_app
from tests.support.fakes import FakeFactory, ScriptedChatModel, judge_json
from tests.support.servers import running_server
from tests.support.upstream import FakeUpstream, RequestRecord, UpstreamServer

# A 1x1 PNG.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()
DATA_URL = f"data:image/png;base64,{PNG}"
QUESTION = "What animal is in this picture?"

# p1 says it reads images; gpt-4o's LangChain profile says so; p3 has no profile (unknown: a
# note); gpt-3.5-turbo's profile says it reads none; p5 says so itself although its name
# (gpt-4o-mini) has a profile that reads images.
PANEL: list[Any] = [
    {"provider": "openai", "model": "p1-0.01s", "images": True},
    "openai:gpt-4o",
    "openai:p3-0.01s",
    "openai:gpt-3.5-turbo",
    {"provider": "openai", "model": "gpt-4o-mini", "images": False},
]
SEES = {"p1-0.01s", "gpt-4o"}
CONTEXT = {
    "panel": PANEL,
    "judge": "openai:judge-0.01s",
    "synthesizer": "openai:synth-0.01s",
    "tool_mode": "off",
}


@pytest.fixture
def upstream_env(upstream: UpstreamServer, openai_env: str) -> FakeUpstream:
    """conftest's fake upstream, the default factory's clients pointed at it."""
    return upstream.app  # type: ignore[return-value]


def records_for(app: FakeUpstream, tag: str) -> list[RequestRecord]:
    return [r for r in app.records if r.tag == tag]


def assert_images_reached_only_the_seeing_panelists(app: FakeUpstream, tag: str) -> None:
    records = records_for(app, tag)
    panel = {r.model: r for r in records if r.role == "panel"}
    assert set(panel) == {"p1-0.01s", "gpt-4o", "p3-0.01s", "gpt-3.5-turbo", "gpt-4o-mini"}
    for model, record in panel.items():
        if model in SEES:
            assert (record.images, record.image_notes) == (1, 0), model
        else:
            assert (record.images, record.image_notes) == (0, 1), model
    for role in ("judge", "synthesis"):  # they work from text, with the same note
        (record,) = [r for r in records if r.role == role]
        assert record.images == 0 and record.image_notes >= 1, role


IMAGE_FORMS = {
    "openai-image_url": {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "low"}},
    "langchain-base64": {"type": "image", "base64": PNG, "mime_type": "image/png"},
    "langchain-url": {"type": "image", "url": "https://images.example.com/cat.png"},
    "langchain-v0": {
        "type": "image",
        "source_type": "base64",
        "data": PNG,
        "mime_type": "image/png",
    },
}


@pytest.mark.parametrize("form", list(IMAGE_FORMS))
async def test_images_reach_the_panelists_that_accept_them(
    upstream_env: FakeUpstream, form: str
) -> None:
    tag = f"img-{form}"
    message = HumanMessage(
        [{"type": "text", "text": f"[bench:{tag}] {QUESTION}"}, IMAGE_FORMS[form]]
    )
    out = await build_graph().ainvoke({"messages": [message]}, context=CONTEXT)
    fusion = out["messages"][-1].response_metadata["fusion"]
    assert len(fusion["panel"]) == 5 and not fusion["failed_models"]
    assert [p["images"] for p in fusion["panel"]] == [1, 1, 0, 0, 0]  # what each was sent
    assert_images_reached_only_the_seeing_panelists(upstream_env, tag)


async def test_an_image_alone_is_a_question_too(upstream_env: FakeUpstream) -> None:
    """No words: the image panelists see it, the others answer the note; none fails empty."""
    message = HumanMessage(
        [
            {"type": "image_url", "image_url": {"url": DATA_URL}},
            {"type": "text", "text": "[bench:img-alone]"},
        ]
    )
    out = await build_graph().ainvoke({"messages": [message]}, context=CONTEXT)
    assert not out["messages"][-1].response_metadata["fusion"]["failed_models"]
    assert_images_reached_only_the_seeing_panelists(upstream_env, "img-alone")


async def test_the_chat_model_passes_images_on(upstream_env: FakeUpstream) -> None:
    model = FusionChatModel(graph=build_graph(), context=CONTEXT)
    image = IMAGE_FORMS["langchain-base64"]
    reply = await model.ainvoke(
        [HumanMessage([{"type": "text", "text": f"[bench:img-chat-model] {QUESTION}"}, image])]
    )
    assert reply.text
    assert_images_reached_only_the_seeing_panelists(upstream_env, "img-chat-model")


def test_whether_a_model_accepts_images() -> None:
    """The spec's flag wins; unset, the model's profile decides; no profile: a note."""

    class Profiled(ScriptedChatModel):
        pass

    seeing = Profiled(script=None, profile={"image_inputs": True})
    blind = Profiled(script=None, profile={"image_inputs": False})
    unknown = Profiled(script=None)
    spec = ModelSpec(model="m", base_url="http://127.0.0.1:9/v1")
    assert accepts_images(spec, seeing) and not accepts_images(spec, blind)
    assert not accepts_images(spec, unknown)
    assert accepts_images(spec.model_copy(update={"images": True}), unknown)
    assert not accepts_images(spec.model_copy(update={"images": False}), seeing)


def test_the_note_keeps_the_text_and_the_other_messages() -> None:
    history = [
        SystemMessage("be brief"),
        HumanMessage([{"type": "text", "text": "Compare"}, IMAGE_FORMS["openai-image_url"]]),
        AIMessage("They differ."),
        HumanMessage("Why?"),
    ]
    noted = without_images(history)
    assert noted[1].content == f"Compare\n{IMAGE_OMITTED}"
    assert [m.content for m in noted[::2]] == ["be brief", "They differ."]
    assert noted[3] is history[3] and history[1].content[1]["type"] == "image_url"  # a copy


# ------------------------------------------------------------------------------ prefetch


async def test_prefetch_searches_the_text_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefetch panelist searches the question's words, never the image or its note; an
    image with no words is not searched at all."""
    queries: list[str] = []

    async def prefetch_context(query: str, *_: Any, **__: Any) -> tuple[str, list[Any]]:
        queries.append(query)
        return "Retrieved context: cats have whiskers.", []

    monkeypatch.setattr(panel_node, "prefetch_context", prefetch_context)
    factory = FakeFactory(
        {"m1": ["A cat."], "judge": [judge_json(consensus=["a cat"])], "synth": ["A cat."]}
    )
    context = {
        "panel": ["openai:m1"],
        "judge": {"provider": "openai", "model": "judge", "structured_output": "prompt"},
        "synthesizer": "openai:synth",
        "tool_mode": "prefetch",
    }
    graph = build_graph(factory)
    image = IMAGE_FORMS["openai-image_url"]
    await graph.ainvoke(
        {"messages": [HumanMessage([{"type": "text", "text": QUESTION}, image])]}, context=context
    )
    assert queries == [QUESTION]
    await graph.ainvoke({"messages": [HumanMessage([image])]}, context=context)
    assert queries == [QUESTION]  # nothing searched for the image alone
    system = factory.scripts["m1"].calls[-1][0].content
    assert prompts.NOTHING_TO_SEARCH in system


# ------------------------------------------------------------------------------ the cache key


def _task(content: Any) -> dict[str, Any]:
    return {"panelist": "p1", "spec": {}, "tools": {}, "messages": [HumanMessage(content)]}


def test_the_panel_cache_key_holds_a_digest_of_each_image() -> None:
    other = base64.b64encode(b"\x89PNG\r\n\x1a\n another image").decode()

    def key(data: str) -> str:
        url = f"data:image/png;base64,{data}"
        content = [
            {"type": "text", "text": QUESTION},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return panel_cache_key(_task(content))  # type: ignore[arg-type]

    assert key(PNG) == key(PNG) and key(PNG) != key(other)
    assert PNG not in key(PNG) and key(PNG) != panel_cache_key(_task(QUESTION))  # type: ignore[arg-type]
    big = base64.b64encode(b"\0" * 300_000).decode()
    assert len(key(big)) < 1000  # a digest, not the image


# ------------------------------------------------------------------------------ refused


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


TOO_LARGE = "data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8)
REFUSED = {
    "too-large": (HumanMessage([_image(TOO_LARGE)]), "over the limit of"),
    "not-an-image": (HumanMessage([_image("data:text/html;base64,PGI+")]), "data:image/"),
    "bad-base64": (HumanMessage([_image("data:image/png;base64,%%%")]), "not valid base64"),
    "file-scheme": (HumanMessage([_image("file:///etc/passwd")]), "http(s) URL"),
    "metadata-address": (HumanMessage([_image("http://169.254.169.254/latest/")]), "non-public"),
    "loopback-spelling": (HumanMessage([_image("http://2130706433/x.png")]), "non-public"),
    "localhost": (HumanMessage([_image("http://localhost:8000/x.png")]), "non-public"),
    "no-source": (HumanMessage([{"type": "image", "file_id": "file-1"}]), "names no image"),
    "audio": (
        HumanMessage([{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}]),
        "audio",
    ),
    "pdf-file": (
        HumanMessage([{"type": "file", "base64": "JVBERi0=", "mime_type": "application/pdf"}]),
        "files",
    ),
    "too-many": (HumanMessage([_image(DATA_URL)] * (MAX_IMAGES + 1)), f"limit of {MAX_IMAGES}"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_images_and_other_media_are_refused(case: str) -> None:
    message, says = REFUSED[case]
    with pytest.raises(FusionError) as err:
        check_conversation([message])
    assert err.value.reason == "invalid_input" and says in err.value.message


def test_images_belong_to_user_messages() -> None:
    with pytest.raises(FusionError, match="user messages only"):
        check_conversation(
            [HumanMessage("a"), AIMessage([_image(DATA_URL)]), ToolMessage("x", tool_call_id="t")]
        )
    check_conversation([HumanMessage([_image(DATA_URL)] * MAX_IMAGES)])  # the limit itself


async def test_a_refused_image_calls_no_model(upstream_env: FakeUpstream) -> None:
    message = HumanMessage([{"type": "text", "text": "[bench:img-refused] hi"}, _image(TOO_LARGE)])
    with pytest.raises(FusionError) as err:
        await build_graph().ainvoke({"messages": [message]}, context=CONTEXT)
    assert err.value.reason == "invalid_input"
    assert not records_for(upstream_env, "img-refused")


# ------------------------------------------------------------------------------ the server

SERVER_MODEL = "fusion-images"


@pytest.fixture
def server(upstream_env: FakeUpstream) -> Iterator[str]:
    limits = RequestLimits(max_body_bytes=8 * 1024 * 1024)
    app = create_app(build_graph(), api_keys=[], aliases={SERVER_MODEL: CONTEXT}, limits=limits)
    with running_server(app) as url:
        yield url


def _chat(url: str, content: Any) -> httpx.Response:
    body = {"model": SERVER_MODEL, "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_chat_completions_carries_images_to_the_panel(
    server: str, upstream_env: FakeUpstream
) -> None:
    with openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(
            model=SERVER_MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"[bench:img-chat] {QUESTION}"},
                        {"type": "image_url", "image_url": {"url": DATA_URL}},
                    ],
                }
            ],
        )
    assert reply.choices[0].message.content
    assert_images_reached_only_the_seeing_panelists(upstream_env, "img-chat")


def test_anthropic_and_responses_images_reach_the_same_panelists(
    server: str, upstream_env: FakeUpstream
) -> None:
    with anthropic.Anthropic(base_url=server, api_key="x", max_retries=0) as client:
        message = client.messages.create(
            model=SERVER_MODEL,
            max_tokens=256,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "text", "text": f"[bench:img-anthropic] {QUESTION}"},
                    ],
                }
            ],
        )
    assert message.content[0].text  # type: ignore[union-attr]
    assert_images_reached_only_the_seeing_panelists(upstream_env, "img-anthropic")
    with openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0) as client:
        response = client.responses.create(
            model=SERVER_MODEL,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": f"[bench:img-responses] {QUESTION}"},
                        {"type": "input_image", "image_url": DATA_URL, "detail": "auto"},
                    ],
                }
            ],
        )
    assert response.output_text
    assert_images_reached_only_the_seeing_panelists(upstream_env, "img-responses")


@pytest.mark.parametrize(
    ("part", "code", "says"),
    [
        (_image(TOO_LARGE), "invalid_image", "over the limit of"),
        (_image("http://10.0.0.5/secret.png"), "invalid_image", "non-public"),
        (
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            "unsupported_content",
            "audio",
        ),
        ({"type": "file", "file": {"file_data": "JVBERi0="}}, "unsupported_content", "files"),
    ],
    ids=["oversized-image", "private-image-url", "audio", "pdf"],
)
def test_the_server_refuses_bad_parts_with_a_400_naming_them(
    server: str, upstream_env: FakeUpstream, part: dict[str, Any], code: str, says: str
) -> None:
    before = len(upstream_env.records)
    response = _chat(server, [{"type": "text", "text": "hi"}, part])
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[1]" and error["code"] == code
    assert says in error["message"]
    assert len(upstream_env.records) == before  # nothing was called


def test_too_many_images_and_images_outside_user_messages_are_400s(server: str) -> None:
    response = _chat(server, [_image(DATA_URL)] * (MAX_IMAGES + 1))
    assert response.status_code == 400 and response.json()["error"]["code"] == "limit_exceeded"
    body = {
        "model": SERVER_MODEL,
        "messages": [
            {"role": "system", "content": [_image(DATA_URL)]},
            {"role": "user", "content": "hi"},
        ],
    }
    response = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content[0]"
    assert "user messages only" in response.json()["error"]["message"]
