"""A local folder of documents as an offline search engine (BM25) and a fetchable source.

Private documents and air-gapped runs need web_search without the web. Files are split into
paragraph-aware chunks so a result is a focused passage, not a whole file; the index is cached per
folder and file signature, so repeated searches don't re-read the disk. Results carry
`corpus://<relative path>#<chunk>` URLs that web_fetch can read back.
"""

from __future__ import annotations

import html
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from langchain_core.documents import Document
from rank_bm25 import BM25Plus

from fusiongraph.tools.settings import SAMPLE_CORPUS

SUFFIXES = frozenset({".txt", ".md", ".markdown", ".html", ".htm"})
CHUNK_CHARS = 1500
SCHEME = "corpus://"
MAX_FILE_BYTES = 5_000_000  # a corpus is documents, not dumps: skip anything larger

_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be been but by can did do does for from had has have how i if in into "
        "is it its me my no not of on or our so than that the their them then there these they "
        "this to was we were what when where which who whom why will with would you your",
    )
)
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class CorpusError(Exception):
    """The corpus folder is missing, empty, or a corpus:// URL does not name a document in it."""


@dataclass(frozen=True)
class Chunk:
    """One searchable passage of a corpus document."""

    path: str  # relative to the corpus root, with forward slashes
    index: int
    title: str
    text: str

    @property
    def url(self) -> str:
        return corpus_url(self.path, self.index)


def corpus_url(rel_path: str, index: int | None = None) -> str:
    """The stable address of a document (or one of its chunks) inside the corpus."""
    base = SCHEME + quote(rel_path, safe="/")
    return base if index is None else f"{base}#{index}"


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens without stop words, with a light plural fold (vaccines -> vaccine)."""
    out = []
    for tok in _TOKEN.findall(text.lower()):
        if tok in _STOPWORDS:
            continue
        if len(tok) > 3 and tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
            tok = tok[:-1]
        out.append(tok)
    return out


def split_paragraph_chunks(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Pack whole paragraphs into chunks of about `max_chars`, starting a new one at headings.

    A single paragraph longer than `max_chars` is cut at sentence ends (or hard, if it has none).
    """
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    for para in paragraphs:
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        sentences = re.split(r"(?<=[.!?])\s+", para)
        buf = ""
        for sentence in sentences:
            while len(sentence) > max_chars:
                if buf:
                    pieces.append(buf)
                    buf = ""
                pieces.append(sentence[:max_chars])
                sentence = sentence[max_chars:]
            if buf and len(buf) + 1 + len(sentence) > max_chars:
                pieces.append(buf)
                buf = sentence
            else:
                buf = f"{buf} {sentence}".strip()
        if buf:
            pieces.append(buf)

    chunks: list[str] = []
    current = ""
    for piece in pieces:
        is_heading = bool(_HEADING.match(piece))
        too_big = current and len(current) + 2 + len(piece) > max_chars
        # A heading opens a new chunk once the current one has some substance.
        if too_big or (is_heading and len(current) >= max_chars // 3):
            chunks.append(current)
            current = piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def _html_to_text(raw: str) -> tuple[str, str | None]:
    """Readable text and <title> of an HTML document (trafilatura, crude tag strip as fallback)."""
    import trafilatura

    match = _HTML_TITLE.search(raw)
    title = " ".join(html.unescape(match.group(1)).split()) if match else None
    text = trafilatura.extract(raw, include_comments=False, include_tables=True)
    if not text:
        text = strip_tags(raw)
    return text, title


def strip_tags(raw: str) -> str:
    """Last-resort HTML to text: drop scripts, styles and tags, keep paragraph breaks."""
    raw = re.sub(r"(?is)<(script|style|noscript|template)\b.*?</\1\s*>", " ", raw)
    raw = re.sub(r"(?i)<br\s*/?>|</(p|div|h[1-6]|li|tr|section|article)\s*>", "\n\n", raw)
    raw = re.sub(r"(?s)<[^>]+>", " ", raw)
    raw = html.unescape(raw)
    lines = [" ".join(line.split()) for line in raw.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def read_document(path: Path) -> tuple[str, str]:
    """(title, text) of one corpus file; title = first markdown heading, <title>, or file name."""
    raw = path.read_text(encoding="utf-8", errors="replace")
    title: str | None = None
    if path.suffix.lower() in {".html", ".htm"}:
        text, title = _html_to_text(raw)
    else:
        text = raw
        match = _HEADING.search(text)
        if match and path.suffix.lower() in {".md", ".markdown"}:
            title = match.group(1).strip()
    return title or path.stem.replace("_", " ").replace("-", " "), text


def _files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _signature(root: Path, files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p in files:
        st = p.stat()
        out.append((p.relative_to(root).as_posix(), st.st_mtime_ns, st.st_size))
    return tuple(out)


class CorpusIndex:
    """BM25 over the chunks of one corpus folder (langchain's BM25Retriever on rank-bm25)."""

    def __init__(self, root: Path, chunks: list[Chunk]) -> None:
        # Imported here: langchain_community is heavy, and fetch/web import this module.
        from langchain_community.retrievers import BM25Retriever

        self.root = root
        self.chunks = chunks
        # BM25Plus rather than the retriever's default Okapi: Okapi's idf is zero or negative for
        # terms in half or more of the chunks, which makes tiny corpora unsearchable.
        docs = [
            Document(page_content=c.text, metadata={"n": i, "title": c.title})
            for i, c in enumerate(chunks)
        ]
        self._tokens = [tokenize(f"{c.title}\n{c.text}") for c in chunks]
        self.retriever = BM25Retriever(vectorizer=BM25Plus(self._tokens), docs=docs, k=5)
        self._token_sets = [frozenset(t) for t in self._tokens]

    def search(self, query: str, k: int) -> list[Chunk]:
        """Best `k` chunks that share at least one term with the query."""
        terms = tokenize(query)
        if not terms:
            return []
        scores = self.retriever.vectorizer.get_scores(terms)
        wanted = set(terms)
        ranked = sorted(
            (i for i in range(len(self.chunks)) if wanted & self._token_sets[i]),
            key=lambda i: (-float(scores[i]), i),
        )
        return [self.chunks[i] for i in ranked[:k]]

    def document_chunks(self, rel_path: str) -> list[Chunk]:
        return [c for c in self.chunks if c.path == rel_path]


_CACHE: OrderedDict[tuple[str, Any], CorpusIndex] = OrderedDict()
_CACHE_SIZE = 8
_LOCK = threading.Lock()


def resolve_corpus_dir(corpus_dir: str | Path | None) -> Path:
    """The configured folder, or the sample corpus shipped with the package."""
    return Path(corpus_dir).expanduser().resolve() if corpus_dir else SAMPLE_CORPUS.resolve()


def load_index(corpus_dir: str | Path | None) -> CorpusIndex:
    """The (cached) index of a corpus folder; rebuilt only when a file is added/removed/edited."""
    root = resolve_corpus_dir(corpus_dir)
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root}")
    files = _files(root)
    if not files:
        raise CorpusError(f"corpus folder has no .txt/.md/.html files: {root}")
    key = (str(root), _signature(root, files))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    chunks: list[Chunk] = []
    for path in files:
        if path.stat().st_size > MAX_FILE_BYTES:
            continue
        title, text = read_document(path)
        rel = path.relative_to(root).as_posix()
        for i, piece in enumerate(split_paragraph_chunks(text)):
            chunks.append(Chunk(path=rel, index=i, title=title, text=piece))
    if not chunks:
        raise CorpusError(f"corpus folder has no readable text: {root}")
    index = CorpusIndex(root, chunks)
    with _LOCK:
        _CACHE[key] = index
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return index


def read_corpus_url(url: str, corpus_dir: str | Path | None) -> tuple[str, str]:
    """(title, text) behind a corpus:// URL: one chunk with `#n`, the whole document without.

    The path must stay inside the corpus folder: `..` and absolute paths are refused.
    """
    if not url.startswith(SCHEME):
        raise CorpusError(f"not a corpus URL: {url}")
    rest = url[len(SCHEME) :]
    rel, _, fragment = rest.partition("#")
    rel = unquote(rel).strip("/")
    if not rel:
        raise CorpusError("corpus URL names no document")
    index = load_index(corpus_dir)
    target = (index.root / rel).resolve()
    if not target.is_relative_to(index.root):
        raise CorpusError(f"corpus URL points outside the corpus: {url}")
    rel = target.relative_to(index.root).as_posix()
    chunks = index.document_chunks(rel)
    if not chunks:
        raise CorpusError(f"no such corpus document: {rel}")
    if not fragment:
        return chunks[0].title, "\n\n".join(c.text for c in chunks)
    try:
        n = int(fragment)
    except ValueError as exc:
        raise CorpusError(f"bad chunk number in corpus URL: {fragment!r}") from exc
    if not 0 <= n < len(chunks):
        raise CorpusError(f"{rel} has chunks 0..{len(chunks) - 1}, not {n}")
    return chunks[n].title, chunks[n].text
