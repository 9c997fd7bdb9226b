"""The README's screenshot (docs/playground.png): a real run of the playground on the fake
upstream, priced so the cost column has numbers. `python -m tests.browser.screenshot [PATH]`."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.server import create_app
from tests.browser.conftest import ALIAS, CHROMIUM_ARGS, MODEL, PANEL, chromium_path
from tests.support.servers import running_server
from tests.support.upstream import FakeUpstream, UpstreamServer

QUESTION = "Why does water boil at a lower temperature at altitude?"
# USD per million tokens (input, output): made-up prices, for the screenshot only.
PRICES = [(3.0, 15.0), (1.25, 10.0), (0.3, 2.5), (0.5, 1.5)]


def priced(spec: str, price: tuple[float, float]) -> dict:
    provider, model = spec.split(":", 1)
    return {"provider": provider, "model": model, "price": {"input": price[0], "output": price[1]}}


def main(out: Path) -> None:
    alias = {
        **ALIAS,
        "panel": [priced(spec, price) for spec, price in zip(PANEL, PRICES, strict=True)],
        "judge": priced(ALIAS["judge"], (3.0, 15.0)),
        "synthesizer": priced(ALIAS["synthesizer"], (3.0, 15.0)),
    }
    profile = tempfile.mkdtemp(prefix="fusiongraph-chromium-")
    with UpstreamServer(FakeUpstream(chunks=8, chunk_delay_s=0.08)) as upstream:
        os.environ["OPENAI_BASE_URL"] = upstream.base_url
        os.environ.setdefault("OPENAI_API_KEY", "upstream-key")
        app = create_app(build_graph(), api_keys=[], aliases={MODEL: alias})
        with running_server(app) as url, sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=chromium_path(),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900},
            )
            page = context.new_page()
            page.goto(f"{url}/")
            page.wait_for_selector("body[data-ready=true]")
            page.select_option("#model-select", MODEL)
            page.fill("#composer-input", QUESTION)
            page.press("#composer-input", "Enter")
            page.wait_for_selector("#status:has-text('Done')", timeout=30_000)
            # Highlight a panelist that takes a side in the contradiction.
            side = page.get_attribute("table.contradictions td.stance", "data-panelist")
            page.click(f"table.contradictions thead button[data-pick={side}]")
            page.mouse.click(5, 5)
            page.screenshot(path=str(out), full_page=True)
            context.close()
    shutil.rmtree(profile, ignore_errors=True)
    shrink(out)
    print(out)


def shrink(path: Path) -> None:
    """256 colours are plenty for a page of text (a third of the bytes), when Pillow is there."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/playground.png"))
