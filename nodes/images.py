"""Images in the caller's conversation: which are accepted, who is sent them, who gets a note.

Accepted in user messages: OpenAI's `image_url` parts and LangChain's standard image blocks
(`{"type": "image", "url" | "base64" + "mime_type"}`, and the older `source_type` form), each an
http(s) URL or a base64 `data:image/...` URL. A panelist is sent them when its spec says
`images: true`, or, unset, when its model's profile (langchain-core model profiles:
`image_inputs`) says it reads images; every other model, and the judge, the synthesizer and
auto's classifier (which work from text), get a short note in place of each image, so no model
answers as if nothing had been shown. Audio, video and files are refused, naming the message.

Bounds, checked before any call: at most MAX_IMAGES images in a conversation, each data URL at
most MAX_IMAGE_BYTES decoded (a request's body limit bounds the server's anyway). A URL naming a
loopback, private or link-local address (or `localhost`) is refused: a panelist's endpoint would
fetch it, and a self-hosted one would fetch it inside the operator's network.
"""

from __future__ import annotations

import binascii
import hashlib
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AnyMessage, BaseMessage, HumanMessage

from fusiongraph.graph.errors import FusionError
from fusiongraph.graph.specs import ModelSpec
from fusiongraph.tools.fetch import is_blocked_ip

IMAGE_OMITTED = "[an image was omitted: this model does not accept images]"
MAX_IMAGES = 16
MAX_IMAGE_BYTES = 5 * 1024 * 1024  # decoded; Anthropic's per-image limit, under OpenAI's 20 MB
# What an image costs a model in prompt characters, for the budget's worst case (about 1,600
# tokens, the most a large image costs on OpenAI's and Anthropic's tables).
IMAGE_PROMPT_CHARS = 6400
IMAGE_KINDS = frozenset({"image_url", "image"})
# Blocks that carry media no model here is given: refused, never dropped silently.
REFUSED_KINDS = frozenset(
    {"input_image", "audio", "input_audio", "video", "file", "input_file", "document"}
)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


def block_kind(block: Any) -> str | None:
    return block.get("type") if isinstance(block, dict) else None


def is_image(block: Any) -> bool:
    return block_kind(block) in IMAGE_KINDS


def image_source(block: dict[str, Any]) -> str | None:
    """The image as one URL (http(s) or a data URL), or None when the block names none."""
    if block.get("type") == "image_url":
        inner = block.get("image_url")
        url = inner.get("url") if isinstance(inner, dict) else inner
        return url if isinstance(url, str) else None
    url = block.get("url")
    if isinstance(url, str):
        return url
    data = block.get("base64") if "base64" in block else block.get("data")
    if isinstance(data, str) and block.get("source_type", "base64") == "base64":
        return f"data:{block.get('mime_type') or 'image/png'};base64,{data}"
    return None


def check_image(block: dict[str, Any], where: str) -> None:
    """Raise invalid_input naming `where` for an image no model should be sent."""
    source = image_source(block)
    if source is None:
        raise _refused(where, "names no image: give an http(s) URL or base64 data")
    try:
        source.isascii() or source.encode("utf-8")
    except UnicodeEncodeError:
        raise _refused(where, "URL is not valid Unicode (a lone surrogate)") from None
    if source.startswith("data:"):
        _check_data_url(source, where)
    else:
        _check_http_url(source, where)


def _refused(where: str, problem: str) -> FusionError:
    return FusionError("invalid_input", f"{where}: the image {problem}")


def _check_data_url(url: str, where: str) -> None:
    header, comma, data = url.partition(",")
    media_type = header.removeprefix("data:").split(";")[0].lower()
    if not comma or not header.endswith(";base64") or not media_type.startswith("image/"):
        raise _refused(where, "data URL must be data:image/<type>;base64,<data>")
    size = len(data) * 3 // 4
    if size > MAX_IMAGE_BYTES:
        raise _refused(
            where, f"is about {size} bytes, over the limit of {MAX_IMAGE_BYTES} bytes per image"
        )
    try:  # strict: only the base64 alphabet, correct padding (about 20 ms for 5 MB)
        binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _refused(where, "data is not valid base64") from None


def _check_http_url(url: str, where: str) -> None:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        raise _refused(where, f"URL {url[:100]!r} is malformed") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise _refused(where, "URL must be an http(s) URL with a host, or a data: URL")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise _refused(where, "URL holds whitespace or control characters")
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES) or _is_private_literal(host):
        raise _refused(
            where, f"URL names a non-public host ({host}); a model's endpoint would fetch it"
        )


def _is_private_literal(host: str) -> bool:
    """An IP literal (any spelling: 127.1, 2130706433, 0x7f.0.0.1, [::1]) that is not public."""
    try:
        return is_blocked_ip(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return is_blocked_ip(ipaddress.ip_address(socket.inet_aton(host)))
    except OSError:
        return False


def check_images(messages: Sequence[BaseMessage]) -> None:
    """Each image well-formed and bounded, in user messages only, at most MAX_IMAGES."""
    count = 0
    for index, message in enumerate(messages):
        blocks = message.content if isinstance(message.content, list) else []
        for j, block in enumerate(blocks):
            kind = block_kind(block)
            where = f"message {index}, block {j}"
            if kind in REFUSED_KINDS:
                hint = " (send it as an image_url part)" if kind == "input_image" else ""
                raise FusionError(
                    "invalid_input",
                    f"{where} is a {kind!r} block: audio, video and files are not supported, "
                    f"only text and images{hint}",
                )
            if kind not in IMAGE_KINDS or not isinstance(block, dict):
                continue
            if not isinstance(message, HumanMessage):
                raise FusionError(
                    "invalid_input", f"{where}: images are accepted in user messages only"
                )
            check_image(block, where)
            count += 1
    if count > MAX_IMAGES:
        raise FusionError(
            "invalid_input",
            f"the conversation holds {count} images, over the limit of {MAX_IMAGES}",
        )


def count_images(messages: Sequence[BaseMessage]) -> int:
    return sum(
        1 for m in messages if isinstance(m.content, list) for block in m.content if is_image(block)
    )


def accepts_images(spec: ModelSpec, model: BaseChatModel | None = None) -> bool:
    """The spec's `images` flag; unset, the model's profile (`image_inputs`); else False."""
    if spec.images is not None:
        return spec.images
    profile = getattr(model, "profile", None) or {}
    return profile.get("image_inputs") is True


def without_images(messages: Sequence[AnyMessage], note: str = IMAGE_OMITTED) -> list[AnyMessage]:
    """The conversation with a text note in place of each image (a message left with only text
    becomes a plain string: the one content shape every endpoint and chat template takes)."""
    out: list[AnyMessage] = []
    for message in messages:
        blocks = message.content if isinstance(message.content, list) else None
        if not blocks or not any(is_image(b) for b in blocks):
            out.append(message)
            continue
        texts = []
        for block in blocks:
            if is_image(block):
                texts.append(note)
            elif isinstance(block, str):
                texts.append(block)
            elif block_kind(block) == "text":
                texts.append(str(block.get("text", "")))
        out.append(message.model_copy(update={"content": "\n".join(texts)}))
    return out


def content_key(content: Any) -> Any:
    """Message content for a cache key: each image's URL or data as a SHA-256 digest (the same
    image, the same key; a megabyte of base64 never becomes part of a key)."""
    if not isinstance(content, list):
        return content
    out: list[Any] = []
    for block in content:
        if is_image(block):
            source = image_source(block) or ""
            digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
            detail = (block.get("image_url") or {}) if block.get("type") == "image_url" else {}
            out.append({"type": "image", "sha256": digest, "detail": _detail(detail)})
        else:
            out.append(block)
    return out


def _detail(inner: Any) -> Any:
    return inner.get("detail") if isinstance(inner, dict) else None


def prompt_chars(messages: Sequence[BaseMessage]) -> int:
    """The conversation's size in characters for the budget: text as sent, each image as
    IMAGE_PROMPT_CHARS (its base64 is not what a model is billed for)."""
    total = 0
    for message in messages:
        if isinstance(message.content, list):
            for block in message.content:
                if is_image(block):
                    total += IMAGE_PROMPT_CHARS
                else:
                    total += len(str(block))
        else:
            total += len(str(message.content))
    return total
