"""The sandbox network (TRON_NETWORK=sandbox): money sent through the /sandbox routes is mined on the database's
sandbox chain, found by the real watcher through its TronGrid client over HTTP, matched, and announced by signed
webhooks that the built-in inbox verifies; every process serves the same chain; off the sandbox the routes are 404."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask

from database import Database
from delivery.signing import signature_header
from infra.config import Config
from models import SandboxDelivery, SandboxTransfer
from sandbox.chain import Schedule, Segment, current_schedule, load_schedule, send_transfer
from sandbox.node import SandboxNode
from tests.conftest import TEST_API_KEY, WALLET, WALLET_B, count_rows, lock_holder_pid, set_fields, wait_for
from tron_client import TronClient
from tron_sim import random_address

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sandbox_config(config: Config, **extra: object) -> Config:
    """The sandbox with short blocks, a fast watcher, and no private callbacks but the service's own inbox."""
    return config.with_overrides(tron_network="sandbox", trongrid_api_url="", sandbox_block_seconds=0.3,
                                 tron_block_seconds=0.3, upstream_clock_skew_seconds=30.0, trongrid_max_rps=200.0,
                                 allow_private_callbacks=False, **extra)


@dataclass
class Service:
    url: str
    app: Flask

    def post(self, path: str, body: object = None, **kwargs: object) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=kwargs.pop("headers", AUTH), timeout=10, **kwargs)

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(self.url + path, headers=kwargs.pop("headers", AUTH), timeout=10, **kwargs)

    def payment(self, payment_id: str) -> dict:
        return self.get(f"/payments/{payment_id}").json()

    def create(self, amount: str, wallet: str = WALLET, callback: str | None = None) -> dict:
        r = self.post("/payments", {"wallet_address": wallet, "expected_amount_usdt": amount,
                                    "order_id": uuid.uuid4().hex, "callback_url": callback or self.inbox})
        assert r.status_code == 201, r.text
        return r.json()

    @property
    def inbox(self) -> str:
        return f"{self.url}/sandbox/inbox"


def serve(config: Config, db: Database, background: bool) -> Iterator[Service]:
    """The app on a real HTTP server on 127.0.0.1 at its configured port, with its background threads if asked."""
    from werkzeug.serving import make_server

    from app import create_app, start_background, stop_background

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    app = create_app(config, database=db)
    server = make_server("127.0.0.1", config.port, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if background:
        start_background(app)
    try:
        yield Service(f"http://127.0.0.1:{config.port}", app)
    finally:
        stop_background(app)
        server.shutdown()


@pytest.fixture(params=["account", "blocks"])
def service(request, config: Config, db: Database) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    """The sandbox service with its node, watcher (under each strategy) and webhook dispatcher running."""
    yield from serve(sandbox_config(config, port=free_port(), watcher_enabled=True, watcher_strategy=request.param),
                     db, background=True)


@pytest.fixture
def routes(config: Config, db: Database) -> Iterator[Service]:
    """The sandbox service's routes alone (no watcher): for what they accept and refuse."""
    yield from serve(sandbox_config(config, port=free_port()), db, background=False)


def deliveries(service: Service, payment_id: str) -> list[dict]:
    return service.get("/sandbox/inbox", params={"payment_id": payment_id}).json()["deliveries"]


def test_a_sandbox_payment_completes_and_its_signed_webhook_arrives_in_the_inbox(service: Service) -> None:
    payment = service.create("25")
    sent = service.post(f"/sandbox/payments/{payment['id']}/pay")
    assert sent.status_code == 202, sent.text
    tx = sent.json()
    assert tx["to"] == WALLET and tx["amount_usdt"] == "25" and tx["token"] == "usdt" and not tx["reverted"]
    assert wait_for(lambda: service.payment(payment["id"])["status"] == "completed", timeout=20)
    done = service.payment(payment["id"])
    assert done["received_amount_usdt"] == "25" and done["transaction_hash"] == tx["transaction_hash"]
    assert wait_for(lambda: deliveries(service, payment["id"]), timeout=15)
    [arrived] = deliveries(service, payment["id"])
    assert arrived["type"] == "payment.completed" and arrived["signature_verified"] is True
    assert arrived["event"]["data"]["status"] == "completed" and arrived["event"]["id"] == arrived["webhook_id"]
    assert service.get("/health").json()["network"] == "sandbox"
    assert service.get("/stats").json()["network"] == "sandbox"


def test_any_transfer_unmatched_fake_token_and_reverted_ones_credit_nothing(service: Service) -> None:
    first, second = service.create("10"), service.create("20")
    for body in ({"to": WALLET, "amount_usdt": "5"},  # two candidates, neither awaits 5: unmatched
                 {"to": WALLET, "amount_usdt": "10", "token": "fake"},  # calls itself USDT, another contract
                 {"to": WALLET, "amount_usdt": "10", "reverted": True}):  # failed on chain
        r = service.post("/sandbox/transfers", body)
        assert r.status_code == 202, r.text
        assert r.json()["token"] == body.get("token", "usdt")
    assert service.post(f"/sandbox/payments/{first['id']}/pay").status_code == 202  # its whole 10, matched exactly
    assert wait_for(lambda: service.payment(first["id"])["status"] == "completed", timeout=20)
    assert service.payment(first["id"])["received_amount_usdt"] == "10"
    assert service.payment(second["id"])["received_amount_usdt"] == "0"
    unmatched = lambda: service.get("/transfers", params={"status": "unmatched"}).json()["transfers"]  # noqa: E731
    assert wait_for(unmatched, timeout=15)
    assert [t["amount_usdt"] for t in unmatched()] == ["5"]
    amounts = sorted(t["amount_usdt"] for t in service.get("/transfers").json()["transfers"])
    assert amounts == ["10", "5"]  # the fake token's and the reverted transfer are not money


def test_routes_refuse_bad_input_with_4xx_and_store_nothing(routes: Service, db: Database) -> None:
    payment = routes.create("10")
    pay = f"/sandbox/payments/{payment['id']}/pay"
    send = "/sandbox/transfers"
    for path, body, field in ((pay, {"amount_usdt": "0"}, "amount_usdt"), (pay, {"amount_usdt": 1.5e-7}, "amount_usdt"),
                              (pay, {"amount": "1"}, "amount"),
                              (send, {"to": "Tnope", "amount_usdt": "1"}, "to"),
                              (send, {"to": WALLET}, "amount_usdt"),
                              (send, {"to": WALLET, "amount_usdt": "1", "token": "trx"}, "token"),
                              (send, {"to": WALLET, "amount_usdt": "1", "reverted": "yes"}, "reverted")):
        r = routes.post(path, body)
        assert r.status_code == 400 and r.json()["field"] == field, (body, r.text)
    assert routes.post(pay, headers={}).status_code == 401
    assert routes.post("/sandbox/transfers", {"to": WALLET, "amount_usdt": "1"}, headers={}).status_code == 401
    assert routes.get("/sandbox/inbox", headers={}).status_code == 401
    assert routes.post(f"/sandbox/payments/{uuid.uuid4()}/pay").json()["error"] == "payment_not_found"
    assert routes.post("/sandbox/payments/not-a-uuid/pay").status_code == 404
    r = requests.post(routes.url + pay, data="amount_usdt=1", headers={**AUTH, "Content-Type": "text/plain"},
                      timeout=5)
    assert r.status_code == 415
    set_fields(db, payment, received_amount_usdt=Decimal("10"))
    assert routes.post(pay).status_code == 409  # nothing remaining: an amount must be given
    assert count_rows(db, SandboxTransfer) == 0
    assert routes.post(pay, {"amount_usdt": "2.5"}).status_code == 202  # paying more is allowed when asked
    assert count_rows(db, SandboxTransfer) == 1


def signed(secret: str, body: str, msg_id: str = "evt_1") -> dict[str, str]:
    now = int(time.time())
    return {"webhook-id": msg_id, "webhook-timestamp": str(now), "Content-Type": "application/json",
            "webhook-signature": signature_header([secret], msg_id, now, body)}


def test_the_inbox_keeps_only_deliveries_signed_with_the_service_secret(routes: Service, db: Database,
                                                                        config: Config) -> None:
    payment_id = str(uuid.uuid4())
    body = json.dumps({"id": "evt_1", "type": "payment.completed", "created_at": "2026-12-04T09:00:00Z",
                       "data": {"id": payment_id, "status": "completed"}})
    inbox = routes.url + "/sandbox/inbox"
    assert requests.post(inbox, data=body, headers=signed(OTHER_SECRET, body), timeout=5).status_code == 401
    tampered = signed(config.webhook_secret, body)
    assert requests.post(inbox, data=body.replace("completed", "expired"), headers=tampered,
                         timeout=5).status_code == 401
    assert requests.post(inbox, data=body, headers={"Content-Type": "application/json"}, timeout=5).status_code == 401
    garbled = {**tampered, "webhook-signature": "nonsense"}
    assert requests.post(inbox, data=body, headers=garbled, timeout=5).json()["error"] == "invalid_signature"
    assert count_rows(db, SandboxDelivery) == 0
    r = requests.post(inbox, data=body, headers=signed(config.webhook_secret, body), timeout=5)
    assert r.status_code == 200 and r.json()["payment_id"] == payment_id
    [listed] = routes.get("/sandbox/inbox").json()["deliveries"]
    assert listed["event"] == json.loads(body) and listed["webhook_id"] == "evt_1"


def test_the_simulate_button_pays_the_remaining_amount_of_the_token_payment(routes: Service) -> None:
    payment = routes.create("12.5")
    path = urlsplit(payment["checkout_url"]).path
    page = routes.url + path
    r = requests.post(page + "/simulate", json={}, timeout=5)
    assert r.status_code == 202 and r.json()["amount_usdt"] == "12.5" and r.json()["to"] == WALLET
    # the page's plain form post (no JavaScript) goes back to the page, in its language
    r = requests.post(page + "/simulate", data={"lang": "zh"}, allow_redirects=False, timeout=5)
    assert r.status_code == 303 and r.headers["Location"].endswith(path + "?lang=zh")
    assert requests.post(routes.url + "/pay/" + "x" * 43 + "/simulate", timeout=5).status_code == 404
    assert requests.post(routes.url + "/pay/other/simulate", timeout=5).status_code == 404


def test_sandbox_routes_are_404_on_every_other_network(client, auth) -> None:  # type: ignore[no-untyped-def]
    pid = uuid.uuid4()
    for method, path in (("post", f"/sandbox/payments/{pid}/pay"), ("post", "/sandbox/transfers"),
                         ("post", "/sandbox/inbox"), ("get", "/sandbox/inbox"), ("post", "/pay/tok/simulate")):
        r = getattr(client, method)(path, headers=auth, json={"to": WALLET, "amount_usdt": "1"})
        assert r.status_code == 404 and r.get_json()["error"] == "not_found", (path, r.get_data())


def test_openapi_lists_the_sandbox_routes_on_the_sandbox(routes: Service) -> None:
    from tests.web.test_openapi import flask_routes

    spec = routes.get("/openapi.json").json()
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert documented == flask_routes(routes.app)
    assert {("/sandbox/inbox", "post"), ("/pay/{token}/simulate", "post")} <= documented


def test_callbacks_on_this_machine_stay_refused_but_the_own_inbox(routes: Service) -> None:
    r = routes.post("/payments", {"wallet_address": WALLET, "expected_amount_usdt": "1", "order_id": "x",
                                  "callback_url": "http://127.0.0.1:9/hook"})
    assert r.status_code == 400 and r.json()["field"] == "callback_url"
    assert routes.create("1", callback=routes.inbox)["callback_url"] == routes.inbox


# --- one chain per database -------------------------------------------------------------------------------------

def test_every_process_serves_the_same_chain(db: Database, config: Config) -> None:
    """Two nodes (as in two processes) on one database: the same heads, blocks and transaction ids; a transfer sent
    through either is in both, in the block it was sealed into."""
    cfg = sandbox_config(config)
    first, second = SandboxNode(db, cfg), SandboxNode(db, cfg)
    try:
        urls = first.start(), second.start()
        with db.transaction() as session:
            tx = send_transfer(session, cfg, WALLET_B, Decimal("3.25")).transaction_hash
        clients = [TronClient(url, cfg.usdt_contract) for url in urls]
        assert wait_for(lambda: all(c.get_transaction_info(tx) for c in clients), timeout=10)
        infos = [c.get_transaction_info(tx) for c in clients]
        assert infos[0] == infos[1] and infos[0] is not None
        number = infos[0].block_number
        blocks = [requests.post(url + "/wallet/getblockbynum", json={"num": number}, timeout=5).json()
                  for url in urls]
        assert blocks[0] == blocks[1] and tx in [t["txID"] for t in blocks[0]["transactions"]]
        [listed] = clients[1].list_trc20_transfers(WALLET_B, 0)
        assert listed.transaction_id == tx and listed.amount == 3_250_000
    finally:
        first.stop()
        second.stop()


def test_a_node_follows_a_chain_started_anew_in_the_database(db: Database, config: Config) -> None:
    from sqlalchemy import delete

    from models import ServiceState

    cfg = sandbox_config(config)
    node = SandboxNode(db, cfg)
    try:
        client = TronClient(node.start(), cfg.usdt_contract)
        old = node.genesis
        with db.transaction() as session:  # what db_manager.py reset leaves: no chain at all
            session.execute(delete(ServiceState).where(ServiceState.key == "sandbox_chain"))
        time.sleep(0.4)  # the new chain's first block is on a later interval boundary than the old one's
        with db.transaction() as session:
            tx = send_transfer(session, cfg, WALLET, Decimal("1")).transaction_hash
        assert wait_for(lambda: client.get_transaction_info(tx), timeout=10)
        with db.Session() as session:
            assert node.genesis == load_schedule(session).start != old  # the new chain, not the old one
    finally:
        node.stop()


def test_a_schedule_keeps_sealed_blocks_when_the_interval_changes(db: Database, config: Config) -> None:
    with db.transaction() as session:
        before = current_schedule(session, sandbox_config(config))
    time.sleep(0.4)
    with db.transaction() as session:
        after = current_schedule(session, sandbox_config(config).with_overrides(sandbox_block_seconds=1.0))
    assert after.sealed >= before.sealed + 1 and after.block_ms == 1000
    assert [after.timestamp(n) for n in range(before.sealed - 2, after.sealed + 1)] == \
        [before.timestamp(n) for n in range(before.sealed - 2, after.sealed + 1)]
    assert after.timestamp(after.sealed + 1) == after.timestamp(after.sealed) + 1000


def test_a_schedule_maps_times_to_blocks_across_segments() -> None:
    schedule = Schedule((Segment(100, 10_000, 300), Segment(110, 15_700, 3000)), 109)
    assert [schedule.timestamp(n) for n in (99, 100, 109, 110, 111)] == [9_700, 10_000, 12_700, 15_700, 18_700]
    assert [schedule.height_at(ms) for ms in (9_999, 10_000, 12_999, 15_699, 15_700, 18_699, 18_700)] == \
        [99, 100, 109, 109, 110, 110, 111]  # the old interval never runs into the next segment


# --- real processes ---------------------------------------------------------------------------------------------

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
INHERITED = ("TRON_NETWORK", "TRONGRID_API_URL", "DATABASE_URL", "PORT", "HOST", "API_KEYS", "WEBHOOK_SECRET",
             "POLLING_INTERVAL_SECONDS", "ALLOW_PRIVATE_CALLBACKS", "LOG_FORMAT", "LOG_LEVEL", "RATE_SOURCES")


def sandbox_env(database_url: str, port: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in INHERITED}
    return {**base, "DATABASE_URL": database_url, "TRON_NETWORK": "sandbox", "PORT": str(port),
            "API_KEYS": TEST_API_KEY, "WEBHOOK_SECRET": SECRET, "SANDBOX_BLOCK_SECONDS": "0.3",
            "POLLING_INTERVAL_SECONDS": "0.3", "TRONGRID_MAX_RPS": "200", "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "2"}


def worker_pids(access_log: Path, request_start: str) -> set[str]:
    """The workers (by pid) whose access log lines start with this request line."""
    return {line.split()[0] for line in access_log.read_text().splitlines() if request_start in line}


@pytest.mark.parametrize("leader", ["a worker", "watcher.py"])
def test_under_gunicorn_a_transfer_sent_through_either_worker_is_seen_by_the_leading_watcher(
        db: Database, database_url: str, tmp_path: Path, leader: str) -> None:
    """Two gunicorn workers; the leading watcher is one of theirs, or a standalone `python watcher.py` (the
    workers' then off): every payment paid through either worker completes and its webhook is verified."""
    port = free_port()
    env = sandbox_env(database_url, port)
    access_log = tmp_path / "access.log"
    processes = []
    with open(access_log, "w") as out, open(tmp_path / "error.log", "w") as err:
        if leader == "watcher.py":
            env["WATCHER_ENABLED"] = "false"
            processes.append(subprocess.Popen([sys.executable, "watcher.py"], cwd=ROOT, env=env, stdout=err,
                                              stderr=err, start_new_session=True))
        processes.append(subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                           "--access-logformat", "%(p)s %(r)s %(s)s", "app:create_app()"], cwd=ROOT,
                                          env=env, stdout=out, stderr=err, start_new_session=True))
    service = Service(f"http://127.0.0.1:{port}", Flask(__name__))
    try:
        assert wait_for(lambda: _answers(service), timeout=30), (tmp_path / "error.log").read_text()[-3000:]
        paid: list[str] = []
        while len(worker_pids(access_log, "POST /sandbox/payments/")) < 2 and len(paid) < 40:
            payment = service.create("7.5", wallet=random_address())  # each request on a new connection
            assert service.post(f"/sandbox/payments/{payment['id']}/pay").status_code == 202
            paid.append(payment["id"])
        assert len(worker_pids(access_log, "POST /sandbox/payments/")) == 2, access_log.read_text()
        for payment_id in paid:
            assert wait_for(lambda: service.payment(payment_id)["status"] == "completed", timeout=20), payment_id  # noqa: B023
            assert wait_for(lambda: deliveries(service, payment_id), timeout=15)  # noqa: B023
        assert service.get("/health").json()["watcher"]["network"] == "sandbox"
        if leader == "watcher.py":
            assert lock_holder_pid(db) == processes[0].pid
    finally:
        for proc in processes:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def _answers(service: Service) -> bool:
    try:
        return service.get("/stats").status_code == 200
    except requests.RequestException:
        return False


def readme_quick_start() -> str:
    """The shell block of the README's "Try it: a payment in the sandbox"."""
    section = (ROOT / "README.md").read_text().split("### Try it: a payment in the sandbox", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_sandbox_quick_start_runs_in_a_fresh_clone(empty_url: str, tmp_path: Path) -> None:
    """`git clone`, `python3 dev.py serve` (its own database, no network setting), then the README's commands as
    written, but for the port, the printed key and the wait (short blocks here)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=60)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    port = free_port()
    dropped = (*INHERITED, "TEST_DATABASE_URL", "TEST_RUN_DATABASE_URL")
    env = {**{k: v for k, v in os.environ.items() if k not in dropped}, "DATABASE_URL": empty_url,
           "PORT": str(port), "SANDBOX_BLOCK_SECONDS": "0.3", "POLLING_INTERVAL_SECONDS": "0.3"}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        serve = subprocess.Popen([sys.executable, "dev.py", "serve"], cwd=clone, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        key = re.compile(r"Created the first API key \(shown only once, store it now\): (\S+)")
        assert wait_for(lambda: key.search(log.read_text()) and _answers(Service(f"http://127.0.0.1:{port}",
                                                                                  Flask(__name__))), timeout=120), \
            log.read_text()[-3000:]
        assert "TRON_NETWORK=sandbox" in log.read_text()
        inbox = (f'curl -s "http://127.0.0.1:{port}/sandbox/inbox?payment_id=$PAYMENT_ID"'
                 ' -H "Authorization: Bearer $API_KEY"')
        wait = f"for i in $(seq 150); do {inbox} | grep -q payment.completed && break; sleep 0.2; done"
        script = re.sub(r"^sleep .*$", wait, readme_quick_start().replace("tum_...", key.search(log.read_text())[1])
                        .replace("5000", str(port)), flags=re.MULTILINE)
        done = subprocess.run(["bash", "-e", "-c", script], cwd=clone, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        sent, payment, arrived = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        assert payment["status"] == "completed" and payment["transaction_hash"] == sent["transaction_hash"]
        [delivery] = arrived["deliveries"]
        assert delivery["type"] == "payment.completed" and delivery["signature_verified"] is True
        assert delivery["event"]["data"]["id"] == payment["id"]
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(30)


def test_the_own_inbox_is_also_reached_through_the_public_base_url() -> None:
    from infra.config import load_config
    from sandbox.inbox import private_callbacks

    config = load_config({"TRON_NETWORK": "sandbox", "PUBLIC_BASE_URL": "http://10.0.0.5:8080"})
    assert private_callbacks(config).allows("http://10.0.0.5:8080/sandbox/inbox")
    assert not private_callbacks(config).allows("http://10.0.0.5:8080/elsewhere")
    mainnet = load_config({"PUBLIC_BASE_URL": "http://10.0.0.5:8080"})
    assert not private_callbacks(mainnet).allows("http://10.0.0.5:8080/sandbox/inbox")
