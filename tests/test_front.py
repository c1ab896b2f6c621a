"""The production front: `python3 dev.py production` (nginx before gunicorn on a Unix socket) holds hostile
clients, answers the rest, believes X-Forwarded-For only from itself, and stops whole within 15 s."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from app import ProxiedClientAddress
from bench.common import free_port
from bench.front import KEY, Attack, Probes, create_payment, service_env, wait_answering

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin") is None,
                                reason="nginx not installed (Debian package nginx; `dev.py test` installs it)")


@pytest.fixture
def front(empty_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    port = free_port()
    log = tmp_path / "production.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "dev.py"), "production"], cwd=ROOT,
                                env=service_env(empty_url, port), stdout=out, stderr=out)
    try:
        wait_answering(f"http://127.0.0.1:{port}", proc, log)
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        if proc.poll() is None:  # stopped as Ctrl-C stops it: nginx and gunicorn go with it
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def descendants(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def test_hostile_clients_do_not_hold_the_service_and_a_stop_leaves_nothing(front) -> None:  # type: ignore[no-untyped-def]
    """500 connections that send a byte and stall, 200 that drip header lines, 50 that drip a body slower than the
    front's body timeout, all at once from 127.0.0.2 and up: the probes from 127.0.0.1 keep answering quickly, and
    the front closes every slow connection within its timeouts. Then Ctrl-C stops nginx, gunicorn and every worker
    within 15 s."""
    base, proc, log = front
    payment_id, checkout = create_payment(base)
    port = int(base.rsplit(":", 1)[1])
    attack = Attack("127.0.0.1", port)
    attack.open("stalled", 500)
    attack.open("drip-headers", 200)
    attack.open("drip-body", 50)
    attack.start()
    probes = Probes(base, {"health": "/health", "payment": f"/payments/{payment_id}", "checkout": checkout},
                    interval=0.2)
    probes.start()
    time.sleep(13)  # past the front's 10 s header and body timeouts
    results = probes.finish()
    slow = attack.summary()
    attack.close()
    # A slow client that held a worker or the front would show as failed probes or probes of seconds (the front's
    # timeouts are 10 s). Quick: 19 probes in 20 within 100 ms and none over 1 s. (About 65 probes a path: their
    # p99 is their slowest one, which the attack's threads, in this process, and 2 cores can push past 100 ms.)
    for name, probe in results.items():
        assert probe["failed"] == 0 and probe["probes"] >= 40, (name, probe)
        assert probe["p95_ms"] < 100 and probe["max_ms"] < 1000, (name, probe)
    for kind, count in (("stalled", 500), ("drip-headers", 200), ("drip-body", 50)):
        assert slow[kind]["opened"] == count and slow[kind]["closed_by_server"] == count, (kind, slow[kind])
        assert slow[kind]["closed_after_s_max"] <= 12.5, (kind, slow[kind])

    processes = descendants(proc)
    assert {p.name() for p in processes} >= {"nginx"} and len(processes) >= 5  # nginx master+workers, gunicorn
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=16) == 0, log.read_text()[-2000:]
    assert time.monotonic() - started < 15
    gone, alive = psutil.wait_procs(processes, timeout=1)
    assert alive == [], [(p.pid, p.name()) for p in alive]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/health", timeout=2)


def test_a_request_body_over_64_kb_is_refused_by_the_front_in_the_apis_shape(front) -> None:  # type: ignore[no-untyped-def]
    base, _, _ = front
    answer = requests.post(f"{base}/payments", data=b"{" + b" " * 70_000 + b"}", timeout=10,
                           headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"] == "payload_too_large"
    assert answer.headers["Content-Type"].startswith("application/json")


def test_the_public_pages_are_limited_per_address_and_the_api_is_not(front) -> None:  # type: ignore[no-untyped-def]
    base, _, _ = front
    _, checkout = create_payment(base)
    with requests.Session() as session:
        pages = [session.get(f"{base}{checkout}/status", timeout=5).status_code for _ in range(60)]
        api = [session.get(f"{base}/health", timeout=5).status_code for _ in range(60)]
    assert 429 in pages and pages[:20] == [200] * 20  # the burst, then 10 a second
    assert set(api) == {200}


def test_a_client_cannot_claim_an_address_through_x_forwarded_for() -> None:
    """Behind the front (the peer is the Unix socket: no IP) the header nginx set is the client's address; on TCP
    the peer's own address stands, whatever the client sends."""
    seen: list[str] = []

    def app(environ, start_response):  # type: ignore[no-untyped-def]
        seen.append(environ["REMOTE_ADDR"])
        return []

    wrapped = ProxiedClientAddress(app)
    wrapped({"REMOTE_ADDR": "", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}, None)
    wrapped({"REMOTE_ADDR": "198.51.100.2", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}, None)
    wrapped({"REMOTE_ADDR": "", "HTTP_X_FORWARDED_FOR": "not an address"}, None)
    wrapped({"REMOTE_ADDR": "", "HTTP_X_FORWARDED_FOR": "10.0.0.1, 203.0.113.9"}, None)
    assert seen == ["203.0.113.7", "198.51.100.2", "", "203.0.113.9"]


def test_a_quick_stop_is_quick_while_request_threads_are_stuck(empty_url: str, tmp_path: Path) -> None:
    """Stalled clients hold gthread request threads; a worker's exit used to join them, so gunicorn took its whole
    graceful_timeout (20 s) to stop, its workers' watchers still running meanwhile. worker_exit now ends the worker
    once its background threads are stopped."""
    import socket

    port = free_port()
    log = tmp_path / "gunicorn.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"],
                                cwd=ROOT, env=service_env(empty_url, port), stdout=out, stderr=out,
                                start_new_session=True)
    stalled = []
    try:
        wait_answering(f"http://127.0.0.1:{port}", proc, log)
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.send(b"G")
            stalled.append(sock)
        time.sleep(6)  # past gthread's 5 s wait for a first byte: each connection now holds a request thread
        workers = descendants(proc)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        assert time.monotonic() - started < 5, log.read_text()[-2000:]
        assert psutil.wait_procs(workers, timeout=1)[1] == []
    finally:
        for sock in stalled:
            sock.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_nothing_outlives_a_killed_dev_py_production(front) -> None:  # type: ignore[no-untyped-def]
    """However dev.py dies (here SIGKILL, no chance to clean up), the kernel tells nginx and gunicorn to stop."""
    base, proc, _ = front
    processes = descendants(proc)
    assert len(processes) >= 5
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(processes, timeout=25)
    assert alive == [], [(p.pid, p.name()) for p in alive]


def test_a_second_dev_py_production_on_a_taken_port_changes_nothing(front, empty_url: str) -> None:  # type: ignore[no-untyped-def]
    base, _, _ = front
    port = int(base.rsplit(":", 1)[1])
    second = subprocess.run([sys.executable, str(ROOT / "dev.py"), "production"], cwd=ROOT,
                            env=service_env(empty_url, port), capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "is in use" in second.stderr
    assert requests.get(f"{base}/health", timeout=5).status_code == 200  # the first one is untouched


def test_the_fronts_own_errors_are_json(front) -> None:  # type: ignore[no-untyped-def]
    """What nginx answers itself (a request line too long, gunicorn unreachable) keeps the API's JSON shape."""
    base, _, _ = front
    long_line = requests.get(f"{base}/payments?order_id={'x' * 9000}", timeout=10)
    assert long_line.status_code == 414 and long_line.json()["error"] == "uri_too_long"
