"""The local model server process: llama-cpp-python's OpenAI-compatible server, with the fixes
llama-cpp-python 0.3.36 and SmolLM2 need (see `_serve_main`).

Started by the launcher as ``python -m fusiongraph.local_model.server --config_file <cfg.json>``;
what ``python -m llama_cpp.server`` does (its app from `create_app`, on uvicorn), with its chat
requests normalized by an ASGI middleware in front. llama_cpp is imported only here, in the
server process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import psutil

from fusiongraph.local_model.processes import alive
from fusiongraph.local_model.settings import EXTRA_BUFTS_ENV, LOCAL_MODEL_ALIAS, PARENT_PID_ENV

# Request field the server wrapper adds to carry `stream_options.include_usage`.
STREAM_USAGE_FIELD = "fusiongraph_stream_usage"


def _content_text(content: Any) -> str:
    """Flatten OpenAI message content to the plain string SmolLM2's template concatenates."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'content')} omitted]")  # text-only model
        return "\n".join(parts)
    return str(content)


def normalize_chat_request(data: Any) -> Any:
    """Adapt an OpenAI chat request to what llama-cpp-python 0.3.36 + SmolLM2 can take.

    - `max_completion_tokens` becomes `max_tokens`: langchain-openai and the OpenAI SDK send only
      the new name, which this server silently ignores (generation would run until n_ctx).
    - message content becomes a string: the GGUF chat template does `'...' + message['content']`,
      so content-part lists (LangChain content blocks) and None (an assistant turn that only holds
      tool calls, rejected by the server's request schema) fail with HTTP 500.
    - an assistant turn's tool calls are written into its text, since the template drops them.
    - `stream_options.include_usage` (sent by ChatOpenAI(stream_usage=True)) is ignored by the
      server; it becomes a flag for `_serve_main`'s final usage chunk.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    if "max_completion_tokens" in data:
        value = data.pop("max_completion_tokens")
        if data.get("max_tokens") is None:
            data["max_tokens"] = value
    stream_options = data.pop("stream_options", None)
    if isinstance(stream_options, dict) and stream_options.get("include_usage"):
        data[STREAM_USAGE_FIELD] = True
    messages = data.get("messages")
    if isinstance(messages, list):
        fixed = []
        for message in messages:
            if isinstance(message, dict):
                message = dict(message)
                text = _content_text(message.get("content"))
                calls = message.get("tool_calls") or []
                if message.get("role") == "assistant" and calls and not text.strip():
                    text = "\n".join(
                        f"{call.get('function', {}).get('name', '')}"
                        f"({call.get('function', {}).get('arguments', '')})"
                        for call in calls
                        if isinstance(call, dict)
                    )
                message["content"] = text
            fixed.append(message)
        data["messages"] = fixed
    return data


def _exit_with_parent() -> None:
    """A server started for one process (not `fusiongraph local start`) ends when it does."""
    parent_pid = int(os.environ.get(PARENT_PID_ENV, "0") or 0)
    if not parent_pid:
        return
    try:
        parent = psutil.Process(parent_pid)  # remembers its start time: a recycled pid is not it
    except psutil.NoSuchProcess:
        os._exit(0)

    def watch() -> None:
        while alive(parent):
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


# Whether the request being served asked for a final usage chunk (set per request by
# `NormalizeChatRequests`; the model's thread inherits the request's context).
_STREAM_USAGE: ContextVar[bool] = ContextVar("fusiongraph_stream_usage", default=False)


class NormalizeChatRequests:
    """ASGI middleware: a chat request's JSON body goes through `normalize_chat_request` before
    llama_cpp.server reads it, and its wish for a final usage chunk is noted for the model."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].endswith("/chat/completions")
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away while sending
                await self.app(scope, _replay(message, receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            data = normalize_chat_request(json.loads(body))
        except ValueError:  # not JSON: the server answers it as it would
            data = None
        if isinstance(data, dict):
            _STREAM_USAGE.set(bool(data.pop(STREAM_USAGE_FIELD, False)))
            body = json.dumps(data).encode()
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay(message, receive), send)


def _replay(message: dict[str, Any], receive: Any) -> Any:
    """An ASGI `receive` that hands out `message` first, then the client's own (a disconnect)."""
    pending = [message]

    async def replayed() -> Any:
        return pending.pop() if pending else await receive()

    return replayed


def _keep_every_model_loaded(proxy_cls: Any) -> None:
    """Patch llama_cpp.server's LlamaProxy to load every configured model once, at startup.

    As shipped, it holds one model at a time and closes it to load the next one asked for, so a
    heterogeneous panel would reload weights on every call. Requests for a name it does not
    serve still get the default (first) model, as before. The patched proxy keeps its own
    table (through the proxy's public `load_llama_from_model_settings`), not the fields of the
    shipped one, and answers what the server asks of it: a model by name, the names, a name's
    settings, and `free`.
    """

    def __init__(self: Any, models: Any) -> None:
        if not models:
            raise ValueError("No models provided!")
        self._fg_settings = {}
        self._fg_loaded = {}
        for settings in models:
            settings.model_alias = settings.model_alias or settings.model
            self._fg_settings[settings.model_alias] = settings
        for alias, settings in self._fg_settings.items():
            self._fg_loaded[alias] = proxy_cls.load_llama_from_model_settings(settings)
        self._fg_default = models[0].model_alias

    def __call__(self: Any, model: str | None = None) -> Any:
        return self._fg_loaded.get(model, self._fg_loaded[self._fg_default])

    def __iter__(self: Any) -> Iterator[str]:
        return iter(self._fg_settings)

    def __getitem__(self: Any, model: str) -> Any:
        return self._fg_settings[model].model_dump()

    def free(self: Any) -> None:
        for llama in self._fg_loaded.values():
            llama.close()
        self._fg_loaded.clear()

    proxy_cls.__init__ = __init__
    proxy_cls.__call__ = __call__
    proxy_cls.__iter__ = __iter__
    proxy_cls.__getitem__ = __getitem__
    proxy_cls.free = free


def _serve_main(argv: list[str]) -> None:
    """Run llama_cpp.server's app with fixes for llama-cpp-python 0.3.36.

    1. llama.cpp's extra weight buffers are disabled (unless FUSIONGRAPH_LOCAL_EXTRA_BUFTS=1): on
       AMX CPUs ggml repacks Q4_1 weights for AMX and `ggml_backend_amx_mul_mat` segfaults on the
       first decode (ggml-org/llama.cpp#20824). llama_cpp.Llama exposes no switch, so the default
       model params are patched.
    2. Chat requests go through `normalize_chat_request` before validation
       (`NormalizeChatRequests`, around the app `llama_cpp.server.app.create_app` builds).
    3. Streams end with an OpenAI-style usage chunk when the client asked for one: the server
       never sends usage while streaming, so streamed calls would report no token counts.
    4. Every configured model stays loaded (`_keep_every_model_loaded`).
    """
    _exit_with_parent()
    import llama_cpp
    import llama_cpp.llama_cpp as llama_lib
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.model import LlamaProxy
    from llama_cpp.server.settings import ConfigFileSettings, ServerSettings

    parser = argparse.ArgumentParser(prog="fusiongraph.local_model.server")
    parser.add_argument("--config_file", required=True)
    config_file = parser.parse_args(argv).config_file

    if os.environ.get(EXTRA_BUFTS_ENV, "").strip() not in ("1", "true", "yes"):
        default_params = llama_lib.llama_model_default_params

        def model_params_without_extra_bufts() -> Any:
            params = default_params()
            params.use_extra_bufts = False
            return params

        llama_lib.llama_model_default_params = model_params_without_extra_bufts

    llama_cls: Any = llama_cpp.Llama
    base_generate = llama_cls.generate
    base_chat = llama_cls.create_chat_completion

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        # One request at a time holds the model (server lock), so instance counters are safe.
        self._fg_usage = [len(tokens), 0]
        vocab = llama_lib.llama_model_get_vocab(self.model)
        for token in base_generate(self, tokens, *args, **kwargs):
            # Counted like the non-streaming usage: the end-of-generation token is not output.
            if not llama_lib.llama_vocab_is_eog(vocab, token):
                self._fg_usage[1] += 1
            yield token

    def create_chat_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = base_chat(self, *args, **kwargs)
        if not (kwargs.get("stream") and _STREAM_USAGE.get()):
            return result

        def with_usage() -> Iterator[dict[str, Any]]:
            self._fg_usage = [0, 0]
            last: dict[str, Any] = {}
            for chunk in result:
                last = chunk
                yield chunk
            prompt, completion = self._fg_usage
            yield {
                "id": last.get("id", ""),
                "object": "chat.completion.chunk",
                "created": last.get("created", int(time.time())),
                "model": last.get("model", LOCAL_MODEL_ALIAS),
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }

        return with_usage()

    llama_cls.generate = generate
    llama_cls.create_chat_completion = create_chat_completion
    _keep_every_model_loaded(LlamaProxy)

    settings = ConfigFileSettings.model_validate_json(Path(config_file).read_bytes())
    server_settings = ServerSettings.model_validate(settings)
    app = create_app(server_settings=server_settings, model_settings=settings.models)
    uvicorn.run(
        NormalizeChatRequests(app),
        host=server_settings.host,
        port=server_settings.port,
        ssl_keyfile=server_settings.ssl_keyfile,
        ssl_certfile=server_settings.ssl_certfile,
    )


if __name__ == "__main__":
    _serve_main(sys.argv[1:])
