"""fetch_page and web_fetch against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import gzip
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fusiongraph.tools.fetch import FetchError, fetch_page
from fusiongraph.tools.settings import FetchSettings
from fusiongraph.tools.untrusted import CLOSE_MARKER, OPEN_MARKER
from fusiongraph.tools.web import make_web_tools
from tests.support.http_fixtures import (
    LocalHTTPServer,
    Recorded,
    Reply,
    html_reply,
    self_signed_localhost,
)

pytestmark = pytest.mark.integration

ARTICLE = """<!doctype html>
<html><head><title>Tides &amp; the Moon</title>
<script>var tracking = "SECRET_SCRIPT_TEXT";</script>
<style>body { color: red }</style></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<article>
<h1>Why the sea has tides</h1>
<p>Tides are the regular rise and fall of sea level caused mainly by the gravitational pull of
the Moon, and to a lesser extent the Sun, acting on the rotating Earth.</p>
<p>Most coasts see two high tides and two low tides about every 24 hours and 50 minutes, because
the Moon moves along its orbit while Earth turns.</p>
<p>Spring tides, with the largest range, happen near new and full Moon, when the Sun and Moon
line up; neap tides happen near the quarter Moons.</p>
</article>
<footer>Copyright nobody</footer>
</body></html>"""

CAP = 50_000


def _redirect(target: str, status: int = 302) -> Reply:
    return status, {"Location": target}, b""


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    srv = LocalHTTPServer()
    big = b"x" * (CAP * 3)
    bomb = gzip.compress(b"a" * (CAP * 40))

    def chain(rec: Recorded) -> Reply:
        n = int(rec.query.get("n", ["0"])[0])
        return _redirect(f"/chain?n={n - 1}") if n > 0 else html_reply(ARTICLE)

    def slow(rec: Recorded) -> Reply:
        time.sleep(3)
        return html_reply(ARTICLE)

    srv.routes.update(
        {
            "/article": lambda rec: html_reply(ARTICLE),
            "/plain": lambda rec: (200, {"Content-Type": "text/plain"}, b"just plain text\n"),
            "/image": lambda rec: (200, {"Content-Type": "image/png"}, b"\x89PNG\r\n\x1a\n"),
            "/missing": lambda rec: html_reply("<p>gone</p>", status=404),
            "/big": lambda rec: (200, {"Content-Type": "text/plain"}, big),
            # No Content-Length: the cap must trip while streaming, not from the header.
            "/big-unsized": lambda rec: (
                200,
                {"Content-Type": "text/plain", "X-No-Length": "1", "Connection": "close"},
                big,
            ),
            "/gzip-bomb": lambda rec: (
                200,
                {"Content-Type": "text/plain", "Content-Encoding": "gzip"},
                bomb,
            ),
            "/chain": chain,
            "/relative": lambda rec: _redirect("article", 301),
            "/to-other-loopback": lambda rec: _redirect(f"http://127.0.0.2:{srv.port}/article"),
            "/to-file": lambda rec: _redirect("file:///etc/passwd"),
            "/slow": slow,
        }
    )
    with srv:
        yield srv


def allowed(**kw: object) -> FetchSettings:
    return FetchSettings(allow_private=["127.0.0.1"], **kw)


async def test_html_becomes_readable_text(server: LocalHTTPServer) -> None:
    page = await fetch_page(server.url("/article"), allowed())
    assert page.status_code == 200
    assert page.title == "Tides & the Moon"
    assert "gravitational pull" in page.text
    assert "Spring tides" in page.text
    assert "SECRET_SCRIPT_TEXT" not in page.text
    assert "<p>" not in page.text
    assert page.final_url == page.url == server.url("/article")


async def test_host_header_and_user_agent_sent(server: LocalHTTPServer) -> None:
    await fetch_page(server.url("/article"), allowed())
    rec = server.requests[-1]
    assert rec.headers["Host"] == f"127.0.0.1:{server.port}"
    assert "fusiongraph" in rec.headers["User-Agent"]


async def test_hostname_connects_to_vetted_ip_with_original_host_header(
    server: LocalHTTPServer,
) -> None:
    # localhost may also resolve to ::1 (nothing listens there): the next vetted address is used.
    settings = FetchSettings(allow_private=["localhost"])
    page = await fetch_page(server.url("/plain", host="localhost"), settings)
    assert page.text == "just plain text"
    assert server.requests[-1].headers["Host"] == f"localhost:{server.port}"


async def test_plain_text_passes_through(server: LocalHTTPServer) -> None:
    page = await fetch_page(server.url("/plain"), allowed())
    assert page.text == "just plain text"


async def test_unsupported_content_type(server: LocalHTTPServer) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(server.url("/image"), allowed())
    assert err.value.reason == "unsupported_content"


async def test_http_error_status(server: LocalHTTPServer) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(server.url("/missing"), allowed())
    assert err.value.reason == "http_error"
    assert "404" in str(err.value)


@pytest.mark.parametrize("path", ["/big", "/big-unsized", "/gzip-bomb"])
async def test_size_cap(server: LocalHTTPServer, path: str) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(server.url(path), allowed(max_bytes=CAP))
    assert err.value.reason == "too_large"


async def test_gzip_body_under_cap_is_decoded(server: LocalHTTPServer) -> None:
    page = await fetch_page(server.url("/gzip-bomb"), allowed(max_bytes=CAP * 50))
    assert page.text == "a" * (CAP * 40)


async def test_redirect_limit(server: LocalHTTPServer) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(server.url("/chain?n=10"), allowed(max_redirects=5))
    assert err.value.reason == "too_many_redirects"
    assert len(server.requests) == 6  # the first request plus five followed redirects


async def test_redirects_within_limit_are_followed(server: LocalHTTPServer) -> None:
    page = await fetch_page(server.url("/chain?n=3"), allowed(max_redirects=5))
    assert page.final_url == server.url("/chain?n=0")
    assert "gravitational pull" in page.text


async def test_relative_redirect(server: LocalHTTPServer) -> None:
    page = await fetch_page(server.url("/relative"), allowed())
    assert page.final_url == server.url("/article")


async def test_redirect_to_non_allowed_private_address_is_refused(
    server: LocalHTTPServer,
) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(server.url("/to-other-loopback"), allowed())
    assert err.value.reason == "blocked_address"
    assert "127.0.0.2" in str(err.value)
    assert len(server.requests) == 1  # the refused hop was never requested


async def test_redirect_to_other_scheme_is_refused(server: LocalHTTPServer) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(server.url("/to-file"), allowed())
    assert err.value.reason == "bad_url"


async def test_loopback_refused_without_allow_list(server: LocalHTTPServer) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(server.url("/article"), FetchSettings())
    assert err.value.reason == "blocked_address"
    assert server.requests == []  # refused before connecting


async def test_cidr_allow_list(server: LocalHTTPServer) -> None:
    page = await fetch_page(server.url("/plain"), FetchSettings(allow_private=["127.0.0.0/8"]))
    assert page.text == "just plain text"


async def test_timeout(server: LocalHTTPServer) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(server.url("/slow"), allowed(timeout_s=0.5))
    assert err.value.reason == "timeout"


async def test_web_fetch_tool_success_and_failure(server: LocalHTTPServer) -> None:
    from fusiongraph.tools.settings import SearchSettings

    _, web_fetch = make_web_tools(SearchSettings(provider="none"), allowed(max_chars=200))
    msg = await web_fetch.ainvoke(
        {
            "name": "web_fetch",
            "args": {"url": server.url("/article")},
            "id": "c1",
            "type": "tool_call",
        }
    )
    assert msg.content.count(OPEN_MARKER) == 1 and msg.content.count(CLOSE_MARKER) == 1
    assert "[...truncated]" in msg.content
    assert msg.artifact == {
        "sources": [{"url": server.url("/article"), "title": "Tides & the Moon"}]
    }

    _, strict_fetch = make_web_tools(SearchSettings(provider="none"), FetchSettings())
    msg = strict_fetch.invoke(
        {
            "name": "web_fetch",
            "args": {"url": server.url("/article")},
            "id": "c2",
            "type": "tool_call",
        }
    )
    assert msg.content.startswith("web_fetch failed: blocked_address")
    assert msg.artifact["sources"] == []
    assert "blocked_address" in msg.artifact["error"]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[LocalHTTPServer, Path, list[str | None]]]:
    cert, key = self_signed_localhost(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    seen_sni: list[str | None] = []
    ctx.sni_callback = lambda sock, name, c: seen_sni.append(name)
    with LocalHTTPServer(
        {"/plain": lambda rec: (200, {"Content-Type": "text/plain"}, b"tls ok")}, ssl_context=ctx
    ) as srv:
        yield srv, cert, seen_sni


async def test_https_uses_vetted_ip_with_sni_and_hostname_check(
    tls_server: tuple[LocalHTTPServer, Path, list[str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, cert, seen_sni = tls_server
    trusting = ssl.create_default_context(cafile=str(cert))
    real_client = httpx.AsyncClient
    # Trust the throwaway CA; everything else (IP rewrite, SNI, hostname check) is the real path.
    monkeypatch.setattr(httpx, "AsyncClient", functools.partial(real_client, verify=trusting))
    settings = FetchSettings(allow_private=["localhost"])
    page = await fetch_page(srv.url("/plain", host="localhost"), settings)
    assert page.text == "tls ok"
    assert seen_sni[-1] == "localhost"  # the certificate (DNS SAN only) matched the host, not IP
    assert srv.requests[-1].headers["Host"] == f"localhost:{srv.port}"


async def test_https_with_untrusted_certificate_fails_cleanly(
    tls_server: tuple[LocalHTTPServer, Path, list[str | None]],
) -> None:
    srv, _, seen_sni = tls_server
    with pytest.raises(FetchError) as err:
        await fetch_page(
            srv.url("/plain", host="localhost"), FetchSettings(allow_private=["localhost"])
        )
    assert err.value.reason == "connect_error"
    assert "localhost" in seen_sni
    assert srv.requests == []
