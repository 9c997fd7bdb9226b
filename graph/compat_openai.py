"""Chat completion calls without the openai SDK's per-call parameter transform or typed replies.

`AsyncCompletions.create` passes every request body through `async_maybe_transform`, which walks
each message against every member of the message-type union: about 0.5 ms of CPU per call (a
tenth of a run's CPU at N=8), all spent before the request leaves. For chat completions the walk
changes nothing but dropping omitted values: no request parameter type carries a field alias or
format. `tests/unit/test_models.py` checks that on the installed SDK with the payloads
langchain-openai builds, so an SDK that starts transforming fails the tests, not the requests.
Replies and stream chunks reach langchain-openai as the JSON dicts they arrived as (`_AsJSON`):
it takes those as they are, and turned the SDK's typed models straight back into them.

It rests on private SDK modules (`openai._base_client`, `openai._types`, `openai._utils`,
`openai.lib`): pyproject bounds openai below its next major version, and should one of them move
anyway, `DirectCompletions` is None and models use the SDK's own `create` (0.5 ms slower, never
broken); `tests/unit/test_models.py` fails loudly in that case.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

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

try:  # what langchain-openai raises for a stalled stream, so callers see one error either way
    from langchain_openai.chat_models._client_utils import StreamChunkTimeoutError
except ImportError:  # pragma: no cover - the module moved

    class StreamChunkTimeoutError(TimeoutError):  # type: ignore[no-redef]
        def __init__(self, timeout_s: float, *, model_name: str | None = None, **_: Any):
            super().__init__(f"No streaming chunk received for {timeout_s:.1f}s ({model_name})")


class _AsJSON(BaseModel):
    """The response (or stream chunk) as the JSON dict it arrived as.

    langchain-openai takes a dict as is and would `model_dump()` a typed ChatCompletion straight
    back into the same dict; building the typed one first (`construct_type`, recursive) cost
    about 0.5 ms per answer and 20 us per chunk. The SDK hands the data of a cast type with a
    `build` classmethod to it untouched; as an SDK model it is still read as JSON when an
    endpoint mislabels its content type, as `ChatCompletion` would be.
    """

    @classmethod
    def build(cls, *, response: Any, data: object) -> Any:
        return data


class StallGuard:
    """A streamed reply that fails when no chunk arrives for `timeout_s` (keep-alive comments
    do not count: the SDK's parser drops them), like langchain-openai's `stream_chunk_timeout`.

    That one wraps every chunk in `asyncio.wait_for`, a new task per chunk on Python 3.11: with
    LangGraph's own wait per streamed item, a token cost 0.25 ms of CPU. This arms one
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

    async def create(  # type: ignore[override]
        self,
        *,
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, object] | None = None,
        extra_body: dict[str, object] | None = None,
        timeout: float | NotGiven | Any = not_given,  # or the SDK's own Timeout type
        **params: Any,
    ) -> dict[str, Any] | AsyncStream[dict[str, Any]]:
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
            return StallGuard(reply, self.stall_timeout_s, str(body["model"]))  # type: ignore[return-value]
        return reply


DirectCompletions: type[AsyncCompletions] | None = _DirectCompletions if PRIVATE_API else None
