"""Chat completion calls without the openai SDK's per-call parameter transform.

`AsyncCompletions.create` passes every request body through `async_maybe_transform`, which walks
each message against every member of the message-type union: about 0.5 ms of CPU per call (a
tenth of a run's CPU at N=8), all spent before the request leaves. For chat completions the walk
changes nothing but dropping omitted values: no request parameter type carries a field alias or
format. `tests/unit/test_models.py` checks that on the installed SDK with the payloads
langchain-openai builds, so an SDK that starts transforming fails the tests, not the requests.

It rests on private SDK modules (`openai._base_client`, `openai._types`, `openai._utils`,
`openai.lib`): pyproject bounds openai below its next major version, and should one of them move
anyway, `DirectCompletions` is None and models use the SDK's own `create` (0.5 ms slower, never
broken); `tests/unit/test_models.py` fails loudly in that case.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncStream
from openai.resources.chat.completions import AsyncCompletions
from openai.types.chat import ChatCompletion

try:
    from openai._base_client import make_request_options
    from openai._types import NotGiven, not_given
    from openai._utils import is_given
    from openai.lib._chat_completion_resources import validate_response_format
except ImportError:  # the SDK moved its private API: fall back to its public `create`
    PRIVATE_API = False
else:
    PRIVATE_API = True


class _DirectCompletions(AsyncCompletions):
    """`client.chat.completions` that sends the request body as given (same endpoint, options,
    auth, retries and response parsing as the SDK's own `create`)."""

    async def create(  # type: ignore[override]
        self,
        *,
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, object] | None = None,
        extra_body: dict[str, object] | None = None,
        timeout: float | NotGiven | Any = not_given,  # or the SDK's own Timeout type
        **params: Any,
    ) -> ChatCompletion | AsyncStream[object]:
        body = {key: value for key, value in params.items() if is_given(value)}
        if "messages" not in body or "model" not in body:
            raise TypeError("a chat completion needs `messages` and `model`")
        validate_response_format(body.get("response_format", not_given))
        return await self._post(
            "/chat/completions",
            body=body,
            options=make_request_options(
                extra_headers=extra_headers,
                extra_query=extra_query,
                extra_body=extra_body,
                timeout=timeout,
                security={"bearer_auth": True},
            ),
            cast_to=ChatCompletion,
            stream=bool(body.get("stream")),
            # Chunks stay the JSON dicts they arrive as: langchain-openai takes a dict chunk as
            # is and would `model_dump()` a typed one straight back into the same dict.
            stream_cls=AsyncStream[object],
        )


DirectCompletions: type[AsyncCompletions] | None = _DirectCompletions if PRIVATE_API else None
