"""The Tavily provider against a local stand-in speaking Tavily's search API (tavily-python 0.8).

tavily-python POSTs JSON to {api_base_url}/search with `Authorization: Bearer <key>` and reads
`results: [{title, url, content, score}]`; 401/403/429/400 and other errors raise exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fusiongraph.tools.search import SearchError, SearchResult, get_search_provider
from fusiongraph.tools.settings import FetchSettings, SearchSettings
from fusiongraph.tools.untrusted import CLOSE_MARKER
from fusiongraph.tools.web import make_web_tools, prefetch_context
from tests.support.http_fixtures import LocalHTTPServer, Recorded, Reply, json_reply

pytestmark = pytest.mark.integration
KEY_ENV = "FUSIONGRAPH_TEST_TAVILY_KEY"
KEY = "tvly-test-0123456789"
PAGE = """<html><head><title>Local page {n}</title></head><body><article>
<h1>Heading {n}</h1><p>This locally served page number {n} explains the tides in enough words
for the extractor to keep it: the Moon pulls the oceans and the Earth turns beneath them.</p>
</article></body></html>"""


def tavily_answer(rec: Recorded, base: str) -> Reply:
    body = rec.json()
    n = int(body.get("max_results") or 5)
    results = [
        {
            "title": f"Result {i}",
            "url": f"{base}/page/{i}",
            "content": f"Snippet {i} about {body['query']}",
            "score": 0.9 - i / 10,
            "raw_content": None,
        }
        for i in range(1, min(n, 3) + 1)
    ]
    return json_reply(
        {
            "query": body["query"],
            "follow_up_questions": None,
            "answer": None,
            "images": [],
            "results": results,
            "response_time": 0.01,
            "request_id": "stand-in",
        }
    )


@pytest.fixture
def tavily() -> Iterator[LocalHTTPServer]:
    srv = LocalHTTPServer()
    srv.routes["/search"] = lambda rec: tavily_answer(rec, srv.url("").rstrip("/"))
    for i in range(1, 4):
        srv.routes[f"/page/{i}"] = lambda rec, i=i: (
            200,
            {"Content-Type": "text/html"},
            PAGE.format(n=i).encode(),
        )
    with srv:
        yield srv


@pytest.fixture
def settings(tavily: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch) -> SearchSettings:
    monkeypatch.setenv(KEY_ENV, KEY)
    return SearchSettings(
        provider="auto",
        tavily_api_key_env=KEY_ENV,
        tavily_api_base_url=tavily.url("").rstrip("/"),
        max_results=3,
        timeout_s=5,
    )


async def test_results_and_request(tavily: LocalHTTPServer, settings: SearchSettings) -> None:
    provider = get_search_provider(settings)
    assert provider.name == "tavily"  # auto + key set
    results = await provider.search("why are there tides", 2)
    base = tavily.url("").rstrip("/")
    assert results == [
        SearchResult("Result 1", f"{base}/page/1", "Snippet 1 about why are there tides"),
        SearchResult("Result 2", f"{base}/page/2", "Snippet 2 about why are there tides"),
    ]
    rec = tavily.requests[-1]
    assert rec.method == "POST" and rec.path == "/search"
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    assert rec.json()["query"] == "why are there tides"
    assert rec.json()["max_results"] == 2


@pytest.mark.parametrize(
    ("status", "payload", "expected"),
    [
        (401, {"detail": {"error": "Unauthorized: missing or invalid API key."}}, "invalid API"),
        (429, {"detail": {"error": "Usage limit exceeded"}}, "Usage limit"),
        (500, {"detail": "boom"}, "500"),
    ],
)
async def test_error_answers(
    tavily: LocalHTTPServer, settings: SearchSettings, status: int, payload: dict, expected: str
) -> None:
    tavily.routes["/search"] = lambda rec: json_reply(payload, status=status)
    with pytest.raises(SearchError, match=expected) as err:
        await get_search_provider(settings).search("q", 3)
    assert str(err.value).startswith("tavily: ")

    web_search, _ = make_web_tools(settings, FetchSettings())
    msg = await web_search.ainvoke(
        {"name": "web_search", "args": {"query": "q"}, "id": "t1", "type": "tool_call"}
    )
    assert msg.content.startswith("web_search failed: tavily: ")
    assert msg.artifact["sources"] == [] and expected in msg.artifact["error"]


async def test_missing_key(settings: SearchSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    explicit = settings.model_copy(update={"provider": "tavily"})
    with pytest.raises(SearchError, match=KEY_ENV):
        await get_search_provider(explicit).search("q", 3)


async def test_web_search_tool(tavily: LocalHTTPServer, settings: SearchSettings) -> None:
    web_search, _ = make_web_tools(settings, FetchSettings())
    msg = await web_search.ainvoke(
        {"name": "web_search", "args": {"query": "tides"}, "id": "t2", "type": "tool_call"}
    )
    assert msg.content.count(CLOSE_MARKER) == 3
    assert "Snippet 3 about tides" in msg.content
    base = tavily.url("").rstrip("/")
    assert msg.artifact == {
        "sources": [{"url": f"{base}/page/{i}", "title": f"Result {i}"} for i in (1, 2, 3)]
    }


async def test_prefetch_context_fetches_top_pages(
    tavily: LocalHTTPServer, settings: SearchSettings
) -> None:
    fetch = FetchSettings(allow_private=["127.0.0.1"])
    text, sources = await prefetch_context("tides", settings, fetch, pages=2)
    assert "locally served page number 1" in text
    assert "locally served page number 2" in text
    assert "locally served page number 3" not in text and "Snippet 3 about tides" in text
    assert text.count(CLOSE_MARKER) == 3
    assert [s["title"] for s in sources] == ["Local page 1", "Local page 2", "Result 3"]
    fetched = [r.path for r in tavily.requests if r.path.startswith("/page/")]
    assert sorted(fetched) == ["/page/1", "/page/2"]


async def test_prefetch_context_reports_fetch_errors(settings: SearchSettings) -> None:
    # Without allow_private the local pages are refused: snippets only, the reason in the text.
    text, sources = await prefetch_context("tides", settings, FetchSettings(), pages=2)
    assert "blocked_address" in text
    assert "Snippet 1 about tides" in text
    assert len(sources) == 3


async def test_prefetch_context_reports_search_errors(
    tavily: LocalHTTPServer, settings: SearchSettings
) -> None:
    tavily.routes["/search"] = lambda rec: json_reply({"detail": "down"}, status=503)
    text, sources = await prefetch_context("tides", settings, FetchSettings())
    assert text.startswith("Web search failed") and sources == []
