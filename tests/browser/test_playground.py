"""The web playground in a real browser (Debian's chromium via Playwright) against the real
server and graph, whose models are the fake upstream: a run shows its panel columns live, the
failed panelist's reason, the streamed answer, the analysis as matrices, the timeline and the
cost; the page asks for the API key the server requires and keeps it in the tab; history and eval
reports reopen; a model's answer can neither restyle the page, stand in for its controls, change
what the composer sends, nor make the browser fetch from elsewhere."""

from __future__ import annotations

import json
import threading
import typing
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from fusiongraph.graph.config import FusionContext
from tests.browser.conftest import (
    API_KEY,
    HOSTILE_MODEL,
    HOSTILE_UPSTREAM_MODELS,
    MODEL,
    PANEL,
    VOTE_MODEL,
)
from tests.support.upstream import SYNTHESIS_TEXT, Behaviour, FakeUpstream, UpstreamServer

pytestmark = pytest.mark.timeout(120)
QUESTION = "Why does water boil at a lower temperature at altitude?"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def page(browser_context: Any) -> Any:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.close()
    assert not errors, f"the page raised: {errors}"


def open_playground(page: Any, server: str) -> None:
    """Load the page; it finds the API required and asks for the key, which it then uses."""
    page.goto(f"{server}/")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", API_KEY)
    page.click("#key-save")
    page.wait_for_selector("body[data-ready=true]")


def last_local_run(page: Any) -> dict[str, Any]:
    """The run record the page kept in this browser's history (what the server sent)."""
    history = json.loads(page.evaluate("localStorage.getItem('fusiongraph.history')"))
    return history[0]["turns"][-1]["fusion"]


def test_the_page_needs_the_key_the_api_needs(page: Any, server: str) -> None:
    assert httpx.get(f"{server}/").status_code == 200  # the page itself is public
    assert httpx.get(f"{server}/playground/static/app.js").status_code == 200
    for path in ("/v1/models", "/playground/api/info", "/playground/api/threads"):
        assert httpx.get(f"{server}{path}").status_code == 401
        assert httpx.get(f"{server}{path}", headers=AUTH).status_code == 200
    page.goto(f"{server}/")
    page.wait_for_selector("#key-dialog[open]")
    page.fill("#key-input", "wrong-key")
    page.click("#key-save")
    page.wait_for_selector("#key-dialog[open]")
    assert "incorrect API key" in page.inner_text("#key-reason")
    assert page.get_attribute("body", "data-ready") is None
    page.fill("#key-input", API_KEY)
    page.click("#key-save")
    page.wait_for_selector("body[data-ready=true]")
    assert MODEL in page.eval_on_selector_all("#model-select option", "os => os.map(o => o.value)")


def test_the_first_load_is_light_and_all_local(page: Any, server: str) -> None:
    """Everything the page loads comes from this server (no CDN, no font), compressed."""
    open_playground(page, server)
    entries = page.evaluate(
        """() => [...performance.getEntriesByType('navigation'),
                  ...performance.getEntriesByType('resource')]
                 .map(e => ({url: e.name, wire: e.transferSize, body: e.decodedBodySize,
                             type: e.initiatorType}))"""
    )
    assert entries and all(e["url"].startswith(server) for e in entries), entries
    assets = [e for e in entries if "/playground/api/" not in e["url"] and "/v1/" not in e["url"]]
    names = {e["url"].rsplit("/", 1)[-1] for e in assets}
    assert {"app.js", "app.css", "marked.esm.js", "purify.min.js"} <= names
    assert not any("highlight" in n for n in names)  # loaded with the first code block only
    wire, body = sum(e["wire"] for e in assets), sum(e["body"] for e in assets)
    print(f"first load: {len(assets)} files, {body} bytes, {wire} on the wire")
    assert body < 250_000 and wire < body / 2


def test_the_settings_form_is_the_graphs_context_schema(page: Any, server: str) -> None:
    open_playground(page, server)
    own_pickers = {"preset", "panel", "judge", "synthesizer"}
    fields = page.eval_on_selector_all("[data-setting]", "els => els.map(e => e.dataset.setting)")
    assert sorted(fields) == sorted(set(FusionContext.model_fields) - own_pickers)
    tool_modes = page.eval_on_selector_all(
        "#setting-tool_mode option", "os => os.slice(1).map(o => o.textContent)"
    )
    annotation = FusionContext.model_fields["tool_mode"].annotation
    literal = next(a for a in typing.get_args(annotation) if a is not type(None))
    assert tool_modes == list(typing.get_args(literal))


def test_a_run_shows_panel_failure_analysis_streamed_answer_timeline_and_cost(
    page: Any, server: str, artifacts: Path
) -> None:
    open_playground(page, server)
    page.select_option("#model-select", MODEL)
    page.click("#strategy-box summary")
    page.fill("#setting-judge_input_chars", "5000")
    page.fill("#composer-input", QUESTION)
    page.press("#composer-input", "Enter")

    # Live: one column per panelist as soon as the run starts, with its state.
    page.wait_for_selector(".run .panelist[data-state=running]")
    assert page.locator(".run .panelist").count() == len(PANEL)
    page.wait_for_selector(".run .tl .bar.running")  # the timeline grows while the run goes
    # The answer streams: seen part-way before it is whole.
    page.wait_for_function(
        """full => {
            const t = document.querySelector('.run .answer')?.textContent.trim() || '';
            return t.length > 0 && t.length < full;
        }""",
        arg=len(SYNTHESIS_TEXT),
        polling=10,
        timeout=15_000,
    )
    page.wait_for_selector("#status:has-text('Done')", timeout=20_000)
    fusion = last_local_run(page)
    assert fusion["settings"]["judge_input_chars"] == 5000  # the form's setting was sent

    columns = page.locator(".run .panelist")
    assert columns.evaluate_all("cs => cs.map(c => c.dataset.panelist)") == ["p1", "p2", "p3", "p4"]
    states = columns.evaluate_all("cs => cs.map(c => c.dataset.state)")
    assert states == ["finished", "finished", "finished", "failed"]
    failed = fusion["failed_models"][0]
    assert failed["panelist"] == "p4" and failed["reason"] == "timeout"
    assert page.inner_text(".panelist[data-panelist=p4] .reason").startswith("timeout: ")
    assert "[alpha-0.3s]" in page.inner_text(".panelist[data-panelist=p1] .panel-answer")
    assert page.inner_text(".run .answer").strip() == SYNTHESIS_TEXT

    # The contradictions matrix: topic x panelist, each cell the stance the judge gave.
    (contradiction,) = fusion["analysis"]["contradictions"]
    stances = {s["panelist"]: s["stance"] for s in contradiction["stances"]}
    assert sorted(stances.values()) == ["about 89 °C", "about 90 °C"]
    header = page.locator("table.contradictions thead th").all_inner_texts()
    assert [h.strip() for h in header] == ["Topic", "p1", "p2", "p3", "p4"]
    row = page.locator("table.contradictions tbody tr")
    assert row.count() == 1
    assert row.locator("th").inner_text().startswith(contradiction["topic"])
    cells = [c.strip() for c in row.locator("td").all_inner_texts()]
    assert cells == [stances.get(p, "—") for p in ("p1", "p2", "p3", "p4")]
    covered = page.locator("table.coverage td.covered").evaluate_all(
        "cs => cs.map(c => c.dataset.panelist)"
    )
    assert covered == fusion["analysis"]["partial_coverage"][0]["panelists"]
    insight = fusion["analysis"]["unique_insights"][0]
    attributed = page.inner_text(f".analysis li[data-panelist={insight['panelist']}]")
    assert insight["insight"] in attributed

    # Clicking a panelist's name highlights its column.
    page.click("table.contradictions thead button[data-pick=p2]")
    assert "highlight" in page.get_attribute(".panelist[data-panelist=p2]", "class")
    assert "highlight" not in page.get_attribute(".panelist[data-panelist=p1]", "class")
    pressed = page.get_attribute("table.contradictions thead [data-pick=p2]", "aria-pressed")
    assert pressed == "true"

    # The timeline: every panelist, the judge and synthesis on one axis; the critical path is
    # what the run waited for: the panelist cut at the timeout, the judge, the synthesis.
    labels = [t.strip() for t in page.locator(".tl-row .tl-label").all_inner_texts() if t.strip()]
    assert [label.split()[0] for label in labels] == ["p1", "p2", "p3", "p4", "judge", "synthesis"]
    critical = page.locator(".tl-row:has(.bar.critical) .tl-label").all_inner_texts()
    assert [c.split()[0] for c in critical] == ["p4", "judge", "synthesis"]
    lefts = page.locator(".bar").evaluate_all("bs => bs.map(b => parseFloat(b.style.left))")
    assert lefts[-1] > lefts[-2] > max(lefts[:4])  # synthesis after the judge after the panel

    # Cost and tokens per node and in total, as the record says.
    total = page.locator(".cost-table tfoot td").all_inner_texts()
    assert int(total[3]) == fusion["usage"]["total"]["total_tokens"] > 0
    assert page.locator(".cost-table tbody tr").count() == len(PANEL) + 2

    # Copy as curl / Python: the run's request, the key as a variable, never its value.
    page.click(".run-actions button:has-text('Copy as curl')")
    curl = page.input_value("#code-text")
    assert f'"model": "{MODEL}"' in curl and '"judge_input_chars": 5000' in curl
    assert "$FUSIONGRAPH_API_KEY" in curl and API_KEY not in curl and "progress" not in curl
    page.keyboard.press("Escape")
    page.click(".run-actions button:has-text('Copy as Python')")
    assert 'extra_body={"fusion"' in page.input_value("#code-text")
    page.keyboard.press("Escape")

    page.screenshot(path=str(artifacts / "run-desktop.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 800})
    page.wait_for_timeout(100)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scroll
    page.screenshot(path=str(artifacts / "run-375px.png"), full_page=True)


def test_a_strategy_chosen_in_the_form_shows_its_decision(page: Any, server: str) -> None:
    """The aggregation setting comes from the schema; a vote's record is shown as a decision."""
    open_playground(page, server)
    page.select_option("#model-select", VOTE_MODEL)
    page.click("#strategy-box summary")
    page.select_option("#setting-aggregation", label="vote")
    page.fill("#composer-input", "What is 6 x 7?")
    page.press("#composer-input", "Enter")
    page.wait_for_selector("#status:has-text('Done')", timeout=20_000)
    fusion = last_local_run(page)
    aggregation = fusion["aggregation"]
    assert aggregation["requested"] == "vote"
    shown = dict(
        zip(
            page.locator(".aggregation dt").all_inner_texts(),
            page.locator(".aggregation dd").all_inner_texts(),
            strict=True,
        )
    )
    assert shown["requested"] == "vote" and shown["applied"] == aggregation["applied"]
    if aggregation.get("vote"):
        assert str(aggregation["vote"]["winner"]) in shown["vote"]
    if not fusion["judge"]["model"]:  # answered by the vote: no judge, no synthesis bar
        assert page.get_attribute(".run .judge", "data-state") == "skipped"
        labels = page.locator(".tl-row .tl-label").all_inner_texts()
        assert not any(label.startswith(("judge", "synthesis")) for label in labels)
    assert page.inner_text(".run .answer").strip()

    # A second turn: the whole conversation goes again, on the same checkpointed thread.
    page.fill("#composer-input", "And 6 x 8?")
    page.press("#composer-input", "Enter")
    page.wait_for_function("document.querySelectorAll('.turn.assistant .run .answer').length == 2")
    page.wait_for_selector("#status:has-text('Done')", timeout=20_000)
    page.locator(".run-actions button:has-text('Copy as curl')").last.click()
    sent = json.loads(page.input_value("#code-text").split("-d '", 1)[1].rstrip("'"))
    page.keyboard.press("Escape")
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "user"] and sent["messages"][2]["content"] == "And 6 x 8?"
    threads = httpx.get(f"{server}/playground/api/threads", headers=AUTH).json()["data"]
    assert any(t["title"] == "What is 6 x 7?" and t["turns"] == 2 for t in threads)


def test_history_reopens_a_server_thread(page: Any, server: str) -> None:
    question = "What is the boiling point of water on Everest?"
    reply = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": question}]},
        headers=AUTH,
        timeout=30,
    )
    assert reply.status_code == 200
    record = reply.json()["fusion"]
    open_playground(page, server)
    page.click("#nav-history")
    entry = page.locator("#history-list button", has_text=question)
    entry.wait_for()
    assert "server" in entry.inner_text()
    entry.click()
    page.wait_for_selector(".run table.contradictions")
    assert page.inner_text(".turn.user .bubble") == question
    assert page.locator(".run .panelist").count() == len(PANEL)
    assert page.inner_text(".run .answer").strip() == SYNTHESIS_TEXT
    (contradiction,) = record["analysis"]["contradictions"]
    stances = {s["panelist"]: s["stance"] for s in contradiction["stances"]}
    cells = [c.strip() for c in page.locator("table.contradictions tbody td").all_inner_texts()]
    assert cells == [stances.get(p, "—") for p in ("p1", "p2", "p3", "p4")]
    assert page.locator(".tl-row .bar").count() == len(PANEL) + 2


def test_a_browser_run_reopens_with_markdown_highlighted_and_sanitised(
    page: Any, server: str
) -> None:
    open_playground(page, server)
    answer = (
        "Use a loop:\n\n```python\ndef f(x):\n    return x + 1\n```\n\n"
        '<img src="x" onerror="window.pwned = 1"> **done**'
    )
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    fusion = {  # a record from a panelist that searched: its sources, one of them hostile
        "panel": [
            {
                "panelist": "p1",
                "model": "openai:searcher",
                "content": "Found it: `x + 1`.",
                "sources": [
                    {"url": "https://example.org/a", "title": "Example A"},
                    {"url": "javascript:window.pwned=2", "title": "Hostile"},
                ],
                "usage": usage,
                "latency_s": 0.5,
                "tool_calls": 2,
                "cost_usd": None,
            }
        ],
        "failed_models": [],
        "analysis": None,
        "judge": {"model": None, "ok": None, "error": None, "latency_s": None},
        "synthesizer": {"model": "openai:writer", "latency_s": 0.2},
        "usage": {"panel": usage, "judge": {}, "synthesis": usage, "total": usage},
        "cost_usd": {"panel": None, "judge": None, "synthesis": None, "total": None},
    }
    turn = {"user": "Show code", "answer": answer, "fusion": fusion, "events": []}
    entry = {
        "id": "c-test",
        "title": "Show code",
        "updated": "2026-12-01T12:00:00Z",
        "threadId": None,
        "model": MODEL,
        "turns": [turn],
    }
    page.evaluate("e => localStorage.setItem('fusiongraph.history', JSON.stringify([e]))", entry)
    page.click("#nav-history")
    page.click("#history-list button:has-text('Show code')")
    page.wait_for_selector(".run .answer pre code.hljs .hljs-keyword")
    assert page.inner_text(".run .answer strong") == "done"
    assert page.locator(".run .answer img[onerror]").count() == 0
    assert page.evaluate("window.pwned") is None
    column = page.locator(".panelist[data-panelist=p1]")
    assert "2 tool calls" in column.locator(".tools").inner_text()
    links = column.locator(".sources a")
    assert links.all_inner_texts() == ["Example A", "Hostile"]
    assert [links.nth(i).get_attribute("href") for i in range(2)] == ["https://example.org/a", "#"]
    assert page.get_attribute(".run .judge", "data-state") == "skipped"


# WCAG 2 contrast of every piece of text against the background it is drawn on.
LOW_CONTRAST_JS = """() => {
    const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = c => (c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = el => {
        for (; el; el = el.parentElement) {
            const c = rgb(getComputedStyle(el).backgroundColor);
            if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
        }
        return [255, 255, 255];
    };
    const bad = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        const node = walker.currentNode, el = node.parentElement;
        if (!node.textContent.trim() || !el.checkVisibility()) continue;
        const style = getComputedStyle(el);
        const [a, b] = [lum(rgb(style.color)), lum(background(el))];
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
        const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
        if (ratio < needed) bad.push(`${node.textContent.trim().slice(0, 30)}: ${ratio}`);
    }
    return bad;
}"""


def test_a_reopened_run_is_readable_and_keyboard_operable(page: Any, server: str) -> None:
    question = "How long do eggs take to boil at altitude?"
    reply = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": question}]},
        headers=AUTH,
        timeout=30,
    ).json()
    turn = {
        "user": question,
        "answer": reply["choices"][0]["message"]["content"],
        "fusion": reply["fusion"],
        "events": [],
    }
    entry = {
        "id": "c-a11y",
        "title": question,
        "updated": "2026-12-01T12:00:00Z",
        "threadId": None,
        "model": MODEL,
        "turns": [turn],
    }
    open_playground(page, server)
    page.evaluate("e => localStorage.setItem('fusiongraph.history', JSON.stringify([e]))", entry)
    page.click("#nav-history")
    page.click(f"#history-list button:has-text('{question}')")
    page.wait_for_selector(".run table.contradictions")
    run_text = page.inner_text(".run")
    assert "null" not in run_text and "undefined" not in run_text and "NaN" not in run_text
    # Without the events, the timeline is rebuilt from the latencies in the record.
    assert page.locator(".tl-row .bar").count() == len(PANEL) + 2

    # Keyboard: a panelist's name is a button; Enter highlights its column, again clears it.
    page.focus(".unique-insights button[data-pick], .analysis li[data-panelist] button")
    picked = page.evaluate("document.activeElement.dataset.pick")
    page.keyboard.press("Enter")
    assert "highlight" in page.get_attribute(f".panelist[data-panelist={picked}]", "class")
    page.keyboard.press("Enter")
    assert "highlight" not in page.get_attribute(f".panelist[data-panelist={picked}]", "class")
    page.focus("#composer-input")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.tagName") in {"BUTTON", "A", "TEXTAREA"}

    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        assert page.evaluate(LOW_CONTRAST_JS) == [], scheme


def test_eval_reports_are_listed_opened_and_kept_in_their_folder(
    page: Any, server: str, evals_dir: Path
) -> None:
    open_playground(page, server)
    page.click("#nav-evals")
    page.wait_for_selector("#evals-list button:has-text('demo-20261201-120000')")
    assert "no report.html" in page.inner_text("#evals-list")
    page.click("#evals-list button:has-text('demo-20261201-120000')")
    frame = page.frame_locator("#eval-frame")
    assert frame.locator("h1").inner_text() == "Demo eval report"
    assert page.get_attribute("#eval-frame", "sandbox") == ""  # no script, an opaque origin
    # The report's other files open in a tab as plain text, fetched by the page with its key.
    with page.context.expect_page() as opened:
        page.click("#evals-list button:has-text('summary.json')")
    tab = opened.value
    tab.wait_for_load_state()
    assert json.loads(tab.inner_text("body")) == {"arms": ["fusion", "single"]}
    tab.close()

    base = f"{server}/playground/api/evals"
    ok = httpx.get(f"{base}/demo-20261201-120000/summary.json", headers=AUTH)
    assert ok.status_code == 200 and ok.json() == {"arms": ["fusion", "single"]}
    assert httpx.get(f"{base}/demo-20261201-120000/report.html").status_code == 401
    for sneaky in (
        "demo-20261201-120000/..%2F..%2Fsecret.txt",
        "..%2Fsecret.txt/x",
        "demo-20261201-120000/%2E%2E/%2E%2E/secret.txt",
        "demo-20261201-120000/%2Fetc%2Fpasswd",
    ):
        response = httpx.get(f"{base}/{sneaky}", headers=AUTH)
        assert response.status_code == 404, sneaky
        assert "outside the evals folder" not in response.text


# ---------- model output must not act on the page ----------

# The page's own composer, found by its place in the page rather than by an id an answer could
# also carry.
COMPOSER = "main > form.composer"
COMPOSER_INPUT = "main > form.composer > textarea"
STATUS = "main > p.status"
# What the issue reported: this in an answer became the composer, and the next question sent
# was OTHER.
CLOBBERING_TEXTAREA = '<textarea id="composer-input" style="display:none">OTHER</textarea>'
# Every way an answer could act on the page at once; ELSEWHERE is a server the browser must
# never be made to call.
HOSTILE_ANSWER = "\n\n".join(
    [
        "Here is the answer you asked for.",
        '<textarea id="composer-input" name="composer-input" style="display:none">OTHER</textarea>',
        '<form id="composer" action="ELSEWHERE/form"><input id="send" name="q" value="x">'
        '<button id="stop">Send</button></form>',
        '<div id="status" name="status">Ready.</div>',
        '<select id="model-select" name="model"><option value="evil">evil</option></select>',
        '<input data-setting="judge_input_chars" data-kind="number" value="7">',
        "<style>main > form.composer, #composer { display: none !important } "
        "body { background: rgb(255, 0, 0) !important } .run { visibility: hidden }</style>",
        '<div class="composer" popover>a fake composer</div>',
        '<img src="ELSEWHERE/pixel.png" alt="tracking pixel"> '
        '<img srcset="ELSEWHERE/srcset.png 2x"> ![chart](ELSEWHERE/markdown.png)',
        '<iframe src="ELSEWHERE/frame"></iframe><object data="ELSEWHERE/object"></object>'
        '<embed src="ELSEWHERE/embed">',
        '<video src="ELSEWHERE/video.mp4" poster="ELSEWHERE/poster.png"></video>'
        '<table background="ELSEWHERE/table.png"><tr><td>a cell</td></tr></table>',
        '<link rel="stylesheet" href="ELSEWHERE/sheet.css">'
        '<meta http-equiv="refresh" content="0; url=ELSEWHERE/meta"><base href="ELSEWHERE/">',
        '<span tabindex="1" role="alert" aria-owns="composer-input">out of turn</span>',
        "- [x] a task done\n- [ ] a task open",
        "**Bold** survives, and so does [a link](https://example.org/) and `code`.",
    ]
)
FORBIDDEN_IN_ANSWERS = (
    "style, link, meta, base, form, input, textarea, button, select, option, iframe, object, "
    "embed, video, [background], [id], [name], [style], [popover], [data-setting], [tabindex], "
    "[role], [aria-owns], "
    "[class]:not([class^=language-])"
    ":not(.hljs):not([class^=hljs-])"
)
PAGE_LOOKS_JS = """sel => {
    const own = document.querySelector(sel);
    const look = el => { const s = getComputedStyle(el);
        return [s.display, s.visibility, s.backgroundColor, s.position]; };
    const input = own.querySelector('textarea');
    return {body: look(document.body), composer: look(own), input: look(input),
            visible: own.checkVisibility() && input.checkVisibility()};
}"""


class _Counting(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[str]]]:
    """A second server on 127.0.0.1 standing for a remote host; it records every request."""
    handler = type("Handler", (_Counting,), {"hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="elsewhere", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler.hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def scripted_answer(upstream: UpstreamServer) -> Iterator[Callable[[str], None]]:
    """Make every model of HOSTILE_MODEL answer the given text (both panelists, synthesis)."""
    fake = typing.cast(FakeUpstream, upstream.app)

    def script(text: str) -> None:
        for name in HOSTILE_UPSTREAM_MODELS:
            fake.models[name] = Behaviour(ttft_s=0.05, chunks=3, chunk_delay_s=0.02, content=text)

    yield script
    for name in HOSTILE_UPSTREAM_MODELS:
        fake.models.pop(name, None)


def ask(page: Any, question: str) -> None:
    """Type into the page's own composer and send with Enter, as a person does."""
    page.locator(COMPOSER_INPUT).fill(question)
    page.locator(COMPOSER_INPUT).press("Enter")


def wait_done(page: Any, runs: int) -> None:
    """Wait for the page's `runs`-th run to finish (its cost table, found by its place in the
    page); the page's own status line then says it is done."""
    tables = page.locator(".turn.assistant > .run > .cost > .table-wrap > table.cost-table")
    tables.nth(runs - 1).wait_for(state="attached", timeout=20_000)
    assert page.locator(STATUS).inner_text().startswith("Done"), page.locator(STATUS).inner_text()


def questions_since(upstream: UpstreamServer, since: int) -> list[str]:
    """What the panel was asked, as the upstream received it."""
    fake = typing.cast(FakeUpstream, upstream.app)
    return [r.question for r in fake.records_since(since) if r.role == "panel"]


def last_record_id(upstream: UpstreamServer) -> int:
    records = typing.cast(FakeUpstream, upstream.app).records
    return records[-1].id if records else 0


def test_an_answer_with_the_composers_id_does_not_replace_the_next_question(
    page: Any, server: str, upstream: UpstreamServer, scripted_answer: Callable[[str], None]
) -> None:
    scripted_answer(f"Sure.\n\n{CLOBBERING_TEXTAREA}\n\nAnything else?")
    open_playground(page, server)
    page.select_option("#model-select", HOSTILE_MODEL)
    ask(page, "first question")
    wait_done(page, 1)
    since = last_record_id(upstream)
    ask(page, "what I typed next")
    wait_done(page, 2)
    assert set(questions_since(upstream, since)) == {"what I typed next"}
    assert page.evaluate("document.querySelectorAll('[id=composer-input]').length") == 1


def test_hostile_answers_cannot_restyle_clobber_post_or_fetch(
    page: Any,
    server: str,
    upstream: UpstreamServer,
    scripted_answer: Callable[[str], None],
    elsewhere: tuple[str, list[str]],
    artifacts: Path,
) -> None:
    remote, hits = elsewhere
    scripted_answer(HOSTILE_ANSWER.replace("ELSEWHERE", remote))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_playground(page, server)
    page.select_option("#model-select", HOSTILE_MODEL)
    own_ids = page.evaluate("[...document.querySelectorAll('[id]')].map(e => e.id)")
    looks = page.evaluate(PAGE_LOOKS_JS, COMPOSER)
    assert looks["visible"]

    ask(page, "first question")
    wait_done(page, 1)
    answers = page.locator(".run .answer.markdown, .run .panel-answer.markdown")
    assert answers.count() == 3  # the synthesis and both panelists' answers: all hostile
    for i in range(answers.count()):
        answer = answers.nth(i)
        assert "Bold" in answer.locator("strong").inner_text()
        assert "☑ a task done" in answer.inner_text() and "☐ a task open" in answer.inner_text()
        assert answer.locator("a[href='https://example.org/']").get_attribute("rel") == (
            "noopener noreferrer"
        )
        assert answer.locator(FORBIDDEN_IN_ANSWERS).count() == 0, answer.inner_html()
        # Remote images are links the reader may follow, never fetched by the page.
        assert answer.locator("img").count() == 0
        assert answer.locator(f"a[href='{remote}/pixel.png']").inner_text() == (
            "image: tracking pixel"
        )
    # Each of the page's ids still names one element, its own; its look has not changed.
    counts = page.evaluate(
        'ids => ids.map(id => document.querySelectorAll(`[id="${id}"]`).length)', own_ids
    )
    assert counts == [1] * len(own_ids)
    assert page.evaluate(PAGE_LOOKS_JS, COMPOSER) == looks
    assert page.locator(".run").first.is_visible()
    page.screenshot(path=str(artifacts / "hostile-answer.png"), full_page=True)

    # The composer sends what was typed, with the settings the person chose (none here).
    since = last_record_id(upstream)
    ask(page, "what I typed next")
    wait_done(page, 2)
    assert set(questions_since(upstream, since)) == {"what I typed next"}
    history = json.loads(page.evaluate("localStorage.getItem('fusiongraph.history')"))
    sent = history[0]["turns"][-1]["request"]["body"]
    assert sent["model"] == HOSTILE_MODEL and set(sent["fusion"]) == {"progress"}
    assert hits == [], hits
    assert not [url for url in requested if url.startswith(remote)]
    assert page.url == f"{server}/"


def test_the_key_is_kept_in_this_tab_only_never_in_a_cookie(
    page: Any, server: str, browser_context: Any
) -> None:
    def cookies_holding_the_key() -> list[dict[str, Any]]:
        return [c for c in browser_context.cookies() if API_KEY in unquote(c["value"])]

    open_playground(page, server)
    assert "kept in this tab only" in page.inner_text("#key-reason")
    assert page.evaluate("sessionStorage.getItem('fusiongraph.key')") == API_KEY
    assert cookies_holding_the_key() == []
    # Eval reports and their files, which a cookie used to authorise, open with the key too.
    page.click("#nav-evals")
    page.click("#evals-list button:has-text('demo-20261201-120000')")
    assert page.frame_locator("#eval-frame").locator("h1").inner_text() == "Demo eval report"
    with page.context.expect_page() as opened:
        page.click("#evals-list button:has-text('summary.json')")
    opened.value.wait_for_load_state()
    assert "fusion" in opened.value.inner_text("body")
    opened.value.close()
    assert cookies_holding_the_key() == []
    # Another tab of the same browser does not have it: it asks.
    other = browser_context.new_page()
    try:
        other.goto(f"{server}/")
        other.wait_for_selector("#key-dialog[open]")
        assert other.evaluate("sessionStorage.getItem('fusiongraph.key')") is None
    finally:
        other.close()
