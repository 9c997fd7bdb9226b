"""/metrics: what a monitoring stack reads after real runs through the server (scripted models):
runs by outcome and strategy, a failed panelist by reason and model, a quorum cut, a cache hit,
tokens and cost by model, node latencies, in-flight runs; parsed with prometheus-client's
own parser."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fusiongraph.graph.builder import build_graph
from fusiongraph.serve.server import create_app
from tests.support.fakes import FakeFactory, Script, fake_context, judge_json
from tests.support.servers import running_server, wait_for

USER = [{"role": "user", "content": "What is the capital of France?"}]
PRICES = {name: {"input": 1.0, "output": 2.0} for name in ("m1", "m2", "bad", "judge", "synth")}
PANEL = fake_context(["m1", "m2", "bad", "hang"], quorum=2, straggler_grace_s=0.05, prices=PRICES)
BROKEN = fake_context(["bad"], prices=PRICES)
SLOW = fake_context(["slow"], prices=PRICES)
CACHED = fake_context(["c1", "c2"], prices=PRICES)


def factory() -> FakeFactory:
    return FakeFactory(
        {
            "m1": ["Paris. ANSWER-p1"],
            "m2": ["Paris. ANSWER-p2"],
            "c1": ["Paris. ANSWER-c1"],
            "c2": ["Paris. ANSWER-c2"],
            "bad": Script([RuntimeError("upstream exploded")]),
            "hang": Script(["never in time"], delay_s=30),
            "slow": Script(["Paris, slowly."], delay_s=1.0),
            "judge": [judge_json(consensus=["Paris is the capital"])],
            "synth": ["Paris is the capital of France."],
        }
    )


def scrape(client: httpx.Client, **headers: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server() -> Any:
    graph = build_graph(factory(), cache=True)
    app = create_app(
        graph,
        api_keys=[],
        aliases={
            "fusion-panel": PANEL,
            "fusion-broken": BROKEN,
            "fusion-slow": SLOW,
            "fusion-cached": CACHED,
        },
    )
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def ask(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": model, "messages": USER, **extra})


def test_metrics_count_what_the_runs_records_say(server: httpx.Client) -> None:
    panel = ask(server, "fusion-panel")
    assert panel.status_code == 200, panel.text
    record = panel.json()["fusion"]
    cached_first = ask(server, "fusion-cached")
    assert cached_first.status_code == 200
    cached = ask(server, "fusion-cached", stream=True)  # identical request: the panel cache
    assert cached.status_code == 200
    broken = ask(server, "fusion-broken")
    assert broken.status_code == 502
    samples = scrape(server)

    assert value(samples, "fusion_runs_total", outcome="ok", strategy="synthesize") == 3
    failure = broken.json()["error"]["fusion"]["reason"]
    assert failure == "all_panelists_failed"
    assert value(samples, "fusion_runs_total", outcome=failure, strategy="synthesize") == 1
    assert value(samples, "fusion_run_duration_seconds_count", outcome="ok") == 3
    assert value(samples, "fusion_runs_in_flight") == 0

    # The failed panelist, by the reason and model its record gives; the quorum cut-off.
    failed = {f["panelist"]: f for f in record["failed_models"]}
    assert failed["p4"]["reason"] == "straggler"
    bad = failed["p3"]
    labels = {"reason": bad["reason"], "model": bad["model"]}
    assert value(samples, "fusion_panelist_failures_total", **labels) == 2  # + the broken run
    assert value(samples, "fusion_cutoffs_total", kind="quorum") == 1
    hang = failed["p4"]["model"]
    assert value(samples, "fusion_panelist_failures_total", reason="straggler", model=hang) == 1

    # Tokens, cost and latency per model, as the record has them.
    m1 = next(e for e in record["panel"] if e["panelist"] == "p1")
    for kind in ("input", "output"):
        tokens = value(samples, "fusion_tokens_total", model=m1["model"], kind=kind)
        assert tokens == m1["usage"][f"{kind}_tokens"] > 0
    assert value(samples, "fusion_cost_usd_total", model=m1["model"]) == pytest.approx(
        m1["cost_usd"]
    )
    count = "fusion_node_latency_seconds_count"
    assert value(samples, count, node="panelist", model=m1["model"]) == 1
    judge, synth = record["judge"]["model"], record["synthesizer"]["model"]
    assert value(samples, count, node="judge", model=judge) == 3  # not in the broken run
    assert value(samples, count, node="synthesis", model=synth) == 3

    # The repeat's panel came from the cache: counted as hits, not as spending again.
    c1 = next(e for e in cached_first.json()["fusion"]["panel"] if e["panelist"] == "p1")
    assert value(samples, "fusion_panel_cache_hits_total", model=c1["model"]) == 1
    assert value(samples, count, node="panelist", model=c1["model"]) == 1
    assert (
        value(samples, "fusion_tokens_total", model=c1["model"], kind="output")
        == (c1["usage"]["output_tokens"])
    )


def test_in_flight_runs_are_counted_while_they_run(server: httpx.Client) -> None:
    done = threading.Event()

    def slow() -> None:
        ask(server, "fusion-slow")
        done.set()

    threading.Thread(target=slow, daemon=True).start()
    assert wait_for(lambda: value(scrape(server), "fusion_runs_in_flight") == 1)
    assert done.wait(15)
    assert value(scrape(server), "fusion_runs_in_flight") == 0


def test_metrics_need_the_api_key_when_the_server_has_keys() -> None:
    app = create_app(build_graph(factory()), api_keys=["secret"], aliases={"fusion-slow": SLOW})
    with running_server(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/metrics").status_code == 401
        samples = scrape(client, authorization="Bearer secret")
        assert value(samples, "fusion_runs_in_flight") == 0
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/health").json() == {"status": "ok"}  # the old name stays
