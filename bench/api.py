"""API benchmark: the service under gunicorn (production gunicorn.conf.py) on a real PostgreSQL.

    .venv/bin/python -m bench.api                 # full run, writes bench/results/api.json
    .venv/bin/python -m bench.api --front         # through `dev.py production` (nginx), bench/results/api-front.json
    .venv/bin/python -m bench.api --quick --out /tmp/api.json
    .venv/bin/python -m bench.api --derived       # creates on deposit addresses, bench/results/api-derived.json

A load generator in its own process (bench/loadgen.py, asyncio, open loop) offers a fixed 200 req/s
to POST /payments, then to GET /payments/<id>, and reports p50/p95/p99 latency measured from each
request's due time. Throughput at saturation comes from `wrk` (Debian package) when installed,
otherwise from the same generator in closed loop. The CPU used by each generator is reported (to show
it is not the bottleneck), as are the CPU of the gunicorn workers and of PostgreSQL, and the RSS of
the gunicorn master and workers (sampled every 0.25 s, maximum kept).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.common import (
    DEFAULT_PG,
    RESULTS,
    ROOT,
    BenchDatabase,
    free_port,
    machine,
    print_table,
    rnd,
    wait_quiet,
    write_json,
)
from bench.pg_floor import measure_floor

API_KEY = "tum_bench_key_0123456789abcdef"
# --derived: the account key of BIP-39's test mnemonic (a published test vector, m/44'/195'/0'), as DEPOSIT_XPUB
BENCH_XPUB = ("xpub6D1AabNHCupeiLM65ZR9UStMhJ1vCpyV4XbZdyhMZBiJXALQtmn9p42VTQckoHVn8WNqS7dqnJokZHAHcHGoaQgmv8D45oN"
              "UKx6DZMNZBCd")
PYTHON = sys.executable


class ProcessWatch:
    """Samples RSS of the gunicorn master and workers; CPU of workers and PostgreSQL per phase."""

    def __init__(self, master_pid: int) -> None:
        self.master = psutil.Process(master_pid)
        self.rss: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def workers(self) -> list[psutil.Process]:
        try:
            return self.master.children()
        except psutil.Error:
            return []

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            procs = [("master", self.master)] + [(f"worker-{p.pid}", p) for p in self.workers()]
            for name, proc in procs:
                try:
                    mb = proc.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.rss[name] = max(self.rss.get(name, 0.0), mb)

    def cpu_snapshot(self) -> dict[str, float]:
        def total(procs: list[psutil.Process]) -> float:
            seconds = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    seconds += t.user + t.system
                except psutil.Error:
                    pass
            return seconds

        machine_times = psutil.cpu_times()
        busy = machine_times.user + machine_times.system + getattr(machine_times, "nice", 0.0) + getattr(
            machine_times, "irq", 0.0) + getattr(machine_times, "softirq", 0.0)
        return {"gunicorn": total([self.master] + self.workers()), "machine": busy, "wall": time.monotonic()}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def cpu_share(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    wall = max(1e-9, after["wall"] - before["wall"])
    return {"gunicorn_cpu_seconds": round(after["gunicorn"] - before["gunicorn"], 3),
            "gunicorn_cpu_percent_of_one_core": round(100 * (after["gunicorn"] - before["gunicorn"]) / wall, 1),
            "machine_cpu_percent_of_all_cores": round(100 * (after["machine"] - before["machine"]) / wall
                                                      / (os.cpu_count() or 1), 1)}


def start_gunicorn(db_url: str, port: int, workers: int | None, log: Path, front: bool = False
                   ) -> tuple[subprocess.Popen, int]:
    """gunicorn on 127.0.0.1:`port`, or with `front` `dev.py production` (nginx on the port, gunicorn on a Unix
    socket behind it); returns the process to stop (SIGTERM to its group) and gunicorn's master pid."""
    env = {**os.environ, "DATABASE_URL": db_url, "API_KEYS": API_KEY, "WATCHER_ENABLED": "false",
           "ALLOW_PRIVATE_CALLBACKS": "true", "PORT": str(port), "HOST": "127.0.0.1", "LOG_LEVEL": "WARNING",
           "TRONGRID_API_URL": "http://127.0.0.1:9",
           "RATE_SOURCES": "none", "WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
    if workers:
        env["GUNICORN_WORKERS"] = str(workers)
    gunicorn = str(Path(PYTHON).parent / "gunicorn")
    command = [PYTHON, str(ROOT / "dev.py"), "production"] if front else [gunicorn, "-c", "gunicorn.conf.py",
                                                                           "app:create_app()"]
    with open(log, "w") as stderr:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code in (200, 503):
                expected = workers or int(env.get("GUNICORN_WORKERS", 2))  # gunicorn.conf.py's default
                master = gunicorn_master(proc)
                if master is not None and len(psutil.Process(master).children()) >= expected:
                    time.sleep(1.0)  # let every worker finish post_worker_init
                    return proc, master
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /health within 60 s")


def gunicorn_master(proc: subprocess.Popen) -> int | None:
    """The gunicorn master: `proc` itself, or the child of `dev.py production` that runs gunicorn."""
    candidates = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children()]
    return next((p.pid for p in candidates if "gunicorn" in " ".join(p.cmdline())), None)


def loadgen(port: int, mode: str, rate: float, duration: float, tmp: Path, *, connections: int = 32,
            save_ids: Path | None = None, ids: Path | None = None, prefix: str = "lg", base: int = 100
            ) -> dict[str, Any]:
    cmd = [PYTHON, "-m", "bench.loadgen", "--port", str(port), "--key", API_KEY, "--mode", mode, "--base", str(base),
           "--rate", str(rate), "--duration", str(duration), "--connections", str(connections),
           "--wallets", str(tmp / "wallets.txt"), "--prefix", prefix]
    if save_ids:
        cmd += ["--save-ids", str(save_ids)]
    if ids:
        cmd += ["--ids", str(ids)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


WRK_POST = """
local wallets = {%s}
-- tid: a global of each thread's own Lua state, set by setup() (a chunk-level local would shadow it: every
-- thread would then send the same order ids, and half the "creates" would be replays)
local n = 0
local count = 0
function setup(thread) thread:set("tid", count); count = count + 1 end
function request()
  n = n + 1
  local body = string.format('{"wallet_address":"%%s","expected_amount_usdt":"%%d.%%06d","order_id":"wrk-%s-%%d-%%d","callback_url":"http://127.0.0.1:9/hook"}',
                             wallets[(n %% #wallets) + 1], %d + tid, n %% 1000000, tid, n)
  return wrk.format("POST", "/payments", {["Content-Type"]="application/json", ["Authorization"]="Bearer %s"}, body)
end
"""

WRK_GET = """
local ids = {%s}
function request()
  return wrk.format("GET", "/payments/" .. ids[math.random(#ids)], {["Authorization"]="Bearer %s"})
end
"""


def parse_wrk(text: str) -> dict[str, Any]:
    def ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    result: dict[str, Any] = {"requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}  # type: ignore[union-attr]
    result["requests"] = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors: (.*)", text)
    result["socket_errors"] = errors.group(1).strip() if errors else None
    result["latency_ms"] = {f"p{p}": ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", text, re.M)}
    return result


WRK_THREADS = 2


def saturate(port: int, mode: str, duration: float, tmp: Path, connections: int, prefix: str, base: int
             ) -> dict[str, Any]:
    """Closed-loop saturation: wrk when installed (2 threads), else the Python generator at rate 0. Creates use
    order ids under `prefix` and amounts from `base` (every run creates new payments, never replays)."""
    wrk = shutil.which("wrk")
    if wrk is None or not (tmp / "wallets.txt").read_text().split():  # the wrk script names a wallet
        result = loadgen(port, mode, 0, duration, tmp, connections=connections, ids=tmp / "ids.txt", prefix=prefix,
                         base=base)
        result["tool"] = "bench.loadgen (closed loop)"
        result["requests_per_second"] = result["achieved_rate"]
        return result
    if mode == "post":
        wallets = ",".join(f'"{w}"' for w in (tmp / "wallets.txt").read_text().split())
        script = WRK_POST % (wallets, prefix, base, API_KEY)
    else:
        ids = ",".join(f'"{i}"' for i in (tmp / "ids.txt").read_text().split()[:5000])
        script = WRK_GET % (ids, API_KEY)
    lua = tmp / f"wrk_{mode}.lua"
    lua.write_text(script)
    proc = subprocess.Popen([wrk, f"-t{WRK_THREADS}", f"-c{connections}", f"-d{int(max(1, duration))}s", "--latency",
                             "-s", str(lua), f"http://127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = time.monotonic()
    output = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {output}")
    result = parse_wrk(output)
    cpu = usage.ru_utime + usage.ru_stime
    result.update({"tool": f"wrk -t{WRK_THREADS} -c{connections}", "cpu_seconds": round(cpu, 2),
                   "cpu_percent_of_one_core": round(100 * cpu / wall, 1)})
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over runs of every figure the table shows (each run's own figures stay in the JSON)."""
    def med(values: list[Any]) -> Any:
        present = [v for v in values if v is not None]
        return rnd(statistics.median(present), 3) if present else None

    first = runs[0]
    latency = {p: med([r["latency_ms"].get(p) for r in runs]) for p in first["latency_ms"]}
    merged = {k: med([r.get(k) for r in runs]) for k in first
              if isinstance(first[k], int | float) and not isinstance(first[k], bool)}
    statuses: dict[str, int] = {}
    for r in runs:
        for code, count in r.get("statuses", {}).items():
            statuses[code] = statuses.get(code, 0) + count
    return {**merged, "tool": first.get("tool"), "latency_ms": latency, "statuses": statuses,
            "non_2xx": sum(r.get("non_2xx", 0) for r in runs), "runs": len(runs),
            "p99_range_ms": [min_or_none([r["latency_ms"].get("p99") for r in runs]),
                             max_or_none([r["latency_ms"].get("p99") for r in runs])]}


def min_or_none(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def max_or_none(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite (a few seconds)")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a PostgreSQL server (superuser); default %(default)s")
    parser.add_argument("--rate", type=float, default=200.0, help="offered rate for the latency runs (req/s)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per latency run")
    parser.add_argument("--saturation-duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement; the table shows medians")
    parser.add_argument("--connections", type=int, default=32, help="connections of the saturation runs")
    parser.add_argument("--workers", type=int, default=None, help="GUNICORN_WORKERS (default: gunicorn.conf.py's)")
    parser.add_argument("--quiet-wait", type=float, default=300.0,
                        help="before each measurement, wait up to this many seconds for the machine to be idle")
    parser.add_argument("--front", action="store_true",
                        help="through `dev.py production`: nginx on the port, gunicorn behind it on a Unix socket")
    parser.add_argument("--derived", action="store_true",
                        help="creates without wallet_address: each on a deposit address derived from DEPOSIT_XPUB")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/api.json (api-front.json)")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / ("api-front.json" if args.front else "api-derived.json" if args.derived
                                      else "api.json")
    if args.derived:
        os.environ["DEPOSIT_XPUB"] = BENCH_XPUB  # gunicorn's environment is this one's
    if args.quick:
        args.duration, args.saturation_duration, args.rate, args.runs, args.quiet_wait = 2.0, 1.0, 50.0, 1, 1.0

    from tron_sim import random_address

    bench_db = BenchDatabase(args.pg_url, "api")
    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    (tmp / "wallets.txt").write_text("" if args.derived else "\n".join(random_address() for _ in range(1000)) + "\n")
    proc = None
    watch = None
    try:
        bench_db.migrate()
        port = free_port()
        proc, master = start_gunicorn(bench_db.url, port, args.workers, tmp / "gunicorn.log", args.front)
        watch = ProcessWatch(master)
        idle_rss = {"master": round(watch.master.memory_info().rss / 2**20, 1),
                    "workers": [round(p.memory_info().rss / 2**20, 1) for p in watch.workers()]}
        # warm-up: connections, pools, caches (not reported)
        loadgen(port, "post", 50, 1.0 if args.quick else 3.0, tmp, save_ids=tmp / "ids.txt", prefix="warm",
                base=100)
        all_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in (
            "create_fixed_rate", "status_fixed_rate", "status_saturation", "create_saturation")}
        for k in range(args.runs):
            for name, mode in (("create_fixed_rate", "post"), ("status_fixed_rate", "get"),
                               ("status_saturation", "get"), ("create_saturation", "post")):
                idle = wait_quiet(timeout=args.quiet_wait)
                before = watch.cpu_snapshot()
                if name == "create_fixed_rate":
                    run = loadgen(port, mode, args.rate, args.duration, tmp, save_ids=tmp / f"ids_{k}.txt",
                                  prefix=f"fixed{k}", base=200 + k)
                elif name == "status_fixed_rate":
                    run = loadgen(port, mode, args.rate, args.duration, tmp, ids=tmp / "ids.txt")
                else:
                    run = saturate(port, mode, args.saturation_duration, tmp, args.connections, prefix=f"sat{k}",
                                   base=500 + 10 * k)
                run.update(cpu_share(before, watch.cpu_snapshot()), machine_busy_before_percent=idle)
                served = run.get("requests") or sum(run.get("statuses", {}).values())
                # CPU the workers spent per request: much less moved by other load on the machine than latency
                run["gunicorn_cpu_ms_per_request"] = rnd(1000 * run["gunicorn_cpu_seconds"] / max(1, served), 3)
                all_runs[name].append(run)
                print(f"{name} #{k + 1}: {json.dumps(run)}", flush=True)
        time.sleep(0.5)
        watch.stop()
        workers = sorted(v for k, v in watch.rss.items() if k.startswith("worker"))
        memory = {"idle": idle_rss, "max_rss_mb": {"master": round(watch.rss.get("master", 0), 1),
                                                   "workers": [round(v, 1) for v in workers]}}
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        proc = None
        wait_quiet(timeout=args.quiet_wait)
        floor = measure_floor(bench_db.url, tmp, args.rate, args.duration, args.saturation_duration, args.connections)
        print(f"pgbench floor: {json.dumps(floor)}", flush=True)
    finally:
        if watch:
            watch.stop()
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        bench_db.close()
        shutil.rmtree(tmp, ignore_errors=True)

    runs = {name: median_run(values) for name, values in all_runs.items()}
    report(args, runs, all_runs, memory, floor)
    return 0


TARGETS = {  # name: (target, "min" or "max", where the figure comes from)
    "create_p99_ms_at_200": (10, "max"),
    "status_p99_ms_at_200": (4, "max"),
    "status_throughput_rps": (1500, "min"),
    "create_throughput_rps": (800, "min"),
    "worker_rss_mb": (70, "max"),
}


def report(args: argparse.Namespace, runs: dict[str, Any], all_runs: dict[str, list[dict[str, Any]]],
           memory: dict[str, Any], floor: dict[str, Any] | None) -> None:
    headers = ["route", "run", "offered", "achieved req/s", "p50 ms", "p95 ms", "p99 ms", "p99 range ms",
               "non-2xx/errors", "loadgen CPU % (1 core)", "gunicorn CPU % (1 core)", "gunicorn CPU ms/request",
               "machine CPU % (all cores)"]
    rows = []
    for route, fixed, sat in (("POST /payments", "create_fixed_rate", "create_saturation"),
                              ("GET /payments/<id>", "status_fixed_rate", "status_saturation")):
        f, s = runs[fixed], runs[sat]
        bad = sum(v for k, v in f["statuses"].items() if not k.startswith("2")) + sum(
            r["errors"] for r in all_runs[fixed])
        rows.append([route, "fixed rate", f"{args.rate:g}/s", f["achieved_rate"], f["latency_ms"]["p50"],
                     f["latency_ms"]["p95"], f["latency_ms"]["p99"], "{}-{}".format(*f["p99_range_ms"]), bad,
                     f["cpu_percent_of_one_core"], f["gunicorn_cpu_percent_of_one_core"],
                     f["gunicorn_cpu_ms_per_request"], f["machine_cpu_percent_of_all_cores"]])
        rows.append([route, f"saturation ({s['tool']})", "closed loop", round(s["requests_per_second"], 1),
                     s["latency_ms"].get("p50"), s["latency_ms"].get("p95", "-"), s["latency_ms"].get("p99"),
                     "{}-{}".format(*s["p99_range_ms"]), s.get("non_2xx", 0), s["cpu_percent_of_one_core"],
                     s["gunicorn_cpu_percent_of_one_core"], s["gunicorn_cpu_ms_per_request"],
                     s["machine_cpu_percent_of_all_cores"]])
    if floor is not None:
        rows.append(["pgbench: create-shaped transaction", "fixed rate", f"{args.rate:g}/s",
                     round(floor["achieved_tps"], 1), *(floor["latency_ms"][p] for p in ("p50", "p95", "p99")), "-", 0,
                     "-", "-", "-", "-"])
        rows.append(["pgbench: create-shaped transaction", f"saturation (-c{floor['saturation_connections']})",
                     "closed loop", round(floor["saturation_tps"], 1), "-", "-", "-", "-", 0, "-", "-", "-", "-"])
    print(f"medians over {args.runs} run(s) of each measurement")
    table = print_table(headers, rows)
    rss = memory["max_rss_mb"]
    print(f"RSS (max, MB): master {rss['master']}, workers {rss['workers']}; idle workers {memory['idle']['workers']}")
    measured = {"create_p99_ms_at_200": runs["create_fixed_rate"]["latency_ms"]["p99"],
                "status_p99_ms_at_200": runs["status_fixed_rate"]["latency_ms"]["p99"],
                "status_throughput_rps": round(runs["status_saturation"]["requests_per_second"], 1),
                "create_throughput_rps": round(runs["create_saturation"]["requests_per_second"], 1),
                "worker_rss_mb": max(rss["workers"], default=None)}
    targets: dict[str, Any] = {}
    for name, (target, kind) in TARGETS.items():
        m = measured[name]
        targets[name] = {"target": target, "measured": m,
                         "met": m is not None and (m >= target if kind == "min" else m <= target)}
    print("targets:", json.dumps(targets), flush=True)
    if floor is not None:
        floor_p99 = floor["latency_ms"]["p99"]
        create_p99, create_rps = measured["create_p99_ms_at_200"], measured["create_throughput_rps"]
        ratios = {"create_p99_over_floor_p99": rnd(create_p99 / floor_p99, 2) if floor_p99 and create_p99 else None,
                  "create_throughput_over_floor_tps": rnd(create_rps / floor["saturation_tps"], 3)}
        print("against the pgbench floor:", json.dumps(ratios), flush=True)
    write_json(args.out, {
        "benchmark": "api", "quick": args.quick, "machine": machine(),
        "command": "python -m bench.api " + " ".join(sys.argv[1:]),
        "settings": {"rate": args.rate, "duration_s": args.duration, "saturation_duration_s": args.saturation_duration,
                     "runs": args.runs, "saturation_connections": args.connections,
                     "gunicorn": "gunicorn -c gunicorn.conf.py app:create_app()",
                     "front": "nginx (dev.py production)" if args.front else None,
                     "workers": args.workers or os.environ.get("GUNICORN_WORKERS", "gunicorn.conf.py default (2)"),
                     "threads": os.environ.get("GUNICORN_THREADS", "gunicorn.conf.py default (3, gthread)")},
        "runs": runs, "all_runs": all_runs, "memory": memory, "pgbench_floor": floor, "targets": targets,
        "table": table,
    })


if __name__ == "__main__":
    sys.exit(main())
