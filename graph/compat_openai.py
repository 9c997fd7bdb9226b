"""Compatibility module: chat completions on private modules of the openai SDK, and its fallback.

Only this module reaches into the SDK's private API (`openai._base_client`, `openai._types`,
`openai._utils`, `openai.lib`, the response-builder hook `_AsJSON` uses, ChatOpenAI's
`async_client` and `_uses_gateway`); `tests/unit/test_private_apis.py` holds every other module
of the project to public imports.

Why: `AsyncCompletions.create` passes every request body through `async_maybe_transform`, which
walks each message against every member of the message-type union, all before the request
leaves; for chat completions the walk changes nothing but dropping omitted values (no request
parameter type carries a field alias or format). `tests/unit/test_models.py` checks that on the
installed SDK with the payloads langchain-openai builds, so an SDK that starts transforming fails
the tests, not the requests. Replies and stream chunks reach langchain-openai as the JSON dicts
they arrived as (`_AsJSON`): it takes those as they are, and turned the SDK's typed models
straight back into them. Streams keep their stall timeout without a task per chunk
(`StallGuard`). bench/RESULTS.md has what each of these saves per run.

The fallback is the public path: a model keeps the SDK's own `create` and langchain-openai's own
stall timeout. It is taken when one of the private names moved (a new SDK release) and whenever
FUSIONGRAPH_PUBLIC_APIS_ONLY=1, which CI sets for one run of the core unit tests
(`tests/unit/test_private_apis.py`), so the fallback is known to work.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from langchain_openai import StreamChunkTimeoutError
from openai import AsyncStream, BaseModel
from openai.resources.chat.completions import AsyncCompletions

try:
    from openai._base_client import make_request_options
    from openai._types import NotGiven, not_given
    from openai._utils import is_given
    from openai.lib._chat_completion_resources import validate_response_format
except ImportError:  # the SDK moved its private API: fall back to its public `create`
    PRIVATE_API = False
else:
    PRIVATE_API = True

PUBLIC_APIS_ONLY_ENV = "FUSIONGRAPH_PUBLIC_APIS_ONLY"


def public_apis_only() -> bool:
    """Whether the environment asks for the public-API fallback of every compatibility module."""
    return os.environ.get(PUBLIC_APIS_ONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _AsJSON(BaseModel):
    """The response (or stream chunk) as the JSON dict it arrived as.

    langchain-openai takes a dict as is and would `model_dump()` a typed ChatCompletion straight
    back into the same dict; building the typed one first (`construct_type`, recursive) was CPU
    spent on every answer and every chunk for nothing. The SDK hands the data of a cast type
    with a `build` classmethod to it untouched; as an SDK model it is still read as JSON when an
    endpoint mislabels its content type, as `ChatCompletion` would be.
    """

    @classmethod
    def build(cls, *, response: Any, data: object) -> Any:
        return data


class StallGuard:
    """A streamed reply that fails when no chunk arrives for `timeout_s` (keep-alive comments
    do not count: the SDK's parser drops them), like langchain-openai's `stream_chunk_timeout`.

    That one wraps every chunk in `asyncio.wait_for`, a new task per chunk on Python 3.11: with
    LangGraph's own wait per streamed item, that was most of a token's CPU. This arms one
    `asyncio.timeout` while a chunk is awaited and disarms it when the chunk is in, so the
    consumer's own time between chunks never counts, and no task is made.
    """

    def __init__(self, stream: AsyncStream[Any], timeout_s: float, model_name: str) -> None:
        self._stream = stream
        self._timeout_s = timeout_s
        self._model_name = model_name

    async def __aenter__(self) -> StallGuard:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stream.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        chunks = self._stream.__aiter__()
        received = 0
        try:
            async with asyncio.timeout(None) as window:
                while True:
                    window.reschedule(loop.time() + self._timeout_s)
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        return
                    window.reschedule(None)
                    received += 1
                    yield chunk
        except TimeoutError as exc:
            raise StreamChunkTimeoutError(
                self._timeout_s, model_name=self._model_name, chunks_received=received
            ) from exc
        finally:
            await self._stream.close()


class _DirectCompletions(AsyncCompletions):
    """`client.chat.completions` that sends the request body as given (same endpoint, options,
    auth, retries and response parsing as the SDK's own `create`), a streamed reply under a
    `StallGuard` of `stall_timeout_s` (None: none)."""

    stall_timeout_s: float | None = None

    # The SDK's create is overloads over each parameter; this one takes the request as it is.
    async def create(  # type: ignore[override]
        self,
        *,
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, object] | None = None,
        extra_body: dict[str, object] | None = None,
        timeout: float | NotGiven | Any = not_given,  # or the SDK's own Timeout type
        **params: Any,
    ) -> dict[str, Any] | AsyncStream[dict[str, Any]] | StallGuard:
        body = {key: value for key, value in params.items() if is_given(value)}
        if "messages" not in body or "model" not in body:
            raise TypeError("a chat completion needs `messages` and `model`")
        validate_response_format(body.get("response_format", not_given))
        reply = await self._post(
            "/chat/completions",
            body=body,
            options=make_request_options(
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
                timeout=timeout,
                security={"bearer_auth": True},
            ),
            cast_to=_AsJSON,
            stream=bool(body.get("stream")),
            stream_cls=AsyncStream[_AsJSON],
        )
        if isinstance(reply, AsyncStream) and self.stall_timeout_s:
            return StallGuard(reply, self.stall_timeout_s, str(body["model"]))
        # The SDK types the reply as its cast type; _AsJSON.build hands it the JSON dict instead.
        return reply  # type: ignore[return-value]


DirectCompletions: type[_DirectCompletions] | None = _DirectCompletions if PRIVATE_API else None
"""The direct completions class, None when the SDK moved a private name it needs."""


def send_directly(model: Any) -> bool:
    """Make a ChatOpenAI send its chat completions through `DirectCompletions`, a streamed reply
    under a `StallGuard` of the model's own stall timeout (a gateway's streams come raw: those
    keep langchain-openai's). False, and the model unchanged, on the public fallback."""
    if DirectCompletions is None or public_apis_only():
        return False
    direct = DirectCompletions(model.root_async_client)
    if not getattr(model, "_uses_gateway", False):
        direct.stall_timeout_s, model.stream_chunk_timeout = model.stream_chunk_timeout, None
    model.async_client = direct
    return True
