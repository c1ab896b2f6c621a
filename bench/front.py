"""Hostile clients against the production front (`python3 dev.py production`: nginx before gunicorn), or against
gunicorn alone.

    .venv/bin/python -m bench.front                 # the attack through the front, then gunicorn alone
    .venv/bin/python -m bench.front --mode front --stalled 500 --drip-headers 200 --drip-body 50 --seconds 30

`--mode front`: `dev.py production` on a fresh database (sandbox network, nothing else needed), then, all at once
from 127.0.0.2 and up (so per-address limits never count the probes' 127.0.0.1): --stalled connections that send
one byte and nothing more, --drip-headers connections that send a request line and then a header line every 2 s,
--drip-body connections that send a POST's head and then one byte of its body every 15 s (slower than the front's
10 s body timeout). Meanwhile probes from 127.0.0.1 read /health, GET /payments/<id> and the checkout page, each
every 100 ms with a 5 s deadline: their latencies, failures, and how long the front took to close the slow
connections.

`--mode bare`: gunicorn alone on TCP (`gunicorn -c gunicorn.conf.py`), and for 1, 2, ... --max-stalled
connections that send one byte and stall, whether /health still answers within 5 s: the number that takes it down.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from bench.common import DEFAULT_PG, ROOT, BenchDatabase, free_port, percentile, print_table

KEY = "tum_front_benchmark_key"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WALLET = "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"


def service_env(database_url: str, port: int) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "PORT": str(port), "TRON_NETWORK": "sandbox",
            "API_KEYS": KEY, "WEBHOOK_SECRET": SECRET, "ALLOW_PRIVATE_CALLBACKS": "true",
            "POLLING_INTERVAL_SECONDS": "1", "LOG_LEVEL": "WARNING"}


@contextmanager
def production(database_url: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python3 dev.py production` on `port`, until the block ends (then SIGINT, as Ctrl-C)."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "dev.py"), "production"], cwd=ROOT,
                                env=service_env(database_url, port), stdout=out, stderr=out)
    try:
        wait_answering(f"http://127.0.0.1:{port}", proc, log)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


@contextmanager
def bare_gunicorn(database_url: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn alone on 127.0.0.1:`port`, as gunicorn.conf.py has it."""
    with log.open("ab") as out:
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                 "app:create_app()"], cwd=ROOT, env=service_env(database_url, port), stdout=out,
                                stderr=out, start_new_session=True)
    try:
        wait_answering(f"http://127.0.0.1:{port}", proc, log)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_answering(base: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/health", timeout=2).status_code in (200, 503):
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service did not answer in {seconds:g}s:\n{log.read_text()[-3000:]}")


def create_payment(base: str) -> tuple[str, str]:
    """A payment through the front: its id and its checkout page's path."""
    answer = requests.post(f"{base}/payments", headers={"Authorization": f"Bearer {KEY}"}, timeout=10, json={
        "wallet_address": WALLET, "expected_amount_usdt": "25", "order_id": f"front-{time.time_ns()}",
        "callback_url": "http://127.0.0.1:9/hook", "unique_amount": True})
    answer.raise_for_status()
    body = answer.json()
    return body["id"], "/pay/" + body["checkout_url"].split("/pay/", 1)[1]


# --- the attackers ----------------------------------------------------------------------------------

class Attack:
    """Slow connections from 127.0.0.2 and up, each kept by a thread-free loop: opened, fed on schedule, and timed
    until the server closes it."""

    def __init__(self, host: str, port: int, addresses: int = 40) -> None:
        self.host, self.port = host, port
        self.sources = [f"127.0.0.{n}" for n in range(2, 2 + addresses)]
        self.connections: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)

    def open(self, kind: str, count: int) -> None:
        for n in range(count):
            sock = socket.socket()
            sock.bind((self.sources[len(self.connections) % len(self.sources)], 0))
            sock.settimeout(5)
            try:
                sock.connect((self.host, self.port))
            except OSError as exc:
                self.connections.append({"kind": kind, "sock": None, "refused": str(exc)})
                sock.close()
                continue
            sock.setblocking(False)
            first = {"stalled": b"G",
                     "drip-headers": b"GET /health HTTP/1.1\r\nHost: localhost\r\n",
                     "drip-body": (b"POST /payments HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: 1000\r\nAuthorization: Bearer x\r\n\r\n{")}[kind]
            sock.send(first)
            self.connections.append({"kind": kind, "sock": sock, "opened": time.monotonic(), "closed": None,
                                     "next": time.monotonic() + (2 if kind == "drip-headers" else 15), "n": n})

    def start(self) -> None:
        self.thread.start()

    def _feed(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            for c in self.connections:
                sock = c.get("sock")
                if sock is None or c["closed"] is not None:
                    continue
                try:
                    if sock.recv(4096) == b"":
                        c["closed"] = now
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    c["closed"] = now
                    continue
                if c["kind"] != "stalled" and now >= c["next"]:
                    try:
                        sock.send(b"X-Drip: 1\r\n" if c["kind"] == "drip-headers" else b" ")
                    except OSError:
                        c["closed"] = now
                    c["next"] = now + (2 if c["kind"] == "drip-headers" else 15)
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.connections:
            if c.get("sock") is not None:
                c["sock"].close()

    def summary(self) -> dict[str, Any]:
        by_kind: dict[str, Any] = {}
        for kind in ("stalled", "drip-headers", "drip-body"):
            mine = [c for c in self.connections if c["kind"] == kind]
            if not mine:
                continue
            closed = [c["closed"] - c["opened"] for c in mine if c.get("sock") is not None and c["closed"]]
            by_kind[kind] = {"opened": sum(1 for c in mine if c.get("sock") is not None),
                             "refused_at_connect": sum(1 for c in mine if c.get("sock") is None),
                             "closed_by_server": len(closed),
                             "closed_after_s_median": round(statistics.median(closed), 1) if closed else None,
                             "closed_after_s_max": round(max(closed), 1) if closed else None}
        return by_kind


# --- the probes -------------------------------------------------------------------------------------

class Probes:
    """From 127.0.0.1: each path every `interval` s with a 5 s deadline, on a fresh connection each time."""

    def __init__(self, base: str, paths: dict[str, str], interval: float = 0.1) -> None:
        self.base, self.paths, self.interval = base, paths, interval
        self.results: dict[str, list[float | None]] = {name: [] for name in paths}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(name,), daemon=True) for name in paths]

    def _run(self, name: str) -> None:
        headers = {"Authorization": f"Bearer {KEY}", "Connection": "close"}
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                ok = requests.get(self.base + self.paths[name], headers=headers, timeout=5).status_code == 200
                self.results[name].append((time.monotonic() - started) * 1000 if ok else None)
            except requests.RequestException:
                self.results[name].append(None)
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> dict[str, dict[str, Any]]:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
        summary = {}
        for name, values in self.results.items():
            answered = [v for v in values if v is not None]
            summary[name] = {"probes": len(values), "failed": len(values) - len(answered),
                             "p50_ms": round(percentile(answered, 50) or 0, 1),
                             "p95_ms": round(percentile(answered, 95) or 0, 1),
                             "p99_ms": round(percentile(answered, 99) or 0, 1),
                             "max_ms": round(max(answered), 1) if answered else None}
        return summary


def attack_front(database_url: str, stalled: int, drip_headers: int, drip_body: int, seconds: float,
                 log: Path) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with production(database_url, port, log):
        payment_id, checkout = create_payment(base)
        attack = Attack("127.0.0.1", port)
        attack.open("stalled", stalled)
        attack.open("drip-headers", drip_headers)
        attack.open("drip-body", drip_body)
        attack.start()
        probes = Probes(base, {"health": "/health", "payment": f"/payments/{payment_id}", "checkout": checkout})
        probes.start()
        time.sleep(seconds)
        result = {"probes": probes.finish(), "slow_connections": attack.summary()}
        attack.close()
    return result


def takes_down_bare(database_url: str, max_stalled: int, log: Path) -> dict[str, Any]:
    """The smallest number of one-byte stalled connections under which gunicorn alone stops answering /health."""
    port = free_port()
    tried = {}
    with bare_gunicorn(database_url, port, log):
        for count in range(1, max_stalled + 1):
            socks = []
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.send(b"G")
                socks.append(sock)
            time.sleep(6)  # past gthread's wait for a first byte: each stalled connection now holds a thread
            answered = 0
            for _ in range(3):
                try:
                    answered += requests.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
                except requests.RequestException:
                    pass
            tried[count] = answered
            for sock in socks:
                sock.close()
            if answered == 0:
                return {"down_with": count, "answered_of_3": tried}
            time.sleep(1)
    return {"down_with": None, "answered_of_3": tried}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--mode", choices=["front", "bare", "both"], default="both")
    parser.add_argument("--stalled", type=int, default=500)
    parser.add_argument("--drip-headers", type=int, default=200)
    parser.add_argument("--drip-body", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-stalled", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_front_{os.getpid()}.log"
    result: dict[str, Any] = {}
    bench_db = BenchDatabase(args.pg_url, "front")
    try:
        if args.mode in ("front", "both"):
            result["front"] = attack_front(bench_db.url, args.stalled, args.drip_headers, args.drip_body,
                                           args.seconds, log)
            rows = [[name, p["probes"], p["failed"], p["p50_ms"], p["p99_ms"], p["max_ms"]]
                    for name, p in result["front"]["probes"].items()]
            print(f"Through the front, with {args.stalled} stalled, {args.drip_headers} header-dripping and "
                  f"{args.drip_body} body-dripping connections open, for {args.seconds:g} s:")
            print_table(["probe", "requests", "failed", "p50 ms", "p99 ms", "max ms"], rows)
            rows = [[kind, s["opened"], s["refused_at_connect"], s["closed_by_server"], s["closed_after_s_median"],
                     s["closed_after_s_max"]] for kind, s in result["front"]["slow_connections"].items()]
            print_table(["slow connections", "opened", "refused", "closed by the front", "closed after s (median)",
                         "(max)"], rows)
        if args.mode in ("bare", "both"):
            result["bare"] = takes_down_bare(bench_db.url, args.max_stalled, log)
            print(f"gunicorn alone (no front): /health stops answering with {result['bare']['down_with']} stalled "
                  f"connections; /health answers out of 3 by count: {result['bare']['answered_of_3']}")
    finally:
        bench_db.close()
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
