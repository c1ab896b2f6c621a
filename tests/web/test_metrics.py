"""GET /metrics: the token, what a payment's life, a failing upstream and webhooks add, no label naming a wallet,
payment or transaction; the standalone watcher's own endpoint; the alert rules (promtool) and the Grafana dashboard
name only exported metrics; a real Prometheus scrapes gunicorn's workers and loads the rules."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from database import Database
from delivery.webhooks import WebhookDispatcher
from infra.config import Config
from infra.instruments import MetricsServer, exposition
from tests.conftest import USDT, WALLET, create, pay, wait_for, watcher_client
from tests.test_production import free_port, service_env, start_gunicorn, stop
from tron_sim import Simulator
from web.metrics import DatabaseCollector

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "prometheus" / "grafana-dashboard.json"
TOKEN = "metrics-token-for-the-tests"
METRIC_NAME = re.compile(r"\btron_usdt_[a-z_]+")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> tuple[str, Samples]:  # type: ignore[no-untyped-def]
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain"), r.get_data(as_text=True)[:300]
    text = r.get_data(as_text=True)
    return text, parse(text)


def exported_names(text: str) -> set[str]:
    """Every sample name the exposition declares, whether or not it has samples yet."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
        elif kind == "counter":
            names |= {name, f"{name}_total"} if not name.endswith("_total") else {name}
        else:
            names.add(name)
    return names


# --- the token -------------------------------------------------------------------------------------

def test_metrics_need_the_token_when_one_is_set(config: Config, db: Database) -> None:
    from app import create_app

    closed = create_app(config.with_overrides(metrics_token=TOKEN), database=db).test_client()
    assert closed.get("/metrics").status_code == 401
    assert closed.get("/metrics").get_json()["error"] == "unauthorized"
    assert closed.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert closed.get("/metrics", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert closed.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    open_ = create_app(config, database=db).test_client()
    assert open_.get("/metrics").status_code == 200


# --- what is counted -------------------------------------------------------------------------------

def test_a_payment_life_is_counted_and_nothing_names_it(client, auth, db, sim, receiver, new_watcher,  # type: ignore[no-untyped-def]
                                                         config: Config) -> None:
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=2000.0)
    _, before = scrape(client)
    payment = create(client, auth, "10", callback_url=receiver.url("/hook"))
    watcher = new_watcher(cfg)
    watcher.run_once()
    tx = pay(sim, WALLET, 10_000_000)
    sim.mine(1)
    watcher.run_once()
    assert WebhookDispatcher(db, cfg).run_once() == 1 and len(receiver.to("/hook")) == 1
    text, after = scrape(client)

    assert value(after, "tron_usdt_payments", status="completed") == 1
    assert value(after, "tron_usdt_payments", status="pending") == 0
    assert value(after, "tron_usdt_payments_created_total") == 1
    assert value(after, "tron_usdt_transfers", status="credited", found_by="scan") == 1
    assert value(after, "tron_usdt_webhook_outbox_depth") == 0
    assert value(after, "tron_usdt_webhook_events", state="delivered") == 1
    assert value(after, "tron_usdt_database_up") == 1
    assert value(after, "tron_usdt_watcher_leader") == 1
    assert value(after, "tron_usdt_watcher_strategy", strategy="blocks") == 1
    assert value(after, "tron_usdt_watcher_seconds_behind") == 0
    assert 0 <= value(after, "tron_usdt_watcher_last_cycle_age_seconds") < 30

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tron_usdt_webhook_attempts_total", outcome="delivered") == 1
    assert delta("tron_usdt_detection_latency_seconds_count") == 1
    # The simulator solidifies at once and the cycle ran right after: seconds, not minutes.
    assert 0 <= delta("tron_usdt_detection_latency_seconds_sum") < 10
    assert delta("tron_usdt_watcher_cycle_seconds_count") == 2
    requests_now = {labels: v for (name, labels), v in after.items() if name == "tron_usdt_upstream_requests_total"}
    assert any(dict(labels)["endpoint"] == "getnowblock" and dict(labels)["status"] == "200"
               for labels in requests_now)
    for secret in (WALLET, payment["id"], tx):
        assert secret not in text


def test_an_upstream_in_trouble_is_counted(sim) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    client = watcher_client(Config(trongrid_api_url=sim.url))
    upstream = client.upstreams[0].name
    before = parse(exposition(REGISTRY)[0].decode())
    sim.set_fault("500", 1)
    client.get_solid_head()  # one 500, retried
    sim.set_fault("429", 1, seconds=0.3)
    with pytest.raises(Exception, match="rate limit"):
        client.get_solid_head()
    after = parse(exposition(REGISTRY)[0].decode())

    def delta(name: str, **labels: str) -> float:
        return value(after, name, upstream=upstream, **labels) - value(before, name, upstream=upstream, **labels)

    assert delta("tron_usdt_upstream_requests_total", endpoint="getnowblock", status="500") == 1
    assert delta("tron_usdt_upstream_requests_total", endpoint="getnowblock", status="429") == 1
    assert delta("tron_usdt_upstream_retries_total", endpoint="getnowblock") == 1
    assert delta("tron_usdt_upstream_rate_limit_pauses_total") == 1
    assert delta("tron_usdt_upstream_rate_limit_pause_seconds_total") == pytest.approx(0.3)


def test_rejected_transfers_are_counted_by_reason(client, auth, sim, new_watcher, config: Config) -> None:  # type: ignore[no-untyped-def]
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=2000.0)
    create(client, auth, "10")
    watcher = new_watcher(cfg)
    watcher.run_once()
    pay(sim, WALLET, 0)  # address-poisoning spam
    pay(sim, WALLET, 3_000_000)  # a single candidate takes a partial payment
    sim.mine(1)
    watcher.run_once()
    _, samples = scrape(client)
    assert value(samples, "tron_usdt_transfers_rejected_total", reason="zero_amount") == 1
    assert value(samples, "tron_usdt_transfers", status="credited", found_by="scan") == 1
    assert value(samples, "tron_usdt_payments", status="pending") == 1


def test_an_unreachable_database_is_a_gauge_not_an_error() -> None:
    db = Database(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    try:
        samples = parse(exposition(DatabaseCollector(db))[0].decode())
    finally:
        db.dispose()
    assert samples == {("tron_usdt_database_up", ()): 0.0}


# --- the standalone watcher's endpoint ---------------------------------------------------------------

def test_the_standalone_watcher_serves_its_own_metrics_behind_the_token() -> None:
    server = MetricsServer("127.0.0.1", 0, TOKEN).start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        assert requests.get(f"{url}/metrics", timeout=5).status_code == 401
        assert requests.get(f"{url}/other", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 404
        r = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert r.status_code == 200 and "# TYPE tron_usdt_watcher_cycle_seconds histogram" in r.text
        assert "tron_usdt_payments" not in r.text  # what the database holds is the app's /metrics' alone
    finally:
        server.stop()


def test_watcher_py_serves_metrics_on_watcher_metrics_port_until_stopped(database_url: str, sim) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal
    import sys

    port = free_port()
    env = {**service_env(database_url, sim.url, free_port()), "WATCHER_METRICS_PORT": str(port),
           "METRICS_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "watcher.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        def cycled() -> bool:
            try:
                answer = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2)
            except requests.RequestException:
                return False
            return parse(answer.text).get(("tron_usdt_watcher_cycle_seconds_count", ()), 0) > 0

        assert wait_for(cycled, timeout=20)
        assert requests.get(url, timeout=2).status_code == 401
        assert value(parse(requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2).text),
                     "tron_usdt_watcher_leader") == 1
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- rules and dashboard ---------------------------------------------------------------------------

def rule_expressions() -> list[str]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_the_alert_rules_pass_promtool() -> None:
    done = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 14 rules found" in done.stdout


def test_rules_and_dashboard_name_only_exported_metrics(client) -> None:  # type: ignore[no-untyped-def]
    text, _ = scrape(client)
    exported = exported_names(text)
    expressions = rule_expressions() + dashboard_expressions()
    assert len(dashboard_expressions()) >= 20
    used = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert used - exported == set()
    # every metric the service exports has a panel (the histograms by their buckets)
    def families(names: set[str]) -> set[str]:
        return {re.sub(r"_(bucket|count|sum|total)$", "", n) for n in names if n.startswith("tron_usdt_")}

    assert families(exported) - families(used) == set()


# --- a real Prometheus -----------------------------------------------------------------------------

@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Starts /usr/bin/prometheus scraping a target every second (with the metrics token), the rules loaded."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    procs: list[subprocess.Popen] = []

    def start(target: str) -> str:
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "tron-usdt-monitor", "static_configs": [{"targets": [target]}],
                                "authorization": {"type": "Bearer", "credentials": TOKEN}}],
        }))
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(20)


def query(base: str, expr: str) -> float | None:
    try:
        result = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=2).json()["data"]["result"]
    except (requests.RequestException, ValueError, KeyError):
        return None
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_gunicorn_workers(db, database_url, prometheus) -> None:  # type: ignore[no-untyped-def]
    with Simulator(block_interval=0.5, solidify_depth=2, usdt_contract=USDT, follow_clock=True) as sim:
        scraped_by_prometheus(database_url, sim, prometheus)


def scraped_by_prometheus(database_url: str, sim: Simulator, prometheus) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    web = start_gunicorn(service_env(database_url, sim.url, port, METRICS_TOKEN=TOKEN))
    try:
        base = f"http://127.0.0.1:{port}"
        key = {"Authorization": "Bearer tum_production_test_key"}
        r = requests.post(f"{base}/payments", headers=key, timeout=5, json={
            "wallet_address": WALLET, "expected_amount_usdt": "10", "order_id": "prom-1",
            "callback_url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 201, r.text
        sim.transfer(WALLET, 10_000_000)
        server = prometheus(f"127.0.0.1:{port}")
        assert wait_for(lambda: query(server, 'tron_usdt_payments{status="completed"}') == 1, timeout=40), (
            requests.get(f"{server}/api/v1/targets", timeout=5).text,
            requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text[-3000:])
        # Two workers, one leader: the sum is the same whichever worker answered the scrape.
        assert wait_for(lambda: query(server, "min_over_time(tron_usdt_watcher_leader[5s])") == 1, timeout=20)
        assert query(server, "max_over_time(tron_usdt_watcher_leader[5s])") == 1
        assert query(server, 'sum(tron_usdt_upstream_requests_total{endpoint="getnowblock"})') > 0
        assert query(server, 'up{job="tron-usdt-monitor"}') == 1
        assert any((ROOT / ".data" / f"metrics-{port}").glob("counter_*.db"))

        def rules() -> list[dict]:
            return requests.get(f"{server}/api/v1/rules", timeout=5).json()["data"]["groups"]

        assert [(g["name"], len(g["rules"])) for g in rules()] == [("tron-usdt-monitor", 14)]
        assert wait_for(lambda: all(rule["health"] == "ok" for g in rules() for rule in g["rules"]), timeout=10)
    finally:
        stop(web)
    assert not (ROOT / ".data" / f"metrics-{port}").exists()  # removed with the run it belonged to


def test_metrics_answer_the_format_the_document_states_and_openmetrics_when_asked(client) -> None:
    """The document's 200 names what the route answers: Prometheus text 0.0.4, or what Accept asks for."""
    plain = client.get("/metrics")
    assert plain.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    stated = client.get("/openapi.json").get_json()["paths"]["/metrics"]["get"]["responses"]["200"]
    assert "version=0.0.4" in stated["description"] and set(stated["content"]) == {
        "text/plain", "application/openmetrics-text"}
    newer = client.get("/metrics", headers={"Accept": "text/plain; version=1.0.0"})
    assert newer.headers["Content-Type"].startswith("text/plain; version=1.0.0")
    open_metrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert open_metrics.get_data(as_text=True).rstrip().endswith("# EOF")
