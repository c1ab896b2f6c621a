"""The production shape end to end: gunicorn workers + a standalone watcher, real processes,
a simulated TronGrid and a real webhook receiver; then a crash in the middle of a retry schedule."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook

import migrate
from models import Transfer, WebhookEvent
from tests.conftest import PAYER, USDT, WALLET, Reply, lock_holder_pid, wait_for
from tron_sim import Simulator

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "tum_production_test_key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(block_interval=0.5, solidify_depth=2, usdt_contract=USDT, follow_clock=True) as simulator:
        yield simulator


def service_env(database_url: str, sim_url: str, port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "TRONGRID_API_URL": sim_url, "PORT": str(port),
            "API_KEYS": KEY, "WEBHOOK_SECRET": SECRET, "ALLOW_PRIVATE_CALLBACKS": "true",
            "POLLING_INTERVAL_SECONDS": "0.3", "TRONGRID_MAX_RPS": "200", "WATCHER_STRATEGY": "account",
            "WEBHOOK_RETRY_SCHEDULE": "1,1,1,1,1,1,1,1", "WEBHOOK_TIMEOUT_SECONDS": "2",
            "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "2", **extra}


def start_gunicorn(env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                             "app:create_app()"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{env['PORT']}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/stats", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    assert wait_for(up, timeout=30), "gunicorn did not come up"
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(20)


def create(base: str, callback: str, amount: str = "10") -> dict:
    r = requests.post(f"{base}/payments", headers={"Authorization": f"Bearer {KEY}"}, timeout=5, json={
        "wallet_address": WALLET, "expected_amount_usdt": amount, "order_id": f"o-{time.time_ns()}",
        "callback_url": callback})
    assert r.status_code == 201, r.text
    return r.json()


def test_gunicorn_workers_and_a_standalone_watcher_credit_once_and_deliver_signed(db, database_url, sim, receiver):
    port = free_port()
    env = service_env(database_url, sim.url, port)
    web = start_gunicorn(env)
    standalone = subprocess.Popen([sys.executable, "watcher.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        payment = create(base, receiver.url("/hook"))
        sim.transfer(WALLET, 10_000_000, from_=PAYER)
        assert wait_for(lambda: any(b'"payment.completed"' in r.body for r in receiver.to("/hook")), timeout=30)
        time.sleep(1.0)  # any double credit or duplicate delivery would show up by now
        got = requests.get(f"{base}/payments/{payment['id']}", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert got["status"] == "completed" and got["callback_success"] is True
        deliveries = receiver.to("/hook")
        for delivery in deliveries:
            Webhook(SECRET).verify(delivery.body, delivery.headers)
        bodies = [json.loads(d.body) for d in deliveries]
        assert all(b["data"]["id"] == payment["id"] for b in bodies)
        # seen in its block first (DETECT_UNCONFIRMED), at most once; then credited once
        types = [b["type"] for b in bodies]
        assert types in (["payment.detected", "payment.completed"], ["payment.completed"]), types
        with db.Session() as s:
            assert s.scalar(select(func.count()).select_from(Transfer)) == 1
            assert s.scalar(select(func.count()).select_from(WebhookEvent)) == len(types)
        # healthy once a cycle has finished within 3 polling intervals (0.9 s); on a loaded host one cycle of three
        # processes may take longer, which /health rightly shows as degraded for that moment
        seen: list[dict] = []

        def healthy() -> bool:
            seen.append(requests.get(f"{base}/health", timeout=5).json())
            return seen[-1]["status"] == "healthy"

        assert wait_for(healthy, timeout=15), seen[-1]
        assert seen[-1]["watcher"]["strategy"] == "account"
        assert lock_holder_pid(db) is not None  # exactly one of three processes holds the watcher lock
    finally:
        stop(standalone)
        stop(web)


def test_crash_in_the_middle_of_a_retry_schedule_keeps_the_event_id(db, database_url, sim, receiver):
    port = free_port()
    env = service_env(database_url, sim.url, port, DETECT_UNCONFIRMED="false")  # one event: the completion
    receiver.script("/flaky", *[Reply(status=500)] * 100)  # fails until told otherwise
    web = start_gunicorn(env)
    base = f"http://127.0.0.1:{port}"
    try:
        create(base, receiver.url("/flaky"))
        sim.transfer(WALLET, 10_000_000, from_=PAYER)
        assert wait_for(lambda: len(receiver.to("/flaky")) >= 2, timeout=30)
        stop(web, signal.SIGKILL)  # the whole service dies mid-schedule
        failed_ids = {r.headers["webhook-id"] for r in receiver.to("/flaky")}
        receiver.scripts["/flaky"] = []  # the receiver recovers
        with db.transaction() as session:  # the dead process's lease (timeout + 30 s) runs out: time moves on
            session.execute(update(WebhookEvent).where(WebhookEvent.lease_until.is_not(None))
                            .values(lease_until=func.now()))
        web = start_gunicorn(env)
        assert wait_for(lambda: receiver.to("/flaky")[-1].headers.get("x-ok") == "1" or any(
            e["state"] == "delivered" for e in events(base)), timeout=45)
        ids = {r.headers["webhook-id"] for r in receiver.to("/flaky")}
        assert ids == failed_ids and len(ids) == 1
        for delivery in receiver.to("/flaky"):
            Webhook(SECRET).verify(delivery.body, delivery.headers)
        assert len(receiver.to("/flaky")) >= 3  # two failures before the crash, then the success
        # an attempt sent just before the kill may not have been recorded: sent again, same id
        final = events(base)[0]
        assert final["state"] == "delivered" and final["attempts"] >= 2
    finally:
        stop(web)


def events(base: str) -> list[dict]:
    return requests.get(f"{base}/events", headers={"Authorization": f"Bearer {KEY}"}, timeout=5).json()["events"]


def test_the_app_factory_migrates_nothing_and_prints_nothing(empty_url: str, config, capsys) -> None:
    """`app:create_app()` in a worker builds the app only: the bootstrap (schema, first key, secret) is run once
    before serving, by gunicorn.conf.py or `python app.py`."""
    from app import create_app
    from web.services import services_of

    app = create_app(config.with_overrides(database_url=empty_url, api_keys=(), webhook_secret=None))
    services_of(app).db.dispose()
    assert migrate.current_revision(empty_url) is None
    assert capsys.readouterr().out == ""
