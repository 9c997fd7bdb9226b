"""Provider selection, the common timeout/error frame, and DuckDuckGo's mapping (ddgs faked)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from fusiongraph.tools import search as search_mod
from fusiongraph.tools.search import (
    CorpusSearchProvider,
    DisabledSearchProvider,
    DuckDuckGoSearchProvider,
    SearchError,
    SearchProvider,
    SearchResult,
    SearxNGSearchProvider,
    TavilySearchProvider,
    get_search_provider,
    searxng_search_url,
)
from fusiongraph.tools.settings import FetchSettings, SearchSettings
from fusiongraph.tools.web import make_web_tools, prefetch_context


@pytest.fixture(autouse=True)
def _no_tavily_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)


def test_auto_without_key_is_duckduckgo() -> None:
    assert isinstance(get_search_provider(SearchSettings()), DuckDuckGoSearchProvider)


def test_auto_with_key_is_tavily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_TAVILY", "tvly-123")
    provider = get_search_provider(SearchSettings(tavily_api_key_env="MY_TAVILY"))
    assert isinstance(provider, TavilySearchProvider)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("tavily", TavilySearchProvider),
        ("duckduckgo", DuckDuckGoSearchProvider),
        ("searxng", SearxNGSearchProvider),
        ("corpus", CorpusSearchProvider),
        ("none", DisabledSearchProvider),
    ],
)
def test_explicit_provider(name: str, cls: type[SearchProvider]) -> None:
    assert type(get_search_provider(SearchSettings(provider=name))) is cls


async def test_tavily_without_key_is_a_clear_error() -> None:
    provider = get_search_provider(SearchSettings(provider="tavily"))
    with pytest.raises(SearchError, match="TAVILY_API_KEY"):
        await provider.search("anything", 3)


async def test_none_returns_nothing_and_tools_say_disabled() -> None:
    settings = SearchSettings(provider="none")
    assert await get_search_provider(settings).search("q", 3) == []
    web_search, _ = make_web_tools(settings, FetchSettings())
    assert "disabled" in await web_search.ainvoke({"query": "q"})
    msg = await web_search.ainvoke(
        {"name": "web_search", "args": {"query": "q"}, "id": "1", "type": "tool_call"}
    )
    assert msg.artifact["sources"] == [] and "disabled" in msg.artifact["error"]
    context, sources = await prefetch_context("q", settings, FetchSettings())
    assert "disabled" in context and sources == []


def test_searxng_url_normalised() -> None:
    assert searxng_search_url("http://h:8888") == "http://h:8888/search"
    assert searxng_search_url("http://h:8888/") == "http://h:8888/search"
    assert searxng_search_url("http://h/searx/search") == "http://h/searx/search"


class _SlowProvider(SearchProvider):
    name = "slow"

    async def _search(self, query: str, max_results: int) -> list[SearchResult]:
        await asyncio.sleep(5)
        return []


class _BrokenProvider(SearchProvider):
    name = "broken"

    async def _search(self, query: str, max_results: int) -> list[SearchResult]:
        raise RuntimeError("upstream exploded")


async def test_timeout_bounds_every_provider() -> None:
    provider = _SlowProvider(SearchSettings(timeout_s=0.2))
    with pytest.raises(SearchError, match=r"slow: no answer within 0\.2s"):
        await provider.search("q", 3)


async def test_errors_are_normalised() -> None:
    with pytest.raises(SearchError, match="broken: upstream exploded"):
        await _BrokenProvider(SearchSettings()).search("q", 3)


async def test_empty_query_refused() -> None:
    with pytest.raises(SearchError, match="empty"):
        await DisabledSearchProvider(SearchSettings()).search("   ", 3)


class _FakeDDGS:
    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    rows: ClassVar[list[dict[str, str]]] = []
    error: ClassVar[Exception | None] = None

    def __init__(self, timeout: int | None = 5, **_: Any) -> None:
        self.timeout = timeout

    def text(self, query: str, **kwargs: Any) -> list[dict[str, str]]:
        _FakeDDGS.calls.append((query, kwargs))
        if _FakeDDGS.error:
            raise _FakeDDGS.error
        return _FakeDDGS.rows


@pytest.fixture
def fake_ddgs(monkeypatch: pytest.MonkeyPatch) -> type[_FakeDDGS]:
    import ddgs

    _FakeDDGS.calls, _FakeDDGS.rows, _FakeDDGS.error = [], [], None
    monkeypatch.setattr(ddgs, "DDGS", _FakeDDGS)
    return _FakeDDGS


async def test_duckduckgo_maps_rows(fake_ddgs: type[_FakeDDGS]) -> None:
    fake_ddgs.rows = [
        {"title": "Tides", "href": "https://example.org/tides", "body": "Tides are..."},
        {"title": "No link", "href": "", "body": "dropped"},
        {"title": "Moon", "href": "https://example.org/moon", "body": "The Moon..."},
    ]
    provider = DuckDuckGoSearchProvider(SearchSettings(provider="duckduckgo"))
    results = await provider.search("  why   tides ", 5)
    assert results == [
        SearchResult("Tides", "https://example.org/tides", "Tides are..."),
        SearchResult("Moon", "https://example.org/moon", "The Moon..."),
    ]
    assert fake_ddgs.calls == [("why tides", {"max_results": 5})]


async def test_duckduckgo_no_results_is_empty(fake_ddgs: type[_FakeDDGS]) -> None:
    from ddgs.exceptions import DDGSException

    fake_ddgs.error = DDGSException("No results found.")
    assert await DuckDuckGoSearchProvider(SearchSettings()).search("q", 3) == []


async def test_duckduckgo_failure_is_readable_tool_error(fake_ddgs: type[_FakeDDGS]) -> None:
    from ddgs.exceptions import RatelimitException

    fake_ddgs.error = RatelimitException("202 Ratelimit")
    web_search, _ = make_web_tools(SearchSettings(provider="duckduckgo"), FetchSettings())
    msg = web_search.invoke(
        {"name": "web_search", "args": {"query": "q"}, "id": "1", "type": "tool_call"}
    )
    assert msg.content == "web_search failed: duckduckgo: 202 Ratelimit"
    assert msg.artifact == {"sources": [], "error": "duckduckgo: 202 Ratelimit"}


def test_tools_are_named_and_typed() -> None:
    tools = make_web_tools(SearchSettings(provider="none"), FetchSettings())
    assert [t.name for t in tools] == ["web_search", "web_fetch"]
    assert list(tools[0].args) == ["query"] and list(tools[1].args) == ["url"]
    assert all(t.response_format == "content_and_artifact" for t in tools)
    assert all(t.func is not None and t.coroutine is not None for t in tools)


async def test_sync_invoke_works_inside_a_running_loop() -> None:
    web_search, _ = make_web_tools(SearchSettings(provider="none"), FetchSettings())
    assert "disabled" in web_search.invoke({"query": "q"})


def test_module_exports() -> None:
    assert search_mod.SearchResult.__dataclass_params__.frozen  # type: ignore[attr-defined]
