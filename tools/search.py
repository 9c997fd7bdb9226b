"""web_search providers behind one async interface: Tavily, DuckDuckGo, SearxNG, a local corpus.

Deployments differ (a paid API, a keyless best effort, a self-hosted metasearch, offline private
documents), the panel does not care which: every provider returns `SearchResult`s, raises only
`SearchError`, and is bounded by `SearchSettings.timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fusiongraph.tools.corpus import CorpusError, load_index
from fusiongraph.tools.settings import SearchSettings


@dataclass(frozen=True)
class SearchResult:
    """One hit: where it is, what it is called, and a snippet (or, for the corpus, the passage)."""

    title: str
    url: str
    content: str


class SearchError(Exception):
    """A search could not be done (no key, provider down, timeout, bad answer)."""


class SearchProvider(ABC):
    """Common frame: timeout, error normalisation and result trimming live here, once."""

    name: str = "base"

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings

    async def search(self, query: str, max_results: int) -> list[SearchResult]:
        """Search `query`, at most `max_results` hits, within settings.timeout_s."""
        query = " ".join(query.split())
        if not query:
            raise SearchError("empty search query")
        try:
            results = await asyncio.wait_for(
                self._search(query, max_results), timeout=self.settings.timeout_s
            )
        except SearchError:
            raise
        except TimeoutError as exc:
            raise SearchError(
                f"{self.name}: no answer within {self.settings.timeout_s:g}s"
            ) from exc
        except Exception as exc:  # providers raise anything; callers handle one type
            detail = str(exc).strip() or type(exc).__name__
            raise SearchError(f"{self.name}: {detail}") from exc
        return [r for r in results if r.url][:max_results]

    @abstractmethod
    async def _search(self, query: str, max_results: int) -> list[SearchResult]: ...


class DisabledSearchProvider(SearchProvider):
    """provider="none": search is switched off; returns no results rather than failing."""

    name = "none"

    async def _search(self, query: str, max_results: int) -> list[SearchResult]:
        return []


class TavilySearchProvider(SearchProvider):
    """Tavily's search API via tavily-python's async client (api_base_url for proxies/stand-ins)."""

    name = "tavily"

    def _api_key(self) -> str:
        env = self.settings.tavily_api_key_env
        key = os.environ.get(env, "").strip()
        if not key:
            raise SearchError(
                f"tavily: no API key; set the environment variable {env} "
                "(or choose another search provider: duckduckgo, searxng, corpus, none)"
            )
        return key

    async def _search(self, query: str, max_results: int) -> list[SearchResult]:
        from tavily import AsyncTavilyClient

        client = AsyncTavilyClient(
            api_key=self._api_key(), api_base_url=self.settings.tavily_api_base_url
        )
        try:
            data = await client.search(
                query, max_results=max_results, timeout=self.settings.timeout_s
            )
        finally:
            await client.close()
        if not isinstance(data, dict):
            raise SearchError(f"tavily: unexpected answer of type {type(data).__name__}")
        return [
            SearchResult(
                title=str(item.get("title") or item.get("url") or ""),
                url=str(item.get("url") or ""),
                content=str(item.get("content") or ""),
            )
            for item in data.get("results") or []
            if isinstance(item, dict)
        ]


class DuckDuckGoSearchProvider(SearchProvider):
    """Keyless best effort through the `ddgs` package (sync, so it runs in a worker thread)."""

    name = "duckduckgo"

    def _run(self, query: str, max_results: int) -> list[dict[str, Any]]:
        from ddgs import DDGS
        from ddgs.exceptions import DDGSException, TimeoutException

        try:
            return DDGS(timeout=max(1, int(self.settings.timeout_s))).text(
                query, max_results=max_results
            )
        except TimeoutException:
            raise
        except DDGSException as exc:
            if "no results" in str(exc).lower():
                return []
            raise

    async def _search(self, query: str, max_results: int) -> list[SearchResult]:
        rows = await asyncio.to_thread(self._run, query, max_results)
        return [
            SearchResult(
                title=str(row.get("title") or row.get("href") or ""),
                url=str(row.get("href") or row.get("url") or ""),
                content=str(row.get("body") or ""),
            )
            for row in rows or []
        ]


def searxng_search_url(base: str) -> str:
    """SearxNG answers JSON at /search; accept both the instance root and the /search URL."""
    parts = urlsplit(base.strip())
    path = parts.path.rstrip("/")
    if not path.endswith("/search"):
        path += "/search"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


_JSON_HINT = "is the json format enabled under search.formats in the instance's settings.yml?"


class SearxNGSearchProvider(SearchProvider):
    """A self-hosted SearxNG instance (format=json enabled) via langchain's SearxSearchWrapper."""

    name = "searxng"

    async def _search(self, query: str, max_results: int) -> list[SearchResult]:
        if not self.settings.searxng_url:
            raise SearchError("searxng: no instance URL; set search.searxng_url")
        from langchain_community.utilities import SearxSearchWrapper

        wrapper = SearxSearchWrapper(searx_host=searxng_search_url(self.settings.searxng_url))
        try:
            rows = await wrapper.aresults(query, num_results=max_results)
        except json.JSONDecodeError as exc:
            raise SearchError(f"searxng: answer is not JSON ({_JSON_HINT})") from exc
        except ValueError as exc:
            # The wrapper packs the aiohttp response repr into its error; keep the status line.
            status = re.search(r"\[(\d{3}) ([^\]]*)\]", str(exc))
            detail = f"HTTP {status.group(1)} {status.group(2)}" if status else str(exc)
            hint = f" ({_JSON_HINT})" if status and status.group(1) == "403" else ""
            raise SearchError(f"searxng: {detail}{hint}") from exc
        # The wrapper reports "nothing found" as a row without a link.
        return [
            SearchResult(
                title=str(row.get("title") or row["link"]),
                url=str(row["link"]),
                content=str(row.get("snippet") or ""),
            )
            for row in rows
            if row.get("link")
        ]


class CorpusSearchProvider(SearchProvider):
    """BM25 over a local folder (settings.corpus_dir, default: the bundled sample corpus)."""

    name = "corpus"

    def _run(self, query: str, max_results: int) -> list[SearchResult]:
        try:
            index = load_index(self.settings.corpus_dir)
        except CorpusError as exc:
            raise SearchError(f"corpus: {exc}") from exc
        return [
            SearchResult(title=c.title, url=c.url, content=c.text)
            for c in index.search(query, max_results)
        ]

    async def _search(self, query: str, max_results: int) -> list[SearchResult]:
        return await asyncio.to_thread(self._run, query, max_results)


_PROVIDERS: dict[str, type[SearchProvider]] = {
    "tavily": TavilySearchProvider,
    "duckduckgo": DuckDuckGoSearchProvider,
    "searxng": SearxNGSearchProvider,
    "corpus": CorpusSearchProvider,
    "none": DisabledSearchProvider,
}


def resolve_provider_name(settings: SearchSettings) -> str:
    """Provider "auto" means Tavily when its key is set, else DuckDuckGo (keyless)."""
    if settings.provider != "auto":
        return settings.provider
    return "tavily" if os.environ.get(settings.tavily_api_key_env, "").strip() else "duckduckgo"


def get_search_provider(settings: SearchSettings) -> SearchProvider:
    """The provider the settings ask for."""
    return _PROVIDERS[resolve_provider_name(settings)](settings)
