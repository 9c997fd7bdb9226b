"""The corpus provider (BM25 over local files), web_search/web_fetch through it, and prefetch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fusiongraph.tools import corpus as corpus_mod
from fusiongraph.tools.corpus import load_index, split_paragraph_chunks
from fusiongraph.tools.fetch import FetchError, fetch_page
from fusiongraph.tools.search import SearchError, get_search_provider
from fusiongraph.tools.settings import SAMPLE_CORPUS, FetchSettings, SearchSettings
from fusiongraph.tools.untrusted import CLOSE_MARKER, OPEN_MARKER
from fusiongraph.tools.web import make_web_tools, prefetch_context

pytestmark = pytest.mark.integration
SAMPLE = SearchSettings(provider="corpus")


@pytest.mark.parametrize(
    ("query", "document"),
    [
        ("How do mRNA vaccines train the immune system?", "vaccines.md"),
        ("Who invented movable metal type and the Gutenberg Bible?", "printing_press.md"),
        ("TCP three-way handshake and congestion control", "tcp_vs_udp.md"),
        ("Why can't Python threads run CPU-bound code in parallel?", "python_gil.md"),
        ("What does RuBisCO do in the Calvin cycle?", "photosynthesis.md"),
        ("evaporation condensation precipitation", "water_cycle.md"),
        ("Why is Pluto a dwarf planet?", "solar_system.md"),
        ("mixture-of-agents aggregator proposer models", "multi_agent_deliberation.md"),
    ],
)
async def test_sample_corpus_finds_the_right_document(query: str, document: str) -> None:
    results = await get_search_provider(SAMPLE).search(query, 3)
    assert results, query
    assert results[0].url.startswith(f"corpus://{document}#")
    assert results[0].content  # the passage itself


async def test_sample_corpus_is_shipped_with_sensible_files() -> None:
    files = sorted(SAMPLE_CORPUS.glob("*.md"))
    assert 6 <= len(files) <= 10
    assert all(1000 <= f.stat().st_size <= 3200 for f in files)


async def test_unrelated_query_finds_nothing() -> None:
    assert await get_search_provider(SAMPLE).search("zyxwv qwerty", 3) == []


@pytest.fixture
def tmp_corpus(tmp_path: Path) -> Path:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "kettles.md").write_text(
        "# Electric Kettles\n\nA kettle boils water with a heating element.\n", encoding="utf-8"
    )
    (tmp_path / "bicycle_gears.txt").write_text(
        "Derailleur gears move the chain between sprockets.\n", encoding="utf-8"
    )
    (tmp_path / "page.html").write_text(
        "<html><head><title>Sourdough Basics</title><script>var x='hidden';</script></head>"
        "<body><article><h1>Sourdough</h1><p>Sourdough bread rises thanks to a starter of wild"
        " yeast and lactic acid bacteria, fed with flour and water over several days before"
        " baking.</p></article></body></html>",
        encoding="utf-8",
    )
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF-1.4 kettle kettle")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.md").write_text("# Secret\n\nkettle", encoding="utf-8")
    return tmp_path


async def test_tmp_corpus(tmp_corpus: Path) -> None:
    provider = get_search_provider(SearchSettings(provider="corpus", corpus_dir=str(tmp_corpus)))
    kettle = await provider.search("kettle", 5)
    assert [(r.url, r.title) for r in kettle] == [
        ("corpus://notes/kettles.md#0", "Electric Kettles")
    ]
    gears = await provider.search("chain sprockets", 5)
    assert [(r.url, r.title) for r in gears] == [("corpus://bicycle_gears.txt#0", "bicycle gears")]
    bread = await provider.search("wild yeast starter", 5)
    assert [(r.url, r.title) for r in bread] == [("corpus://page.html#0", "Sourdough Basics")]
    assert "hidden" not in bread[0].content and "lactic acid" in bread[0].content


async def test_index_is_cached_until_a_file_changes(tmp_corpus: Path) -> None:
    first = load_index(tmp_corpus)
    assert load_index(tmp_corpus) is first
    note = tmp_corpus / "bicycle_gears.txt"
    note.write_text("Hub gears hide the planetary gearset inside the wheel hub.\n")
    stat = note.stat()
    os.utime(note, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load_index(tmp_corpus)
    assert second is not first
    assert [c.path for c in second.search("planetary", 3)] == ["bicycle_gears.txt"]


async def test_empty_or_missing_corpus(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "missing"):
        provider = get_search_provider(SearchSettings(provider="corpus", corpus_dir=str(folder)))
        with pytest.raises(SearchError, match=r"^corpus: "):
            await provider.search("anything", 3)


def test_chunks_are_paragraph_aware() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 60 for i in range(12)]
    chunks = split_paragraph_chunks("\n\n".join(paragraphs), max_chars=1500)
    assert len(chunks) > 1
    assert all(len(c) <= 1500 for c in chunks)
    assert "\n\n".join(chunks) == "\n\n".join(p.strip() for p in paragraphs)  # none split

    long_para = "This is a sentence. " * 200
    chunks = split_paragraph_chunks(long_para, max_chars=500)
    assert all(len(c) <= 500 for c in chunks)
    assert all(c.endswith(".") for c in chunks)


async def test_web_search_tool_through_corpus() -> None:
    web_search, _ = make_web_tools(SAMPLE, FetchSettings())
    msg = await web_search.ainvoke(
        {
            "name": "web_search",
            "args": {"query": "photosynthesis chlorophyll"},
            "id": "c1",
            "type": "tool_call",
        }
    )
    assert msg.content.startswith("web_search results for 'photosynthesis chlorophyll'")
    assert "(provider: corpus)" in msg.content
    blocks = msg.content.count(OPEN_MARKER)
    assert blocks == msg.content.count(CLOSE_MARKER) == len(msg.artifact["sources"]) >= 1
    first = msg.artifact["sources"][0]
    assert first["url"].startswith("corpus://photosynthesis.md#")
    assert first["title"] == "Photosynthesis"
    assert "chlorophyll" in msg.content.lower()


async def test_web_fetch_of_corpus_urls() -> None:
    _, web_fetch = make_web_tools(SAMPLE, FetchSettings())
    msg = await web_fetch.ainvoke(
        {
            "name": "web_fetch",
            "args": {"url": "corpus://tcp_vs_udp.md#0"},
            "id": "f1",
            "type": "tool_call",
        }
    )
    assert "three-way handshake" in msg.content
    assert msg.artifact == {"sources": [{"url": "corpus://tcp_vs_udp.md#0", "title": "TCP vs UDP"}]}

    whole = await fetch_page("corpus://tcp_vs_udp.md", FetchSettings())
    index = load_index(None)
    assert whole.text == "\n\n".join(c.text for c in index.document_chunks("tcp_vs_udp.md"))
    assert "QUIC" in whole.text and "three-way handshake" in whole.text


async def test_web_fetch_of_tmp_corpus(tmp_corpus: Path) -> None:
    settings = SearchSettings(provider="corpus", corpus_dir=str(tmp_corpus))
    _, web_fetch = make_web_tools(settings, FetchSettings())
    content = web_fetch.invoke({"url": "corpus://notes/kettles.md#0"})
    assert "heating element" in content


@pytest.mark.parametrize(
    "url",
    [
        "corpus://../secret.md",
        "corpus://notes/../../etc/passwd",
        "corpus:///etc/passwd",
        "corpus://notes/kettles.md#7",
        "corpus://notes/kettles.md#x",
        "corpus://nope.md",
        "corpus://ignored.pdf",
        "corpus://.hidden/secret.md",
        "corpus://",
    ],
)
async def test_bad_corpus_urls(tmp_corpus: Path, url: str) -> None:
    with pytest.raises(FetchError) as err:
        await fetch_page(url, FetchSettings(), corpus_dir=tmp_corpus)
    assert err.value.reason == "not_found"


async def test_prefetch_context_uses_corpus_passages(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_fetch(*args: object, **kwargs: object) -> None:
        raise AssertionError("corpus results must not be fetched")

    monkeypatch.setattr("fusiongraph.tools.web.fetch_page", no_fetch)
    text, sources = await prefetch_context(
        "How did smallpox vaccination start?", SAMPLE, FetchSettings()
    )
    assert "Jenner" in text
    assert text.count(OPEN_MARKER) == text.count(CLOSE_MARKER) == len(sources) >= 1
    assert sources[0]["url"].startswith("corpus://vaccines.md#")


def test_cache_is_bounded(tmp_path: Path) -> None:
    for i in range(corpus_mod._CACHE_SIZE + 3):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        (folder / "a.txt").write_text(f"document number {i}")
        load_index(folder)
    assert len(corpus_mod._CACHE) <= corpus_mod._CACHE_SIZE
