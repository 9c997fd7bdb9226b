"""web_fetch: read one page for a model, safely.

The URL comes from a model (and so, indirectly, from whatever it read), so this is an SSRF
surface. Every hop of a redirect chain is vetted: http(s) only, the host resolved once and refused
if any address is loopback, private, link-local, multicast, reserved or unspecified (unless
allow-listed), and the connection goes to the vetted IP itself, so a second DNS answer cannot
swap the target (DNS rebinding). Bodies are streamed and capped after decompression; the whole
fetch has one deadline.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from fusiongraph.tools.corpus import SCHEME as CORPUS_SCHEME
from fusiongraph.tools.corpus import CorpusError, read_corpus_url, strip_tags
from fusiongraph.tools.settings import FetchSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
USER_AGENT = "fusiongraph-web-fetch/0.1"
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/ld+json"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class FetchedPage:
    """A fetched page as readable text."""

    url: str
    final_url: str
    title: str
    text: str
    status_code: int


class FetchError(Exception):
    """A fetch was refused or failed; `reason` is a stable machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """A vetted hop: where to connect (ip) and what to tell the server (host header, SNI)."""

    url: str  # the URL as given (for reporting and resolving relative redirects)
    scheme: str
    host: str  # hostname as written (lower case, no brackets)
    port: int
    ips: tuple[str, ...]
    path_and_query: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def request_url(self, ip: str) -> str:
        literal = f"[{ip}]" if ":" in ip else ip
        return f"{self.scheme}://{literal}:{self.port}{self.path_and_query}"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """IPv4 addresses tunnelled in IPv6 (mapped, 6to4, Teredo, NAT64) are checked as IPv4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


_IPV6_DOCUMENTATION = ipaddress.ip_network("3fff::/20")


def is_blocked_ip(ip: str | IPAddress) -> bool:
    """True for any address a fetch must not reach without an explicit allow-list entry."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address):
        # fec0::/10, site-local: deprecated by RFC 3879, never public; 3fff::/20, documentation
        # (RFC 9637). Python 3.11's ipaddress counts both as global.
        if addr.scope_id or addr.is_site_local or addr in _IPV6_DOCUMENTATION:
            return True
        inner = _embedded_ipv4(addr)
        if inner is not None:  # the tunnelled IPv4 address is the real destination
            return is_blocked_ip(inner)
    return (
        addr.is_loopback
        or addr.is_private
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
        or not addr.is_global  # shared address space (100.64/10), benchmarking, etc.
    )


def is_allowed(host: str, ip: str, allow_private: list[str]) -> bool:
    """Allow-list match: exact host name, exact IP, or CIDR network containing the IP."""
    addr = ipaddress.ip_address(ip)
    candidates = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        candidates.append(addr.ipv4_mapped)
    for entry in allow_private:
        entry = entry.strip().lower().strip("[]")
        if not entry:
            continue
        if entry == host.lower():
            return True
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if any(c.version == net.version and c in net for c in candidates):
            return True
    return False


def _split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of an http(s) URL, or FetchError bad_url."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise FetchError("bad_url", f"malformed URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise FetchError("bad_url", f"only http and https URLs can be fetched, not {url!r}")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise FetchError("bad_url", f"URL has no host: {url!r}")
    if any(ch.isspace() or ord(ch) < 32 for ch in url.strip()):
        raise FetchError("bad_url", f"URL contains whitespace or control characters: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or (443 if scheme == "https" else 80), path


async def _resolve(host: str, port: int) -> list[str]:
    """All addresses of `host` (numeric forms like 2130706433 or 0177.0.0.1 included)."""
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise FetchError("bad_url", f"invalid host name {host!r}") from exc
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(ascii_host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise FetchError("dns_error", f"cannot resolve {host!r}: {exc}") from exc
    ips: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = str(sockaddr[0])  # a zone id (fe80::1%eth0) stays: the check refuses it
        if ip and ip not in ips:
            ips.append(ip)
    if not ips:
        raise FetchError("dns_error", f"{host!r} has no addresses")
    return ips


async def vet_url(url: str, settings: FetchSettings) -> Target:
    """Parse and resolve `url`; refuse it unless every address is public or allow-listed."""
    scheme, host, port, path = _split_url(url)
    ips = await _resolve(host, port)
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError as exc:  # zone-scoped link-local and the like
            raise FetchError("blocked_address", f"{host} resolves to {ip}: refused") from exc
        if is_blocked_ip(addr) and not is_allowed(host, ip, settings.allow_private):
            raise FetchError(
                "blocked_address",
                f"{host} resolves to {ip}, a non-public address: refused "
                "(allow it with fetch.allow_private)",
            )
    return Target(url=url, scheme=scheme, host=host, port=port, ips=tuple(ips), path_and_query=path)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _charset(content_type: str) -> str | None:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    return match.group(1) if match else None


def _decode(body: bytes, content_type: str) -> str:
    charset = _charset(content_type) or "utf-8"
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def html_to_text(markup: str) -> tuple[str, str]:
    """(title, readable text) of an HTML page: trafilatura, crude tag strip if it finds nothing."""
    import trafilatura

    match = _TITLE.search(markup)
    title = " ".join(html.unescape(match.group(1)).split()) if match else ""
    try:
        text = trafilatura.extract(markup, include_comments=False, include_tables=True)
    except Exception:  # a parser failure on hostile markup must not lose the page
        text = None
    return title, (text or strip_tags(markup))


def _looks_like_html(body: bytes) -> bool:
    head = body[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


async def _send(
    client: httpx.AsyncClient,
    target: Target,
    settings: FetchSettings,
) -> tuple[httpx.Response, bytes | None]:
    """GET one hop from a vetted IP; stream the body (capped) unless the answer is a redirect."""
    headers = {
        "Host": target.host_header,
        "User-Agent": USER_AGENT,
        "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
    }
    extensions = {}
    if target.scheme == "https" and not _is_ip_literal(target.host):
        extensions["sni_hostname"] = target.host.encode("idna").decode("ascii")
    last_error: Exception | None = None
    for ip in target.ips:
        request = client.build_request(
            "GET", target.request_url(ip), headers=headers, extensions=extensions
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError as exc:  # try the host's next vetted address
            last_error = exc
            continue
        try:
            if response.status_code in REDIRECT_CODES:
                return response, None
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > settings.max_bytes:
                raise FetchError(
                    "too_large",
                    f"{target.url}: body of {declared} bytes exceeds the {settings.max_bytes} cap",
                )
            body = bytearray()
            async for piece in response.aiter_bytes():  # decompressed: caps inflation too
                body += piece
                if len(body) > settings.max_bytes:
                    raise FetchError(
                        "too_large",
                        f"{target.url}: body exceeds the {settings.max_bytes} byte cap",
                    )
            return response, bytes(body)
        finally:
            await response.aclose()
    raise FetchError("connect_error", f"cannot connect to {target.host}: {last_error}")


async def _fetch_http(url: str, settings: FetchSettings) -> FetchedPage:
    timeout = httpx.Timeout(settings.timeout_s)
    # trust_env=False: a proxy from the environment would make its own DNS lookup and bypass the
    # vetting; no keep-alive: a pooled connection must never serve a different host's request.
    async with httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        current = url
        for hop in range(settings.max_redirects + 1):
            target = await vet_url(current, settings)
            try:
                response, body = await _send(client, target, settings)
            except httpx.TimeoutException as exc:
                raise FetchError("timeout", f"{current}: timed out") from exc
            except httpx.HTTPError as exc:
                raise FetchError("connect_error", f"{current}: {exc}") from exc
            if body is None:
                location = response.headers.get("location")
                if not location:
                    raise FetchError(
                        "http_error", f"{current}: redirect {response.status_code} without Location"
                    )
                if hop == settings.max_redirects:
                    break
                current = urljoin(current, location.strip())
                continue
            if response.status_code >= 400:
                raise FetchError("http_error", f"{current}: HTTP {response.status_code}")
            return _to_page(url, current, response, body)
    raise FetchError("too_many_redirects", f"{url}: more than {settings.max_redirects} redirects")


def _to_page(url: str, final_url: str, response: httpx.Response, body: bytes) -> FetchedPage:
    content_type = response.headers.get("content-type", "")
    media = _media_type(content_type)
    text = _decode(body, content_type)
    if media in HTML_TYPES or (not media and _looks_like_html(body)):
        title, text = html_to_text(text)
    elif media.startswith("text/") or media in TEXT_TYPES or media.endswith("+json") or not media:
        title = ""
        if not media and "\x00" in text:
            raise FetchError("unsupported_content", f"{final_url}: binary content")
    else:
        raise FetchError(
            "unsupported_content", f"{final_url}: content type {media!r} is not text or HTML"
        )
    return FetchedPage(
        url=url,
        final_url=final_url,
        title=title or final_url,
        text=text.strip(),
        status_code=response.status_code,
    )


def _fetch_corpus(url: str, corpus_dir: str | Path | None) -> FetchedPage:
    try:
        title, text = read_corpus_url(url, corpus_dir)
    except CorpusError as exc:
        raise FetchError("not_found", str(exc)) from exc
    return FetchedPage(url=url, final_url=url, title=title, text=text, status_code=200)


async def fetch_page(
    url: str, settings: FetchSettings, corpus_dir: str | Path | None = None
) -> FetchedPage:
    """Fetch `url` as readable text, within settings' limits; FetchError (with .reason) if not.

    corpus:// URLs (from the corpus search provider) are read from `corpus_dir` (default: the
    bundled sample corpus) instead of the network.
    """
    url = (url or "").strip()
    if url.lower().startswith(CORPUS_SCHEME):
        return await asyncio.to_thread(_fetch_corpus, url, corpus_dir)
    try:
        return await asyncio.wait_for(_fetch_http(url, settings), timeout=settings.timeout_s)
    except TimeoutError as exc:
        raise FetchError(
            "timeout", f"{url}: no complete answer within {settings.timeout_s:g}s"
        ) from exc
