"""The benchmark scripts still run: each once at its smallest size (`--quick`), results into tmp_path.

Benchmarks are scripts, not tests (see docs/performance.md); this only keeps them working.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(module: str, pg_server: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", module, "--quick", "--pg-url", pg_server, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| " in done.stdout  # the table was printed
    return json.loads(out.read_text())


@pytest.mark.timeout(150)
def test_api_benchmark_quick(pg_server: str, tmp_path: Path) -> None:
    result = run_bench("bench.api", pg_server, tmp_path / "api.json")
    runs = result["runs"]
    assert runs["create_fixed_rate"]["statuses"].get("201", 0) > 0
    assert runs["status_fixed_rate"]["statuses"].get("200", 0) > 0
    assert runs["status_saturation"]["requests_per_second"] > 0
    assert result["memory"]["max_rss_mb"]["workers"]
    assert runs["create_saturation"]["requests_per_second"] > 0
    assert set(result["targets"]) == {"create_p99_ms_at_200", "status_p99_ms_at_200", "status_throughput_rps",
                                      "create_throughput_rps", "worker_rss_mb"}
    floor = result["pgbench_floor"]
    assert floor["transactions"] > 0 and floor["saturation_tps"] > 0 and floor["latency_ms"]["p99"] > 0


@pytest.mark.timeout(150)
def test_watcher_benchmark_quick(pg_server: str, tmp_path: Path) -> None:
    result = run_bench("bench.watcher", pg_server, tmp_path / "watcher.json")
    assert {r["strategy"] for r in result["results"]} == {"blocks", "account"}
    for r in result["results"]:
        assert r["cycles"] >= 2 and r["paid"] > 0
        assert r["detected"] == r["paid"], r
        assert r["upstream_requests"] > 0 and r["watcher_rss_mb"] > 0
    assert (tmp_path / "watcher.svg").read_text().startswith("<svg")


@pytest.mark.timeout(150)
def test_metrics_benchmark_quick(pg_server: str, tmp_path: Path) -> None:
    result = run_bench("bench.metrics", pg_server, tmp_path / "metrics.json")["result"]
    assert result["payments"] == 1000 and result["scrapes"] == 10
    assert 0 < result["p50_ms"] <= result["max_ms"] and result["bytes"] > 1000


@pytest.mark.timeout(150)
def test_growth_benchmark_quick(pg_server: str, tmp_path: Path) -> None:
    result = run_bench("bench.growth", pg_server, tmp_path / "growth.json")
    [size] = result["results"]
    assert size["rows"] == {"payments": 2000, "payment_logs": 6000, "transfers": 200, "webhook_events": 2000}
    routes = size["routes"]
    assert {"GET /health", "GET /stats", "GET /metrics", "GET /payments, deep page"} <= set(routes)
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in routes.values())
    assert routes["POST /payments at saturation"]["requests_per_second"] > 0


def test_notify_benchmark_quick(pg_server: str, tmp_path: Path) -> None:
    result = run_bench("bench.notify", pg_server, tmp_path / "notify.json")
    assert len(result["wall_seconds"]) == 3 and all(s > 0 for s in result["child_cpu_seconds"])
    assert all(result["deadline"] <= s < result["deadline"] + 2 for s in result["cut_seconds"])


@pytest.mark.timeout(150)
def test_counters_benchmark_quick(pg_server: str, tmp_path: Path) -> None:
    result = run_bench("bench.counters", pg_server, tmp_path / "counters.json")
    assert set(result["median_tps"]) == {"off", "sharded", "hot row"}
    assert all(value > 0 for value in result["median_tps"].values())


def test_dashboard_benchmark_quick(pg_server: str, tmp_path: Path) -> None:
    result = run_bench("bench.dashboard", pg_server, tmp_path / "dashboard.json")
    assert result["payments"] == 1000 and result["requests_per_page"] == 5 and len(result["pages"]) == 15
    assert all(0 < page["p50_ms"] <= page["max_ms"] for page in result["pages"].values())
