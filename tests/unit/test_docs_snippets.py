"""Every ```python and ```bash block of README.md and docs/ runs as a reader would paste it.

The blocks of one page run in order, as a reader goes down it: the Python blocks in one
namespace, the bash blocks in one temporary folder, each bash block in its own `bash -euo
pipefail`. Models are the fake OpenAI-compatible upstream (tests/support/upstream.py): the
provider endpoints point at it, as an operator points them at a gateway, and `fusion` defaults to
the `quality` preset on it instead of starting the bundled llama.cpp model. A page whose blocks
talk to `fusiongraph serve` on 127.0.0.1:8000 gets the real app on a free loopback port instead.
Blocks fenced ```sh or ```py are shown, not run (they start a server, need Docker or the
internet, or run the bundled model for minutes; docs/architecture.md says so to contributors),
but they must still parse, as must every ```json block.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mktestdocs import grab_code_blocks

from tests.support.servers import running_server
from tests.support.upstream import UpstreamServer

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SERVER_ADDRESSES = ("http://127.0.0.1:8000", "localhost:8000")


def blocks(page: Path) -> list[tuple[str, str]]:
    """The page's runnable blocks, (language, code), in page order."""
    text = page.read_text()
    found = [
        (text.find(f"```{lang}\n{code}"), lang, code)
        for lang in ("python", "bash")
        for code in grab_code_blocks(text, lang=lang)
    ]
    return [(lang, code) for _, lang, code in sorted(found)]


RUNNABLE = [page for page in PAGES if blocks(page)]


@pytest.fixture
def docs_env(
    upstream: UpstreamServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Path]:
    """The reader's machine: keys set, providers at the fake upstream, a fresh working folder."""
    for name in ("OPENAI", "OPENROUTER"):
        monkeypatch.setenv(f"{name}_API_KEY", "sk-test")
        monkeypatch.setenv(f"{name}_BASE_URL", upstream.base_url)
    monkeypatch.setenv("FUSIONGRAPH_PRESET", "quality")
    monkeypatch.setenv("FUSIONGRAPH_SEARCH_PROVIDER", "corpus")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def _with_server(code: str, base: str) -> str:
    for address in SERVER_ADDRESSES:
        code = code.replace(address, base if address.startswith("http") else base[7:])
    return code


def run_page(page: Path, folder: Path, server: str | None) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    for number, (lang, code) in enumerate(blocks(page), 1):
        where = f"{page.relative_to(ROOT)}, block {number} ({lang})"
        if server:
            code = _with_server(code, server)
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{where} failed:\n{code}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_every_snippet_runs(page: Path, docs_env: Path) -> None:
    if not any(address in page.read_text() for address in SERVER_ADDRESSES):
        run_page(page, docs_env, None)
        return
    from fusiongraph.serve.server import create_app

    with running_server(create_app(default_preset="quality")) as url:
        run_page(page, docs_env, url)


def test_the_docs_run_blocks_of_both_kinds() -> None:
    """A fence typo (```Python, ```shell) would silently stop a block from running."""
    langs = {lang for page in PAGES for lang, _ in blocks(page)}
    assert langs == {"python", "bash"}
    fences = {
        line.strip()[3:]
        for page in PAGES
        for line in page.read_text().splitlines()
        if line.strip().startswith("```") and line.strip() != "```"
    }
    shown = {"py", "sh", "json", "jsonl", "text", "yaml", "toml", "html", "js", "dockerfile", "ini"}
    assert fences <= {"python", "bash", *shown}, (
        f"fences {fences - {'python', 'bash', *shown}}: run it as python or bash, show it as py or "
        "sh, or add a language that is not code to run to `shown`"
    )


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_the_blocks_that_only_show_still_parse(page: Path) -> None:
    """A shown block (`py`, `sh`, `json`) is not run, but a reader may paste it: it must parse."""
    text = page.read_text()
    for number, code in enumerate(grab_code_blocks(text, lang="py"), 1):
        compile(code, f"{page.name}, py block {number}", "exec")
    for code in grab_code_blocks(text, lang="sh"):
        done = subprocess.run(["bash", "-n", "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, f"{page.name}: {code}\n{done.stderr}"
    for code in grab_code_blocks(text, lang="json"):
        json.loads(code)
