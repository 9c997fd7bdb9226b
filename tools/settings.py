"""Settings of the web tools, owned here so the graph's configuration can embed them unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

SearchProviderName = Literal["auto", "tavily", "duckduckgo", "searxng", "corpus", "none"]

SAMPLE_CORPUS = Path(__file__).with_name("sample_corpus")


class SearchSettings(BaseModel):
    """Which web_search provider to use and how to reach it."""

    provider: SearchProviderName = "auto"
    max_results: int = Field(default=5, ge=1, le=20)
    timeout_s: float = Field(default=15.0, gt=0)
    # corpus: a folder of .txt/.md/.html files searched with BM25 (offline, private documents).
    corpus_dir: str | None = None
    # searxng: base URL of a self-hosted instance.
    searxng_url: str | None = None
    # tavily: override the API base (a local stand-in in tests, a proxy in deployments).
    tavily_api_base_url: str | None = None
    tavily_api_key_env: str = "TAVILY_API_KEY"


class FetchSettings(BaseModel):
    """Limits of web_fetch. Private, loopback and link-local targets are refused unless allowed."""

    timeout_s: float = Field(default=15.0, gt=0)
    max_bytes: int = Field(default=2_000_000, gt=0)
    max_redirects: int = Field(default=5, ge=0)
    max_chars: int = Field(default=20_000, gt=0, description="text handed to the model")
    # Hosts or IPs (exact) or CIDR networks allowed even though private/loopback; for tests and
    # private deployments, e.g. ["127.0.0.1"].
    allow_private: list[str] = Field(default_factory=list)
