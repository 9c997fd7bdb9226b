"""The SearxNG provider against a local stand-in of its JSON API (GET /search?format=json)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fusiongraph.tools.search import SearchError, SearchResult, get_search_provider
from fusiongraph.tools.settings import FetchSettings, SearchSettings
from fusiongraph.tools.web import make_web_tools
from tests.support.http_fixtures import LocalHTTPServer, Recorded, Reply, json_reply

pytestmark = pytest.mark.integration


def searx_answer(rec: Recorded) -> Reply:
    if rec.query.get("format") != ["json"]:
        return 403, {"Content-Type": "text/html"}, b"<h1>403 Forbidden</h1>"
    q = rec.query["q"][0]
    return json_reply(
        {
            "query": q,
            "number_of_results": 2,
            "results": [
                {
                    "url": "https://en.example.org/wiki/Tide",
                    "title": "Tide",
                    "content": f"About {q}: tides are the rise and fall of sea levels.",
                    "engine": "wikipedia",
                    "engines": ["wikipedia", "duckduckgo"],
                    "category": "general",
                    "score": 2.5,
                },
                {
                    "url": "https://example.com/moon",
                    "title": "The Moon",
                    "engines": ["bing"],
                    "category": "general",
                },
            ],
            "answers": [],
            "corrections": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": [],
        }
    )


@pytest.fixture
def searx() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer({"/search": searx_answer}) as srv:
        yield srv


@pytest.mark.parametrize("suffix", ["", "/", "/search"])
async def test_results(searx: LocalHTTPServer, suffix: str) -> None:
    settings = SearchSettings(provider="searxng", searxng_url=searx.url("").rstrip("/") + suffix)
    results = await get_search_provider(settings).search("ocean tides", 5)
    assert results == [
        SearchResult(
            "Tide",
            "https://en.example.org/wiki/Tide",
            "About ocean tides: tides are the rise and fall of sea levels.",
        ),
        SearchResult("The Moon", "https://example.com/moon", ""),
    ]
    rec = searx.requests[-1]
    assert rec.method == "GET" and rec.query["q"] == ["ocean tides"]
    assert rec.query["format"] == ["json"]


async def test_max_results(searx: LocalHTTPServer) -> None:
    settings = SearchSettings(provider="searxng", searxng_url=searx.url("/"))
    assert len(await get_search_provider(settings).search("tides", 1)) == 1


async def test_no_results(searx: LocalHTTPServer) -> None:
    searx.routes["/search"] = lambda rec: json_reply({"query": "x", "results": []})
    settings = SearchSettings(provider="searxng", searxng_url=searx.url("/"))
    assert await get_search_provider(settings).search("nothing", 3) == []


async def test_error_status(searx: LocalHTTPServer) -> None:
    searx.routes["/search"] = lambda rec: (
        403,
        {"Content-Type": "text/html"},
        b"<h1>403 Forbidden</h1>",
    )
    settings = SearchSettings(provider="searxng", searxng_url=searx.url("/"))
    with pytest.raises(SearchError, match=r"^searxng: HTTP 403 Forbidden .*json format"):
        await get_search_provider(settings).search("tides", 3)
    web_search, _ = make_web_tools(settings, FetchSettings())
    msg = await web_search.ainvoke(
        {"name": "web_search", "args": {"query": "tides"}, "id": "s1", "type": "tool_call"}
    )
    assert msg.content.startswith("web_search failed: searxng: ")
    assert msg.artifact["sources"] == []


async def test_not_json(searx: LocalHTTPServer) -> None:
    searx.routes["/search"] = lambda rec: (200, {"Content-Type": "text/html"}, b"<html></html>")
    settings = SearchSettings(provider="searxng", searxng_url=searx.url("/"))
    with pytest.raises(SearchError, match="not JSON"):
        await get_search_provider(settings).search("tides", 3)


async def test_missing_url() -> None:
    with pytest.raises(SearchError, match="searxng_url"):
        await get_search_provider(SearchSettings(provider="searxng")).search("tides", 3)
