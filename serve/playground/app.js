// The fusiongraph playground: runs fusion through the server's OpenAI-compatible API and shows
// the deliberation. No build step: this module, the page, the stylesheet and vendored libraries.
import { modelFragment } from "./model_html.js";

const API = "/v1/chat/completions";
const THREAD_HEADER = "X-Fusion-Thread-Id";
const KEY_STORE = "fusiongraph.key";
const HISTORY_STORE = "fusiongraph.history";
const HISTORY_LIMIT = 20;
// Where earlier versions of the page also kept the key; removed at start-up.
const OLD_KEY_COOKIE = "fusiongraph_key=; path=/playground/api/evals; max-age=0; SameSite=Strict";
// Settings that have their own pickers above the generated form.
const OWN_PICKERS = new Set(["preset", "panel", "judge", "synthesizer"]);
const HLJS_LANGUAGES = ["python", "javascript", "typescript", "bash", "json", "sql", "yaml", "rust", "go", "xml"];
const HLJS_ALIASES = { py: "python", js: "javascript", ts: "typescript", sh: "bash", shell: "bash", yml: "yaml", html: "xml" };

// The page's own elements, found once at start-up, before any model output is on the page: a
// lookup by id after an answer is shown could find an element the answer brought (DOM clobbering).
const ui = pageElements(["code-copy", "code-dialog", "code-text", "code-title", "composer", "composer-input", "conversation", "eval-close", "eval-frame", "eval-view", "eval-view-title", "evals", "evals-list", "evals-source", "history", "history-list", "history-source", "judge-input", "key-dialog", "key-input", "key-reason", "model-description", "model-options", "model-select", "nav-evals", "nav-history", "nav-key", "new-chat", "panel-add", "panel-list", "send", "settings-box", "settings-fields", "status", "stop", "synthesizer-input"]);
const state = {
  info: null,
  models: [],
  key: sessionStorage.getItem(KEY_STORE) || "",
  messages: [],
  conversationId: newId(),
  threadId: null,
  turns: [],
  controller: null,
};

function pageElements(ids) {
  const found = {};
  for (const id of ids) {
    const el = document.getElementById(id);
    if (!el) throw new Error(`the page has no #${id}`);
    found[id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = el;
  }
  return Object.freeze(found);
}

function newId() {
  return `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

// ---------- small DOM helpers ----------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fmtNum(value, digits = 2) {
  return typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "—";
}

function fmtCost(value) {
  if (value === null || value === undefined) return "unknown";
  return value === 0 ? "$0" : `$${value < 0.01 ? value.toFixed(6) : value.toFixed(4)}`;
}

function setStatus(text, isError = false) {
  const el = ui.status;
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// ---------- Markdown with code highlighting ----------
let hljsPromise = null;
function loadHighlighter() {
  hljsPromise ||= (async () => {
    const hljs = (await import("./vendor/highlight-core.min.js")).default;
    await Promise.all(
      HLJS_LANGUAGES.map(async (name) => {
        const grammar = (await import(`./vendor/hljs/${name}.min.js`)).default;
        hljs.registerLanguage(name, grammar);
      }),
    );
    for (const [alias, name] of Object.entries(HLJS_ALIASES)) hljs.registerAliases(alias, { languageName: name });
    return hljs;
  })();
  return hljsPromise;
}

// Model text as HTML only through modelFragment (model_html.js); all else is set as text.
function renderMarkdown(el, text) {
  el.replaceChildren(modelFragment(text));
  const blocks = el.querySelectorAll("pre code");
  if (blocks.length) {
    loadHighlighter().then((hljs) => {
      for (const block of blocks) {
        if (!block.isConnected || block.dataset.highlighted) continue;
        const lang = [...block.classList].find((c) => c.startsWith("language-"))?.slice(9);
        if (lang && !hljs.getLanguage(lang)) block.classList.add("nohighlight");
        hljs.highlightElement(block);
      }
    });
  }
}

// ---------- the API ----------
class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body?.error?.message || JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function api(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) throw new HttpError(response.status, await errorMessage(response));
  return response.json();
}

function askForKey(reason) {
  ui.keyReason.textContent =
    reason ||
    "This server asks for an API key (FUSIONGRAPH_API_KEYS). It is sent as a bearer token and kept in this tab only (sessionStorage: gone when the tab closes; never in a cookie).";
  ui.keyInput.value = state.key;
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
  ui.keyInput.focus();
}

function saveKey(key) {
  state.key = key.trim();
  // sessionStorage: this tab only, gone when it closes; sent only as the Authorization header.
  if (state.key) sessionStorage.setItem(KEY_STORE, state.key);
  else sessionStorage.removeItem(KEY_STORE);
}

// ---------- settings form, derived from the graph's context schema ----------
function resolveRef(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return root.$defs?.[name] || {};
  }
  return schema || {};
}

function fieldKind(prop, root) {
  const options = (prop.anyOf || [prop]).map((s) => resolveRef(s, root)).filter((s) => s.type !== "null");
  if (options.length && options.every((s) => s.enum || s.const !== undefined)) {
    return { kind: "enum", values: options.flatMap((s) => s.enum || [s.const]) };
  }
  if (options.length === 1) {
    const s = options[0];
    if (s.type === "boolean") return { kind: "boolean" };
    if (s.type === "integer" || s.type === "number") return { kind: "number", schema: s };
    if (s.type === "string") return { kind: "string" };
    if (s.type === "array" && resolveRef(s.items, root).type === "string") return { kind: "list" };
  }
  return { kind: "json", allowsString: options.some((s) => s.type === "string") };
}

function buildSettingsForm(schema) {
  const box = ui.settingsFields;
  box.replaceChildren();
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    if (OWN_PICKERS.has(name)) continue;
    const { kind, values, schema: numeric, allowsString } = fieldKind(prop, schema);
    const id = `setting-${name}`;
    let input;
    if (kind === "enum") {
      input = h("select", { id }, h("option", { value: "", text: "(default)" }), values.map((v) => h("option", { value: JSON.stringify(v), text: String(v) })));
    } else if (kind === "boolean") {
      input = h("select", { id }, h("option", { value: "", text: "(default)" }), h("option", { value: "true", text: "true" }), h("option", { value: "false", text: "false" }));
    } else if (kind === "number") {
      input = h("input", { id, type: "number", step: numeric.type === "integer" ? "1" : "any", min: numeric.minimum ?? numeric.exclusiveMinimum, max: numeric.maximum, placeholder: "(default)" });
    } else if (kind === "string") {
      input = h("input", { id, type: "text", placeholder: "(default)" });
    } else if (kind === "list") {
      input = h("input", { id, type: "text", placeholder: "comma-separated" });
    } else {
      input = h("textarea", { id, rows: "2", placeholder: allowsString ? "text or JSON" : "JSON", spellcheck: "false" });
      if (allowsString) input.dataset.allowsString = "true";
    }
    input.dataset.setting = name;
    input.dataset.kind = kind;
    box.append(h("div", { class: "field" }, h("label", { for: id, text: name }), input, prop.description ? h("p", { class: "hint", text: prop.description }) : null));
  }
}

function settingValue(input) {
  const raw = input.value.trim();
  if (raw === "") return undefined;
  switch (input.dataset.kind) {
    case "enum":
      return JSON.parse(raw);
    case "boolean":
      return raw === "true";
    case "number":
      return Number(raw);
    case "list":
      return raw.split(",").map((s) => s.trim()).filter(Boolean);
    case "json":
      try {
        return JSON.parse(raw);
      } catch {
        if (input.dataset.allowsString) return raw; // e.g. a model spec written as provider:model
        throw new Error(`the setting ${input.dataset.setting} is not valid JSON`);
      }
    default:
      return raw;
  }
}

function specValue(text) {
  const raw = text.trim();
  if (!raw) return undefined;
  if (raw.startsWith("{")) {
    try {
      return JSON.parse(raw);
    } catch {
      throw new Error(`not a JSON model spec: ${raw}`);
    }
  }
  return raw;
}

function collectFusion() {
  const fusion = {};
  const panel = [...ui.panelList.querySelectorAll("input")].map((i) => specValue(i.value)).filter(Boolean);
  if (panel.length) fusion.panel = panel;
  for (const [role, input] of [["judge", ui.judgeInput], ["synthesizer", ui.synthesizerInput]]) {
    const value = specValue(input.value);
    if (value) fusion[role] = value;
  }
  for (const input of ui.settingsFields.querySelectorAll("[data-setting]")) {
    const value = settingValue(input);
    if (value !== undefined) fusion[input.dataset.setting] = value;
  }
  return fusion;
}

function addPanelRow(value = "") {
  const list = ui.panelList;
  const index = list.children.length + 1;
  const input = h("input", { list: "model-options", value, "aria-label": `Panel model ${index}`, placeholder: "provider:model or JSON" });
  const remove = h("button", { type: "button", class: "small", "aria-label": `Remove panel model ${index}`, text: "×", onclick: () => { row.remove(); } });
  const row = h("li", {}, input, remove);
  list.append(row);
  return input;
}

function fillModelOptions() {
  const options = new Set();
  for (const preset of Object.values(state.info?.presets || {})) {
    for (const spec of [...preset.panel, preset.judge, preset.synthesizer]) if (spec) options.add(spec);
  }
  ui.modelOptions.replaceChildren(...[...options].map((v) => h("option", { value: v })));
}

function describeModel() {
  const card = state.models.find((m) => m.id === ui.modelSelect.value);
  const preset = card?.fusion?.preset && state.info?.presets?.[card.fusion.preset];
  ui.modelDescription.textContent = card
    ? `${card.fusion?.description || ""}${preset ? ` Panel: ${preset.panel.join(", ")}.` : ""}${preset?.cost ? ` Cost: ${preset.cost}.` : ""}`
    : "";
}

// ---------- one run's view ----------
const STATE_LABEL = { waiting: "waiting", running: "running", finished: "answered", failed: "failed", skipped: "not asked", cancelled: "cancelled" };

class RunView {
  constructor(container, request) {
    this.request = request;
    this.events = [];
    this.columns = new Map();
    this.fusion = null;
    this.answer = "";
    this.started = performance.now();
    this.ticks = 0;
    this.root = h("section", { class: "run", "aria-label": "Fusion run" });
    this.decisions = h("ul", { class: "decisions", "aria-label": "Decisions during the run" });
    this.decisions.hidden = true;
    this.panelGrid = h("div", { class: "panel-grid", role: "list", "aria-label": "Panel" });
    this.judgeCard = h("div", { class: "node-card judge", dataset: { state: "waiting" } }, h("h4", { text: "Judge" }), h("p", { class: "node-state", text: "waiting for the panel" }));
    this.answerEl = h("div", { class: "answer markdown", "aria-label": "Final answer" });
    this.analysisEl = h("div", { class: "analysis" });
    this.timelineEl = h("div", { class: "timeline" });
    this.costEl = h("div", { class: "cost" });
    this.actions = h(
      "div",
      { class: "run-actions" },
      h("button", { type: "button", text: "Copy as curl", onclick: () => showCode("curl", this.request) }),
      h("button", { type: "button", text: "Copy as Python", onclick: () => showCode("python", this.request) }),
    );
    this.root.append(
      this.decisions,
      h("h3", { class: "visually-hidden", text: "Panel" }),
      this.panelGrid,
      this.judgeCard,
      h("h3", { class: "section-title", text: "Answer" }),
      this.answerEl,
      this.analysisEl,
      this.timelineEl,
      this.costEl,
      this.actions,
    );
    this.root.addEventListener("click", (event) => {
      const button = event.target.closest("[data-pick]");
      if (button) this.highlight(button.dataset.pick);
    });
    container.append(this.root);
    this.timer = setInterval(() => this.tick(), 100);
  }

  column(panelist, model) {
    let col = this.columns.get(panelist);
    if (!col) {
      const el = h("article", { class: "panelist", role: "listitem", dataset: { panelist, state: "waiting" }, tabindex: "-1" });
      const name = h("button", { type: "button", class: "pick", dataset: { pick: panelist }, "aria-pressed": "false", text: panelist });
      const modelEl = h("span", { class: "model" });
      const stateEl = h("span", { class: "badge" });
      const elapsed = h("span", { class: "elapsed" });
      const tools = h("span", { class: "tools" });
      const reason = h("p", { class: "reason", role: "alert" });
      reason.hidden = true;
      const sources = h("ul", { class: "sources" });
      const answer = h("div", { class: "panel-answer markdown" });
      el.append(h("header", {}, name, modelEl), h("p", { class: "meta" }, stateEl, elapsed, tools), reason, answer, sources);
      col = { el, modelEl, stateEl, elapsed, tools, reason, sources, answer, state: "waiting", startedAt: null, latency: null };
      this.columns.set(panelist, col);
      const ids = [...this.columns.keys()].sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
      this.panelGrid.replaceChildren(...ids.map((id) => this.columns.get(id).el));
      this.setState(col, "waiting");
    }
    if (model) col.modelEl.textContent = model;
    return col;
  }

  setState(col, value) {
    col.state = value;
    col.el.dataset.state = value;
    col.stateEl.textContent = STATE_LABEL[value] || value;
  }

  tick() {
    const now = performance.now();
    for (const col of this.columns.values()) {
      if (col.state === "running" && col.startedAt !== null) col.elapsed.textContent = `${((now - col.startedAt) / 1000).toFixed(1)} s`;
      else if (col.latency !== null) col.elapsed.textContent = `${fmtNum(col.latency, 2)} s`;
    }
    // The timeline grows while the run goes (4 times a second), on the server's clock.
    if (this.clockOffset !== undefined && !this.fusion && ++this.ticks % 3 === 0) {
      this.renderTimeline(null, Date.now() / 1000 - this.clockOffset);
    }
    if (this.judgeStartedAt && this.judgeCard.dataset.state === "running") {
      this.judgeCard.querySelector(".node-state").textContent = `comparing ${this.judgeAnswers ?? ""} answers… ${((now - this.judgeStartedAt) / 1000).toFixed(1)} s`;
    }
  }

  onProgress(event) {
    this.events.push(event);
    const kind = event.event;
    if (kind === "run_started") {
      if (typeof event.t === "number") this.clockOffset = Date.now() / 1000 - event.t;
      (event.panel || []).forEach((model, i) => this.column(`p${i + 1}`, model));
      setStatus("The panel is answering…");
    } else if (kind === "panelist_started") {
      const col = this.column(event.panelist, event.model);
      col.startedAt = performance.now();
      this.setState(col, "running");
    } else if (kind === "panelist_finished") {
      const col = this.column(event.panelist, event.model);
      col.latency = event.latency_s;
      col.tools.textContent = `${event.tool_calls ?? 0} tool calls`;
      this.setState(col, "finished");
    } else if (kind === "panelist_failed") {
      const col = this.column(event.panelist, event.model);
      col.latency = event.latency_s;
      this.setState(col, "failed");
      this.showFailure(col, event.reason, event.message);
    } else if (kind === "judge_started") {
      this.judgeStartedAt = performance.now();
      this.judgeAnswers = event.answers;
      this.judgeCard.dataset.state = "running";
      this.judgeCard.querySelector("h4").textContent = `Judge · ${event.model || ""}`;
      setStatus("The judge is comparing the answers…");
    } else if (kind === "judge_finished") {
      this.judgeCard.dataset.state = event.ok ? "finished" : "failed";
      this.judgeCard.querySelector(".node-state").textContent = event.ok
        ? `compared in ${fmtNum(event.latency_s)} s`
        : `failed (${event.error?.reason || "error"}): ${event.error?.message || ""} — synthesis works from the raw answers`;
    } else if (kind === "synthesis_started") {
      setStatus("Writing the answer…");
    } else if (kind === "judge_checked") {
      this.judgeCard.append(h("p", { class: "hint", text: `checked the contradictions: ${event.tool_calls ?? 0} tool calls, ${event.sources ?? 0} sources${event.error ? ` (${event.error.reason || event.error})` : ""}` }));
    } else if (kind !== "synthesis_finished") {
      // Decisions a strategy reports (aggregation chosen, cascade, early exit) and any event a
      // newer server adds: listed as they come.
      this.decisions.hidden = false;
      this.decisions.append(h("li", {}, h("strong", { text: kind.replaceAll("_", " ") }), ` ${summarise(event)}`));
    }
  }

  showFailure(col, reason, message) {
    col.reason.hidden = false;
    col.reason.textContent = `${reason || "failed"}${message ? `: ${message}` : ""}`;
  }

  onToken(text) {
    this.answer += text;
    if (!this.renderQueued) {
      this.renderQueued = true;
      requestAnimationFrame(() => {
        this.renderQueued = false;
        renderMarkdown(this.answerEl, this.answer);
      });
    }
  }

  finish(fusion, answerText) {
    clearInterval(this.timer);
    if (answerText !== undefined) this.answer = answerText;
    renderMarkdown(this.answerEl, this.answer);
    this.fusion = fusion || null;
    if (!fusion) return;
    for (const entry of fusion.panel || []) {
      const col = this.column(entry.panelist, entry.model);
      col.latency = entry.latency_s ?? col.latency;
      this.setState(col, "finished");
      col.tools.textContent = `${entry.tool_calls ?? 0} tool calls${entry.cached ? " · cached" : ""}`;
      renderMarkdown(col.answer, entry.content);
      col.sources.replaceChildren(
        ...(entry.sources || []).map((s) => h("li", {}, h("a", { href: safeUrl(s.url), target: "_blank", rel: "noopener noreferrer", text: s.title || s.url }))),
      );
    }
    for (const entry of fusion.failed_models || []) {
      const col = this.column(entry.panelist, entry.model);
      col.latency = entry.latency_s ?? col.latency;
      this.setState(col, "failed");
      this.showFailure(col, entry.reason, entry.message);
    }
    for (const col of this.columns.values()) {
      // A panelist that never ran (a cascade that agreed early, a run that stopped first).
      if (col.state === "waiting" || col.state === "running") this.setState(col, "skipped");
    }
    this.tick();
    const judge = fusion.judge || {};
    if (!judge.model && !judge.latency_s) {
      this.judgeCard.dataset.state = "skipped";
      this.judgeCard.querySelector(".node-state").textContent = fusion.aggregation?.verify?.judge
        ? `no analysis: verify decided by running the answers (the judge wrote its ${fusion.aggregation.verify.judge.wrote})`
        : "not called (the aggregation strategy answered without it)";
      this.renderAnalysis(fusion);
      this.renderTimeline(fusion);
      this.renderCost(fusion);
      return;
    }
    this.judgeCard.dataset.state = judge.ok ? "finished" : "failed";
    this.judgeCard.querySelector("h4").textContent = `Judge · ${judge.model || ""}`;
    this.judgeCard.querySelector(".node-state").textContent = judge.ok
      ? `compared in ${fmtNum(judge.latency_s)} s${judge.fallbacks?.length ? ` (fallbacks: ${judge.fallbacks.join(", ")})` : ""}`
      : `failed (${judge.error?.reason || "error"}): ${judge.error?.message || ""}${fusion.degraded ? " — synthesis worked from the raw answers" : ""}`;
    this.renderAnalysis(fusion);
    this.renderTimeline(fusion);
    this.renderCost(fusion);
  }

  fail(message) {
    clearInterval(this.timer);
    this.answerEl.replaceChildren(h("p", { class: "reason", role: "alert", text: message }));
    for (const col of this.columns.values()) if (col.state === "running" || col.state === "waiting") this.setState(col, "cancelled");
  }

  panelists() {
    const ids = new Set(this.columns.keys());
    return [...ids].sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)));
  }

  pick(panelist) {
    return h("button", { type: "button", class: "pick", dataset: { pick: panelist }, "aria-pressed": "false", text: panelist });
  }

  highlight(panelist) {
    const on = this.highlighted !== panelist;
    this.highlighted = on ? panelist : null;
    for (const el of this.root.querySelectorAll("[data-panelist]")) el.classList.toggle("highlight", on && el.dataset.panelist === panelist);
    for (const el of this.root.querySelectorAll("[data-pick]")) el.setAttribute("aria-pressed", String(on && el.dataset.pick === panelist));
    const col = this.columns.get(panelist);
    if (on && col) col.el.scrollIntoView({ block: "nearest", inline: "nearest", behavior: "smooth" });
  }

  renderAnalysis(fusion) {
    const analysis = fusion.analysis;
    const parts = [h("h3", { class: "section-title", text: "Analysis" })];
    if (fusion.aggregation) parts.push(renderAggregation(fusion.aggregation, (p) => this.pick(p)));
    if (!analysis) {
      parts.push(h("p", { class: "hint", text: fusion.degraded ? "No analysis: the judge failed and the synthesizer read the raw answers." : "No analysis in this run." }));
      this.analysisEl.replaceChildren(...parts);
      return;
    }
    const ids = this.panelists();
    parts.push(h("h4", { text: "Consensus" }), listOrNone(analysis.consensus, (c) => h("li", { text: c })));

    parts.push(h("h4", { text: "Contradictions" }));
    if (analysis.contradictions?.length) {
      const head = h("tr", {}, h("th", { scope: "col", text: "Topic" }), ids.map((id) => h("th", { scope: "col", dataset: { panelist: id } }, this.pick(id))));
      const rows = analysis.contradictions.map((c) => {
        const stances = new Map((c.stances || []).map((s) => [s.panelist, s.stance]));
        const topicCell = h("th", { scope: "row" }, c.topic);
        if (c.checked) topicCell.append(h("span", { class: "badge checked", title: "the judge looked this dispute up", text: typeof c.checked === "string" ? c.checked : "checked" }));
        if (c.sources?.length) topicCell.append(h("ul", { class: "sources" }, c.sources.map((s) => h("li", {}, h("a", { href: safeUrl(s.url || s), target: "_blank", rel: "noopener noreferrer", text: s.title || s.url || s })))));
        return h("tr", {}, topicCell, ids.map((id) => h("td", { dataset: { panelist: id }, class: stances.has(id) ? "stance" : "empty", text: stances.get(id) ?? "—" })));
      });
      parts.push(h("div", { class: "table-wrap" }, h("table", { class: "matrix contradictions" }, h("caption", { class: "visually-hidden", text: "Contradictions: topic by panelist" }), h("thead", {}, head), h("tbody", {}, rows))));
    } else parts.push(h("p", { class: "hint", text: "None." }));

    parts.push(h("h4", { text: "Partial coverage" }));
    if (analysis.partial_coverage?.length) {
      const head = h("tr", {}, h("th", { scope: "col", text: "Point" }), ids.map((id) => h("th", { scope: "col", dataset: { panelist: id } }, this.pick(id))));
      const rows = analysis.partial_coverage.map((p) => {
        const who = new Set(p.panelists || []);
        return h("tr", {}, h("th", { scope: "row", text: p.point }), ids.map((id) => h("td", { dataset: { panelist: id }, class: who.has(id) ? "covered" : "empty", "aria-label": who.has(id) ? "covered" : "not covered", text: who.has(id) ? "✓" : "" })));
      });
      parts.push(h("div", { class: "table-wrap" }, h("table", { class: "matrix coverage" }, h("caption", { class: "visually-hidden", text: "Partial coverage: point by panelist" }), h("thead", {}, head), h("tbody", {}, rows))));
    } else parts.push(h("p", { class: "hint", text: "None." }));

    parts.push(h("h4", { text: "Unique insights" }), listOrNone(analysis.unique_insights, (u) => h("li", { dataset: { panelist: u.panelist } }, this.pick(u.panelist), " ", u.insight)));
    parts.push(h("h4", { text: "Blind spots" }), listOrNone(analysis.blind_spots, (b) => h("li", { text: b })));
    this.analysisEl.replaceChildren(...parts);
  }

  // Bars on one axis (seconds since the run started). `now` (server time) while the run goes:
  // what is still running ends there.
  spans(fusion, now) {
    const byKind = (kind) => this.events.filter((e) => e.event === kind);
    const start = byKind("run_started")[0]?.t;
    const open = (t) => (now === undefined ? t : now);
    const spans = [];
    if (start !== undefined) {
      for (const s of byKind("panelist_started")) {
        const end = this.events.find((e) => (e.event === "panelist_finished" || e.event === "panelist_failed") && e.panelist === s.panelist);
        spans.push({ id: s.panelist, label: `${s.panelist} ${s.model || ""}`, from: s.t - start, to: (end ? end.t : open(s.t)) - start, failed: end?.event === "panelist_failed", running: !end });
      }
      spans.sort((a, b) => Number(a.id.slice(1)) - Number(b.id.slice(1)));
      const js = byKind("judge_started")[0];
      const jf = byKind("judge_finished")[0];
      if (js) spans.push({ id: "judge", label: "judge", from: js.t - start, to: (jf ? jf.t : open(js.t)) - start, failed: jf && !jf.ok, running: !jf });
      const ss = byKind("synthesis_started")[0];
      const sf = byKind("synthesis_finished")[0];
      if (ss) spans.push({ id: "synthesis", label: "synthesis", from: ss.t - start, to: (sf ? sf.t : now ?? ss.t + (fusion?.synthesizer?.latency_s || 0)) - start, running: !sf });
    } else {
      // A reopened run without its events: panelists from 0, then the judge, then synthesis.
      const entries = [...(fusion.panel || []), ...(fusion.failed_models || [])];
      let panelEnd = 0;
      for (const e of entries) {
        const latency = e.latency_s || 0;
        panelEnd = Math.max(panelEnd, latency);
        spans.push({ id: e.panelist, label: `${e.panelist} ${e.model || ""}`, from: 0, to: latency, failed: "reason" in e });
      }
      spans.sort((a, b) => Number(a.id.slice(1)) - Number(b.id.slice(1)));
      const judgeLatency = fusion.judge?.latency_s || 0;
      if (fusion.judge?.model) spans.push({ id: "judge", label: "judge", from: panelEnd, to: panelEnd + judgeLatency, failed: !fusion.judge.ok });
      if (fusion.synthesizer?.latency_s !== null && fusion.synthesizer?.latency_s !== undefined) {
        spans.push({ id: "synthesis", label: "synthesis", from: panelEnd + judgeLatency, to: panelEnd + judgeLatency + fusion.synthesizer.latency_s });
      }
    }
    if (now !== undefined) return spans; // the critical path is known once the run is over
    // The critical path: the panelist the judge waited for, the judge, the synthesis.
    const judge = spans.find((s) => s.id === "judge");
    const panel = spans.filter((s) => s.id !== "judge" && s.id !== "synthesis");
    const waitedFor = panel.filter((s) => !judge || s.to <= judge.from + 0.05).sort((a, b) => b.to - a.to)[0];
    for (const s of spans) s.critical = s === waitedFor || s.id === "judge" || s.id === "synthesis";
    return spans;
  }

  renderTimeline(fusion, now) {
    const spans = this.spans(fusion, now);
    if (!spans.length) return;
    const total = Math.max(...spans.map((s) => s.to), 0.001);
    const rows = spans.map((s) => {
      const bar = h("div", {
        class: `bar${s.critical ? " critical" : ""}${s.failed ? " failed" : ""}${now !== undefined && s.running ? " running" : ""}`,
        title: `${s.label}: ${fmtNum(s.from)}–${fmtNum(s.to)} s`,
        "aria-label": `${s.label}: from ${fmtNum(s.from)} s to ${fmtNum(s.to)} s${s.critical ? ", on the critical path" : ""}${s.failed ? ", failed" : ""}`,
        role: "img",
      });
      bar.style.left = `${(s.from / total) * 100}%`;
      bar.style.width = `${Math.max(((s.to - s.from) / total) * 100, 0.5)}%`;
      return h("div", { class: "tl-row", dataset: /^p\d+$/.test(s.id) ? { panelist: s.id } : {} }, h("span", { class: "tl-label", text: s.label }), h("div", { class: "tl-track" }, bar), h("span", { class: "tl-time", text: `${fmtNum(s.to - s.from)} s` }));
    });
    const axis = h("div", { class: "tl-axis", "aria-hidden": "true" }, [0, 0.25, 0.5, 0.75, 1].map((f) => {
      const tick = h("span", { text: `${fmtNum(total * f, 1)} s` });
      tick.style.left = `${f * 100}%`;
      return tick;
    }));
    this.timelineEl.replaceChildren(
      h("h3", { class: "section-title", text: "Timeline" }),
      h("p", { class: "hint" }, h("span", { class: "legend critical" }), " critical path (what the run waited for) ", h("span", { class: "legend failed" }), " failed"),
      h("div", { class: "tl" }, rows, h("div", { class: "tl-row" }, h("span", { class: "tl-label" }), axis, h("span", { class: "tl-time" }))),
    );
  }

  renderCost(fusion) {
    const usage = fusion.usage || {};
    const cost = fusion.cost_usd || {};
    const row = (node, model, u, c, latency, attrs = {}) =>
      h("tr", attrs, h("th", { scope: "row", text: node }), h("td", { text: model || "" }), h("td", { class: "num", text: u?.input_tokens ?? 0 }), h("td", { class: "num", text: u?.output_tokens ?? 0 }), h("td", { class: "num", text: u?.total_tokens ?? 0 }), h("td", { class: "num", text: fmtCost(c) }), h("td", { class: "num", text: latency === null || latency === undefined ? "—" : `${fmtNum(latency)} s` }));
    const rows = [];
    for (const e of fusion.panel || []) rows.push(row(e.panelist, e.model, e.usage, e.cost_usd, e.latency_s, { dataset: { panelist: e.panelist } }));
    for (const e of fusion.failed_models || []) rows.push(row(`${e.panelist} (failed)`, e.model, e.usage, e.cost_usd, e.latency_s, { dataset: { panelist: e.panelist } }));
    rows.push(row("judge", fusion.judge?.model, usage.judge, cost.judge, fusion.judge?.latency_s));
    const verifyJudge = fusion.aggregation?.verify?.judge; // verify's call: tests or a program
    if (verifyJudge) rows.push(row(`verify (${verifyJudge.wrote})`, verifyJudge.model, usage.verify, cost.verify, verifyJudge.latency_s));
    rows.push(row("synthesis", fusion.synthesizer?.model, usage.synthesis, cost.synthesis, fusion.synthesizer?.latency_s));
    const total = row("total", "", usage.total, cost.total, null, { class: "total" });
    const saved = fusion.aggregation?.saved;
    this.costEl.replaceChildren(
      h("h3", { class: "section-title", text: "Cost and tokens" }),
      h("div", { class: "table-wrap" }, h("table", { class: "cost-table" }, h("thead", {}, h("tr", {}, ["Node", "Model", "Input", "Output", "Total", "Cost", "Time"].map((t) => h("th", { scope: "col", text: t })))), h("tbody", {}, rows), h("tfoot", {}, total))),
      fusion.settings ? h("details", { class: "settings-used" }, h("summary", { text: `Settings this run used${fusion.preset ? ` (preset ${fusion.preset})` : ""}` }), h("dl", {}, Object.entries(fusion.settings).flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v === null ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v) })]))) : "",
      saved?.calls ? h("p", { class: "hint", text: `Saved by the aggregation strategy: ${saved.calls ?? 0} calls, ${fmtCost(saved.cost_usd)}.` }) : "",
    );
  }
}

function summarise(event) {
  const { event: _kind, t: _t, object: _object, ...rest } = event;
  return Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
}

function safeUrl(url) {
  try {
    const parsed = new URL(String(url), location.href);
    return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : "#";
  } catch {
    return "#";
  }
}

function listOrNone(items, render) {
  return items?.length ? h("ul", {}, items.map(render)) : h("p", { class: "hint", text: "None." });
}

function renderAggregation(agg, pick) {
  const rows = [];
  const add = (label, value) => {
    if (value === undefined || value === null) return;
    rows.push(h("dt", { text: label }), h("dd", {}, value instanceof Node ? value : typeof value === "object" ? JSON.stringify(value) : String(value)));
  };
  add("requested", agg.requested);
  add("applied", agg.applied);
  add("reason", agg.reason);
  add("early exit", agg.early_exit);
  if (agg.selected) add("selected", h("span", {}, pick(agg.selected.panelist), " ", agg.selected.reason || ""));
  if (agg.vote) add("vote", renderVote(agg.vote, pick));
  if (agg.verify) add("verify", renderVerify(agg.verify, pick));
  add("cascade", agg.cascade);
  if (agg.calls) add("calls", `${agg.calls.made} made of ${agg.calls.full_path} on the full path`);
  for (const [k, v] of Object.entries(agg)) if (!["requested", "applied", "reason", "early_exit", "selected", "vote", "verify", "cascade", "calls", "saved"].includes(k)) add(k, v);
  // The default path (synthesis, as requested) folds away; a strategy that decided shows open.
  const box = h("details", { class: "aggregation" }, h("summary", {}, h("strong", { text: "Aggregation" }), ` · ${agg.applied || "?"}${agg.final && !["synthesis", agg.applied].includes(agg.final) ? ` → ${agg.final}` : ""} (${agg.reason || "requested"})`), h("dl", {}, rows));
  box.open = (agg.applied && agg.applied !== "synthesize") || agg.requested !== "synthesize";
  return box;
}

function renderVote(vote, pick) {
  if (typeof vote !== "object" || !vote.answers) return JSON.stringify(vote);
  const counts = Object.entries(vote.counts || {}).map(([answer, n]) => `${answer} × ${n}`).join(", ");
  return h(
    "span",
    { class: "vote" },
    vote.winner !== undefined && vote.winner !== null ? h("strong", { text: `${vote.winner}` }) : "no winner",
    vote.decided_by ? ` (${vote.decided_by}${vote.tied ? `, tied: ${vote.tied}` : ""})` : "",
    counts ? ` · ${counts}` : "",
    h("ul", { class: "vote-answers" }, Object.entries(vote.answers).map(([panelist, answer]) => h("li", { dataset: { panelist } }, pick(panelist), ` ${answer ?? "no answer"}`))),
  );
}

// verify's record: for code, the matrix of candidates by tests (each cell: passed or not, and
// what the candidate returned); for math, each answer's final value against the judge's program.
// Every string is model text: set as textContent, never parsed as HTML.
function renderVerify(checked, pick) {
  const box = h("div", { class: "verify" });
  if (checked.error) box.append(h("p", { class: "hint", text: checked.error }));
  const mark = (passed) => h("span", { class: passed ? "pass" : "fail", text: passed ? "✓" : "✗" });
  if (checked.kind === "code" && checked.candidates && Object.keys(checked.candidates).length) {
    const cases = checked.tests?.cases || [];
    box.append(h("p", { text: `${cases.length} tests from the ${checked.tests?.source ?? "?"}` }));
    const head = h("tr", {}, h("th", { text: "candidate" }), cases.map((c, i) => h("th", { title: c.reasoning || "", text: `${i + 1}. ${c.call ?? ""}${c.expected ? ` → ${c.expected}` : ""}` })), h("th", { text: "passed" }));
    const rows = Object.entries(checked.candidates).map(([label, cand]) => {
      const passed = cand.passed || [];
      const score = `${passed.filter(Boolean).length}/${passed.length}${["completed", "passed", "failed"].includes(cand.ran) ? "" : ` (${cand.ran})`}`;
      return h(
        "tr",
        { class: label === checked.winner ? "winner" : "", dataset: { panelist: label } },
        h("th", {}, pick(label)),
        passed.map((ok, i) => h("td", { class: ok ? "pass" : "fail" }, mark(ok), ` ${(cand.outputs || [])[i] ?? ""}`)),
        h("td", { text: score }),
      );
    });
    box.append(h("table", { class: "verify-matrix" }, h("thead", {}, head), h("tbody", {}, rows)));
    const groups = (checked.groups || []).map((g) => g.join(", ")).join(" | ");
    if (groups) box.append(h("p", { class: "hint", text: `behaviour groups: ${groups}` }));
  } else if (checked.kind === "math" && checked.finals) {
    const rows = Object.entries(checked.finals).map(([label, value]) => {
      const ok = (checked.confirmed || []).includes(label);
      return h("tr", { class: label === checked.winner ? "winner" : "", dataset: { panelist: label } }, h("th", {}, pick(label)), h("td", { text: value ?? "(none found)" }), h("td", { class: ok ? "pass" : "fail" }, mark(ok)));
    });
    const head = h("tr", {}, ["panelist", "final answer", "confirmed"].map((t) => h("th", { text: t })));
    box.append(h("table", { class: "verify-matrix" }, h("thead", {}, head), h("tbody", {}, rows)));
    box.append(h("pre", { class: "verify-program", text: checked.program || "" }));
    const out = checked.program_output || {};
    box.append(h("p", { text: `program output (${out.ran ?? "?"}): ${(out.stdout || out.stderr || "").trim()}` }));
    if (checked.disagreement) box.append(h("p", { class: "hint", text: "The program and the vote disagree." }));
  }
  box.append(h("p", {}, h("strong", { text: "why: " }), checked.why || ""));
  box.append(h("p", { class: "hint", text: `sandbox: ${fmtNum(checked.sandbox_s ?? 0)} s` }));
  return box;
}

// ---------- copy as curl / Python ----------
function shareableBody(request) {
  const body = structuredClone(request.body);
  body.stream = false;
  delete body.stream_options;
  if (body.fusion) {
    delete body.fusion.progress;
    if (!Object.keys(body.fusion).length) delete body.fusion;
  }
  return body;
}

function codeFor(kind, request) {
  const body = shareableBody(request);
  const base = location.origin;
  const auth = state.info?.auth_required;
  if (kind === "curl") {
    const json = JSON.stringify(body, null, 2).replaceAll("'", "'\\''");
    return [`curl -s ${base}${API} \\`, "  -H 'content-type: application/json' \\", auth ? '  -H "Authorization: Bearer $FUSIONGRAPH_API_KEY" \\' : null, `  -d '${json}'`].filter(Boolean).join("\n");
  }
  const { model, messages, fusion, ...rest } = body;
  delete rest.stream;
  const py = (v) => JSON.stringify(v, null, 4).replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None");
  const extra = Object.entries(rest).map(([k, v]) => `    ${k}=${py(v)},\n`).join("");
  return (
    `import os\nfrom openai import OpenAI\n\n` +
    `client = OpenAI(base_url="${base}/v1", api_key=${auth ? 'os.environ["FUSIONGRAPH_API_KEY"]' : '"unused"'})\n` +
    `completion = client.chat.completions.create(\n    model=${JSON.stringify(model)},\n    messages=${py(messages).replace(/\n/g, "\n    ")},\n${extra}` +
    (fusion ? `    extra_body={"fusion": ${py(fusion).replace(/\n/g, "\n    ")}},\n` : "") +
    `)\nprint(completion.choices[0].message.content)\nfusion = completion.model_extra["fusion"]  # panel, analysis, usage, cost\n`
  );
}

function showCode(kind, request) {
  ui.codeTitle.textContent = kind === "curl" ? "Request as curl" : "Request as Python (openai SDK)";
  ui.codeText.value = codeFor(kind, request);
  ui.codeDialog.showModal();
  ui.codeText.focus();
  ui.codeText.select();
}

// ---------- the conversation ----------
function addUserTurn(text) {
  const el = h("div", { class: "turn user" }, h("h2", { class: "visually-hidden", text: "You" }), h("p", { class: "who", text: "You" }), h("div", { class: "bubble", text }));
  ui.conversation.append(el);
  return el;
}

function addAssistantTurn(request) {
  const el = h("div", { class: "turn assistant" }, h("h2", { class: "visually-hidden", text: "Fusion" }), h("p", { class: "who", text: `Fusion · ${request.body.model}` }));
  ui.conversation.append(el);
  return new RunView(el, request);
}

function parseSse(buffer, onData, onComment) {
  const lines = buffer.split(/\r?\n/);
  const rest = lines.pop();
  for (const line of lines) {
    if (line.startsWith(":")) onComment(line.slice(1).trim());
    else if (line.startsWith("data:")) onData(line.slice(5).trim());
  }
  return rest;
}

async function send(text) {
  let fusion;
  try {
    fusion = collectFusion();
  } catch (error) {
    setStatus(error.message, true);
    return;
  }
  state.messages.push({ role: "user", content: text });
  const body = {
    model: ui.modelSelect.value,
    messages: state.messages.map((m) => ({ role: m.role, content: m.content })),
    stream: true,
    stream_options: { include_usage: true },
    fusion: { ...fusion, progress: true },
  };
  const request = { body };
  addUserTurn(text);
  const view = addAssistantTurn(request);
  view.root.scrollIntoView({ block: "start" });
  setBusy(true);
  setStatus("Starting the run…");
  const controller = new AbortController();
  state.controller = controller;
  let fusionRecord = null;
  let failed = null;
  try {
    const headers = { "content-type": "application/json", ...authHeaders() };
    if (state.threadId) headers[THREAD_HEADER] = state.threadId;
    const response = await fetch(API, { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      fusionRecord = error?.error?.fusion || null;
      throw new HttpError(response.status, error?.error?.message || `${response.status} ${response.statusText}`);
    }
    state.threadId = response.headers.get(THREAD_HEADER) || state.threadId;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const onComment = (text) => {
      if (!text.startsWith("{")) return;
      try {
        const event = JSON.parse(text);
        if (event.object === "fusion.progress") view.onProgress(event);
      } catch {
        /* a comment that is not ours */
      }
    };
    const onData = (data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        failed = chunk.error.message || "the run failed";
        fusionRecord = chunk.error.fusion || fusionRecord;
        return;
      }
      const choice = chunk.choices?.[0];
      if (choice?.delta?.content) view.onToken(choice.delta.content);
      if (chunk.fusion) fusionRecord = chunk.fusion;
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = parseSse(buffer + decoder.decode(value, { stream: true }), onData, onComment);
    }
    parseSse(`${buffer}\n`, onData, onComment);
  } catch (error) {
    failed = error.name === "AbortError" ? "stopped" : error.message;
    if (error.status === 401) askForKey(`The server refused the key: ${error.message}`);
  } finally {
    setBusy(false);
    state.controller = null;
  }
  if (failed) {
    state.messages.pop();
    if (fusionRecord?.panel || fusionRecord?.failed_models) view.finish(fusionRecord, "");
    view.fail(failed);
    setStatus(`The run failed: ${failed}`, true);
    return;
  }
  view.finish(fusionRecord);
  state.messages.push({ role: "assistant", content: view.answer });
  state.turns.push({ user: text, answer: view.answer, fusion: fusionRecord, events: view.events, request });
  saveHistory();
  const cost = fusionRecord?.cost_usd?.total;
  setStatus(`Done: ${fusionRecord?.panel?.length ?? 0} answers, ${fusionRecord?.usage?.total?.total_tokens ?? 0} tokens, ${fmtCost(cost)}.`);
}

function setBusy(busy) {
  ui.send.disabled = busy;
  ui.stop.hidden = !busy;
}

function resetConversation() {
  state.messages = [];
  state.turns = [];
  state.threadId = null;
  state.conversationId = newId();
  ui.conversation.replaceChildren();
  setStatus("");
}

// ---------- history ----------
function loadLocalHistory() {
  try {
    return JSON.parse(localStorage.getItem(HISTORY_STORE) || "[]");
  } catch {
    return [];
  }
}

function saveHistory() {
  const items = loadLocalHistory().filter((c) => c.id !== state.conversationId);
  items.unshift({ id: state.conversationId, title: state.turns[0]?.user?.slice(0, 120) || "", updated: new Date().toISOString(), threadId: state.threadId, model: ui.modelSelect.value, turns: state.turns });
  while (items.length > HISTORY_LIMIT) items.pop();
  for (;;) {
    try {
      localStorage.setItem(HISTORY_STORE, JSON.stringify(items));
      break;
    } catch {
      if (items.length <= 1) break; // storage full: keep what fits
      items.pop();
    }
  }
  if (!ui.history.hidden) renderHistory();
}

function reopen(turns, { id, threadId } = {}) {
  resetConversation();
  state.conversationId = id || newId();
  state.threadId = threadId || null;
  for (const turn of turns) {
    addUserTurn(turn.user);
    const request = turn.request || { body: { model: ui.modelSelect.value, messages: [...state.messages, { role: "user", content: turn.user }], stream: false } };
    const view = addAssistantTurn(request);
    for (const event of turn.events || []) view.onProgress(event);
    view.finish(turn.fusion, turn.answer);
    state.messages.push({ role: "user", content: turn.user }, { role: "assistant", content: turn.answer });
    state.turns.push(turn);
  }
  setStatus(`Reopened: ${turns.length} turn${turns.length === 1 ? "" : "s"}.`);
}

function turnsOfThread(messages) {
  const turns = [];
  for (let i = 0; i < messages.length; i++) {
    if (messages[i].role !== "user") continue;
    const reply = messages[i + 1]?.role === "assistant" ? messages[i + 1] : null;
    turns.push({ user: messages[i].content, answer: reply?.content || "", fusion: reply?.fusion || null, events: [] });
  }
  return turns;
}

async function renderHistory() {
  const list = ui.historyList;
  list.replaceChildren();
  const entries = [];
  if (state.info?.durable) {
    ui.historySource.textContent = "Threads from the server's checkpointer, then this browser's runs.";
    try {
      const { data } = await api("/playground/api/threads");
      for (const t of data) {
        entries.push(
          h("li", {}, h("button", { type: "button", class: "link", onclick: async () => {
            try {
              const detail = await api(`/playground/api/threads/${encodeURIComponent(t.thread_id)}`);
              reopen(turnsOfThread(detail.messages), { threadId: t.thread_id });
            } catch (error) {
              setStatus(`Could not open the thread: ${error.message}`, true);
            }
          } }, h("span", { text: t.title || t.thread_id }), h("span", { class: "hint", text: ` · ${t.turns} turn${t.turns === 1 ? "" : "s"} · server${t.unfinished ? " · unfinished" : ""}` }))),
        );
      }
    } catch (error) {
      entries.push(h("li", { class: "hint", text: `Threads unavailable: ${error.message}` }));
    }
  } else {
    ui.historySource.textContent = "This browser's runs (the server has no checkpointer).";
  }
  for (const c of loadLocalHistory()) {
    entries.push(h("li", {}, h("button", { type: "button", class: "link", onclick: () => reopen(c.turns, c) }, h("span", { text: c.title || "(untitled)" }), h("span", { class: "hint", text: ` · ${c.turns.length} turn${c.turns.length === 1 ? "" : "s"} · ${new Date(c.updated).toLocaleString()}` }))));
  }
  if (!entries.length) entries.push(h("li", { class: "hint", text: "No runs yet." }));
  list.replaceChildren(...entries);
}

// ---------- eval reports ----------
async function renderEvals() {
  const list = ui.evalsList;
  ui.evalsSource.textContent = `Folders of \`fusiongraph eval\` in ${state.info?.evals_dir || "fusion-evals"}.`;
  try {
    const { data } = await api("/playground/api/evals");
    list.replaceChildren(
      ...(data.length
        ? data.map((e) =>
            h("li", {}, e.has_report
              ? h("button", { type: "button", class: "link", onclick: () => openEval(e.name) }, e.name)
              : h("span", { text: `${e.name} (no report.html)` }),
              h("span", { class: "hint", text: ` · ${new Date(e.modified).toLocaleString()}` }),
              h("span", { class: "eval-files" }, e.files.filter((f) => f !== "report.html").map((f) => h("button", { type: "button", class: "link", onclick: () => openEvalFile(e.name, f), text: f })))),
          )
        : [h("li", { class: "hint", text: "No eval reports yet." })]),
    );
  } catch (error) {
    list.replaceChildren(h("li", { class: "hint", text: `Eval reports unavailable: ${error.message}` }));
  }
}

// The key travels only as a header, which a frame or a new tab cannot send: the page fetches
// the file itself.
async function evalText(name, file) {
  const response = await fetch(`/playground/api/evals/${encodeURIComponent(name)}/${encodeURIComponent(file)}`, { headers: authHeaders() });
  if (!response.ok) throw new HttpError(response.status, await errorMessage(response));
  return response.text();
}

async function openEval(name) {
  ui.evalView.hidden = false;
  ui.evalViewTitle.textContent = `Eval report: ${name}`;
  try {
    // The frame is sandboxed (index.html): an opaque origin that runs no script.
    ui.evalFrame.srcdoc = await evalText(name, "report.html");
  } catch (error) {
    ui.evalFrame.removeAttribute("srcdoc");
    setStatus(`Could not open the report: ${error.message}`, true);
  }
  ui.evalView.scrollIntoView({ block: "start" });
  ui.evalClose.focus();
}

async function openEvalFile(name, file) {
  const tab = window.open("", "_blank"); // opened on the click, filled once the file is here
  if (!tab) {
    setStatus(`The browser blocked the new tab for ${file}.`, true);
    return;
  }
  tab.opener = null;
  try {
    // Plain text whatever the file: a tab of this origin never renders an eval file as a page.
    const blob = new Blob([await evalText(name, file)], { type: "text/plain;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    tab.location.href = url;
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    tab.close();
    setStatus(`Could not open ${file}: ${error.message}`, true);
  }
}

function toggleSide(which) {
  const sides = { history: [ui.history, ui.navHistory, renderHistory], evals: [ui.evals, ui.navEvals, renderEvals] };
  for (const [name, [panel, nav, render]] of Object.entries(sides)) {
    const show = name === which && panel.hidden;
    panel.hidden = !show;
    nav.setAttribute("aria-expanded", String(show));
    if (show) render();
  }
}

// ---------- start-up ----------
async function loadServer() {
  try {
    const [info, models] = await Promise.all([api("/playground/api/info"), api("/v1/models")]);
    state.info = info;
    state.models = models.data;
  } catch (error) {
    if (error.status === 401) {
      setStatus("This server needs an API key.", true);
      askForKey(state.key ? `The server refused the key: ${error.message}` : undefined);
    } else setStatus(`Could not reach the server: ${error.message}`, true);
    return false;
  }
  const select = ui.modelSelect;
  const previous = select.value;
  select.replaceChildren(...state.models.map((m) => h("option", { value: m.id, text: m.id })));
  if (previous && state.models.some((m) => m.id === previous)) select.value = previous;
  describeModel();
  fillModelOptions();
  buildSettingsForm(state.info.settings_schema);
  setStatus(state.info.auth_required ? "Ready (API key accepted)." : "Ready.");
  document.body.dataset.ready = "true";
  return true;
}

function wire() {
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.composerInput.value.trim();
    if (!text || state.controller) return;
    if (!state.info) {
      loadServer();
      return;
    }
    ui.composerInput.value = "";
    send(text);
  });
  ui.composerInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.stop.addEventListener("click", () => state.controller?.abort());
  ui.newChat.addEventListener("click", resetConversation);
  ui.panelAdd.addEventListener("click", () => addPanelRow().focus());
  ui.modelSelect.addEventListener("change", describeModel);
  ui.navKey.addEventListener("click", () => askForKey());
  ui.navHistory.addEventListener("click", () => toggleSide("history"));
  ui.navEvals.addEventListener("click", () => toggleSide("evals"));
  ui.evalClose.addEventListener("click", () => {
    ui.evalView.hidden = true;
    ui.evalFrame.removeAttribute("srcdoc");
  });
  ui.keyDialog.addEventListener("close", () => {
    if (ui.keyDialog.returnValue === "save") {
      saveKey(ui.keyInput.value);
      loadServer();
    }
  });
  ui.codeCopy.addEventListener("click", async () => {
    const text = ui.codeText.value;
    try {
      await navigator.clipboard.writeText(text);
      ui.codeCopy.textContent = "Copied";
    } catch {
      ui.codeText.select();
      document.execCommand?.("copy");
      ui.codeCopy.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => (ui.codeCopy.textContent = "Copy"), 1500);
  });
  if (matchMedia("(max-width: 700px)").matches) ui.settingsBox.open = false;
}

wire();
document.cookie = OLD_KEY_COOKIE;
loadServer();
