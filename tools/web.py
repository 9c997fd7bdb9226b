"""The panel's web tools (web_search, web_fetch) and the one-shot prefetch for tool-less models.

Tool output goes straight into a model's context, so every piece of third-party text is fenced
with delimit_untrusted, and a failure comes back as text the model can read (and route around)
instead of an exception that would end the panelist's turn. The artifact carries the sources, so
the graph can cite them without parsing text.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from fusiongraph.tools.aio import run_coroutine
from fusiongraph.tools.corpus import SCHEME as CORPUS_SCHEME
from fusiongraph.tools.fetch import FetchedPage, FetchError, fetch_page
from fusiongraph.tools.search import (
    DisabledSearchProvider,
    SearchResult,
    get_search_provider,
)
from fusiongraph.tools.settings import FetchSettings, SearchSettings
from fusiongraph.tools.untrusted import delimit_untrusted

SNIPPET_CHARS = 1500
Artifact = dict[str, Any]

SEARCH_DESCRIPTION = (
    "Search the web (or the configured document corpus) for a query. Returns titles, URLs and "
    "snippets. Use web_fetch on a returned URL to read the full page."
)
FETCH_DESCRIPTION = (
    "Fetch one page by URL (http/https, or a corpus:// URL returned by web_search) and return its "
    "readable text."
)


class WebSearchInput(BaseModel):
    query: str = Field(description="what to search for, a few keywords or a short question")


class WebFetchInput(BaseModel):
    url: str = Field(description="the http(s) or corpus:// URL to read, e.g. from web_search")


def _truncate(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " [...truncated]"


def format_results(query: str, provider: str, results: list[SearchResult]) -> str:
    """Search results as model-readable text, each one fenced as untrusted."""
    if not results:
        return f"web_search found no results for {query!r} (provider: {provider})."
    blocks = [f"web_search results for {query!r} (provider: {provider}):"]
    for i, r in enumerate(results, 1):
        body = f"[{i}] {r.title}\nURL: {r.url}\n{_truncate(r.content, SNIPPET_CHARS)}"
        blocks.append(delimit_untrusted(body, r.url))
    return "\n\n".join(blocks)


def format_page(page: FetchedPage, max_chars: int) -> str:
    """A fetched page as model-readable text, fenced as untrusted."""
    body = f"Title: {page.title}\nURL: {page.final_url}\n\n{_truncate(page.text, max_chars)}"
    head = f"web_fetch {page.url}"
    if page.final_url != page.url:
        head += f" (redirected to {page.final_url})"
    return f"{head}:\n" + delimit_untrusted(body, page.final_url)


async def run_web_search(query: str, search: SearchSettings) -> tuple[str, Artifact]:
    """web_search's body: never raises, errors come back as text plus artifact["error"]."""
    provider = get_search_provider(search)
    if isinstance(provider, DisabledSearchProvider):
        msg = "web search is disabled in this configuration"
        return f"web_search: {msg}; answer from what you know.", {"sources": [], "error": msg}
    try:
        results = await provider.search(query, search.max_results)
    except Exception as exc:  # SearchError, or a provider bug: both become readable text
        msg = str(exc) or type(exc).__name__
        return f"web_search failed: {msg}", {"sources": [], "error": msg}
    sources = [{"url": r.url, "title": r.title} for r in results]
    return format_results(query, provider.name, results), {"sources": sources}


async def run_web_fetch(
    url: str, fetch: FetchSettings, corpus_dir: str | None = None
) -> tuple[str, Artifact]:
    """web_fetch's body: never raises, errors come back as text plus artifact["error"]."""
    try:
        page = await fetch_page(url, fetch, corpus_dir=corpus_dir)
    except FetchError as exc:
        msg = f"{exc.reason}: {exc}"
        return f"web_fetch failed: {msg}", {"sources": [], "error": msg}
    except Exception as exc:  # a bug or an odd server must not end the panelist's turn
        msg = str(exc) or type(exc).__name__
        return f"web_fetch failed: {msg}", {"sources": [], "error": msg}
    return format_page(page, fetch.max_chars), {
        "sources": [{"url": page.final_url, "title": page.title}]
    }


def make_web_tools(search: SearchSettings, fetch: FetchSettings) -> list[BaseTool]:
    """[web_search, web_fetch], usable with invoke and ainvoke, content_and_artifact responses."""
    corpus_dir = search.corpus_dir

    async def web_search_async(query: str) -> tuple[str, Artifact]:
        return await run_web_search(query, search)

    def web_search_sync(query: str) -> tuple[str, Artifact]:
        return run_coroutine(run_web_search(query, search))

    async def web_fetch_async(url: str) -> tuple[str, Artifact]:
        return await run_web_fetch(url, fetch, corpus_dir)

    def web_fetch_sync(url: str) -> tuple[str, Artifact]:
        return run_coroutine(run_web_fetch(url, fetch, corpus_dir))

    return [
        StructuredTool.from_function(
            func=web_search_sync,
            coroutine=web_search_async,
            name="web_search",
            description=SEARCH_DESCRIPTION,
            args_schema=WebSearchInput,
            response_format="content_and_artifact",
        ),
        StructuredTool.from_function(
            func=web_fetch_sync,
            coroutine=web_fetch_async,
            name="web_fetch",
            description=FETCH_DESCRIPTION,
            args_schema=WebFetchInput,
            response_format="content_and_artifact",
        ),
    ]


def _is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


async def prefetch_context(
    query: str, search: SearchSettings, fetch: FetchSettings, *, pages: int = 2
) -> tuple[str, list[dict[str, str]]]:
    """Search once and read the top `pages` http(s) hits, for models that can't call tools.

    Returns (context text, sources). Corpus hits already hold their passage and are not fetched;
    hits that are not fetched (or fail to) contribute their snippet. Never raises.
    """
    provider = get_search_provider(search)
    if isinstance(provider, DisabledSearchProvider):
        return "Web search is disabled; no retrieved context.", []
    try:
        results = await provider.search(query, search.max_results)
    except Exception as exc:
        return f"Web search failed ({exc}); no retrieved context.", []
    if not results:
        return f"Web search found nothing for {query!r}; no retrieved context.", []

    to_fetch = [r for r in results if _is_http(r.url)][: max(0, pages)]
    per_page = max(1000, fetch.max_chars // max(1, len(to_fetch)))
    fetched = await asyncio.gather(
        *(fetch_page(r.url, fetch, corpus_dir=search.corpus_dir) for r in to_fetch),
        return_exceptions=True,
    )
    pages_by_url = dict(zip((r.url for r in to_fetch), fetched, strict=True))

    blocks = [f"Retrieved context for {query!r} ({provider.name}):"]
    sources: list[dict[str, str]] = []
    for i, r in enumerate(results, 1):
        got = pages_by_url.get(r.url)
        if isinstance(got, FetchedPage):
            body = f"[{i}] {got.title or r.title}\nURL: {got.final_url}\n\n"
            body += _truncate(got.text, per_page)
            blocks.append(delimit_untrusted(body, got.final_url))
            sources.append({"url": got.final_url, "title": got.title or r.title})
            continue
        note = ""
        if isinstance(got, BaseException):
            reason = getattr(got, "reason", type(got).__name__)
            note = f"(page could not be fetched: {reason}: {got}; search snippet only)\n"
        limit = per_page if r.url.startswith(CORPUS_SCHEME) else SNIPPET_CHARS
        body = f"[{i}] {r.title}\nURL: {r.url}\n{note}{_truncate(r.content, limit)}"
        blocks.append(delimit_untrusted(body, r.url))
        sources.append({"url": r.url, "title": r.title})
    return "\n\n".join(blocks), sources
