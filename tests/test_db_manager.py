"""db_manager.py run as a real subprocess against the test database; setup_postgres.sh against the local server."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

import migrate
from database import Database
from models import (
    ApiKey,
    EventState,
    Notification,
    Payment,
    PaymentLog,
    PaymentStatus,
    Transfer,
    TransferStatus,
    WebhookEvent,
)
from tests.conftest import STORED_PAYER, STORED_WALLET, add_event, add_payment, add_transfer
from web.auth import is_valid_key

ROOT = Path(__file__).resolve().parent.parent
WALLET = STORED_WALLET
OTHER_WALLET = STORED_PAYER
LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432"
UNREACHABLE_URL = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"


# --- helpers -------------------------------------------------------------------------------------

def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # Empty values count as unset and keep a developer's .env from leaking into the tests.
    env.update({"DATABASE_URL": "", "API_KEYS": "", "WEBHOOK_SECRET": "", "LOG_LEVEL": "INFO",
                "MERCHANT_WEBHOOK_URL": ""})
    env.update(extra)
    return env


def run_cli(url: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "db_manager.py", "--database-url", url, *args],
        cwd=ROOT, env=env or cli_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """A failure: non-zero, one line on stderr, no traceback; returns that line."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def add_log(session: Any, payment: Payment | None, message: str) -> None:
    session.add(PaymentLog(payment_id=payment.id if payment else None, event_type="note", message=message))


def age_logs(db: Database, message: str, days: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE payment_logs SET created_at = now() - make_interval(days => :d) WHERE message = :m"),
                     {"d": days, "m": message})


@pytest.fixture
def fresh_database(pg_server: str) -> Iterator[str]:
    """An empty database (no schema) on the test server, dropped afterwards."""
    name = f"tron_dbm_{uuid.uuid4().hex[:10]}"
    admin_url = make_url(pg_server).set(database="postgres").render_as_string(hide_password=False)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- create-tables and test ----------------------------------------------------------------------

def test_create_tables_twice_is_idempotent(database_url: str, db: Database) -> None:
    for _ in range(2):
        out = ok(run_cli(database_url, "create-tables"))
        assert "schema already up to date" in out
        assert f"schema revision after: {migrate.head_revision()} (head)" in out


def test_fresh_database_reports_missing_schema_then_create_tables_runs_concurrently(fresh_database: str) -> None:
    line = one_line_failure(run_cli(fresh_database, "test"))
    assert "create-tables" in line
    assert "create-tables" in one_line_failure(run_cli(fresh_database, "stats"))

    procs = [
        subprocess.Popen([sys.executable, "db_manager.py", "--database-url", fresh_database, "create-tables"],
                         cwd=ROOT, env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert sum("schema upgraded" in out for out, _ in outputs) == 1
    assert migrate.current_revision(fresh_database) == migrate.head_revision()
    out = ok(run_cli(fresh_database, "test"))
    assert out.strip().endswith("ok")


def test_test_command_reports_server_database_and_revision(database_url: str, db: Database) -> None:
    out = ok(run_cli(database_url, "test"))
    assert "server: PostgreSQL" in out
    assert f"database: {make_url(database_url).database}" in out
    assert f"schema revision: {migrate.head_revision()} (head: {migrate.head_revision()})" in out


@pytest.mark.parametrize("command", [["test"], ["stats"], ["create-tables"], ["create-api-key"]])
def test_unreachable_database_is_one_clear_line(command: list[str]) -> None:
    line = one_line_failure(run_cli(UNREACHABLE_URL, *command))
    assert line.startswith("error: cannot connect to the database at ")
    assert "127.0.0.1:1/nowhere" in line
    assert "s3cret-pw" not in line


def test_invalid_database_url_is_a_configuration_error() -> None:
    line = one_line_failure(run_cli("mysql://root@localhost/db", "test"))
    assert "DATABASE_URL" in line


# --- stats, export, cleanup-logs ------------------------------------------------------------------

def populate(db: Database) -> dict[str, Any]:
    with db.transaction() as s:
        pending = add_payment(s)
        add_payment(s, amount="3")
        done = add_payment(s, PaymentStatus.completed, "7.25", received="7.25")
        add_payment(s, PaymentStatus.failed, "2", failure_reason="cancelled")
        add_payment(s, PaymentStatus.expired, "4")
        credited = add_transfer(s, "7.25", TransferStatus.credited, done)
        add_transfer(s, "1.000001", TransferStatus.unmatched)
        add_event(s, done, EventState.delivered)
        add_event(s, pending, EventState.pending)
        add_event(s, pending, EventState.failed)
        for i in range(4):
            add_log(s, done, f"log {i}")
        return {"pending": pending.id, "done": done.id, "credited_tx": credited.transaction_hash}


def test_stats_counts_rows(database_url: str, db: Database) -> None:
    populate(db)
    with db.transaction() as s:
        s.add(Notification(id="ntf_1", event_type="payment.completed", target="0" * 64, scheme="json", title="t",
                           body="b", state=EventState.failed, attempts=7))
    stats = json.loads(ok(run_cli(database_url, "stats", "--json")))
    assert stats["payments"] == {"total": 5, "pending": 2, "completed": 1, "failed": 1, "expired": 1, "cancelled": 1}
    assert stats["transfers"] == {"total": 2, "unmatched": 1, "credited": 1, "set_aside": 0}
    assert stats["webhook_events"] == {"total": 3, "pending": 1, "delivered": 1, "failed": 1,
                                       "no_target": 0, "superseded": 0}
    assert stats["notifications"] == {"total": 1, "pending": 0, "delivered": 0, "failed": 1}
    assert stats["payment_logs"]["total"] == 4
    text_out = ok(run_cli(database_url, "stats"))
    for expected in ("payments: 5", "  pending: 2", "  failed: 1 (cancelled: 1)", "transfers: 2", "  unmatched: 1",
                     "webhook events: 3", "  delivered: 1"):
        assert expected in text_out.splitlines()
    assert text_out.splitlines()[-1].startswith("payment logs: 4 (oldest ")


def test_export_writes_json_with_money_strings(database_url: str, db: Database, tmp_path: Path) -> None:
    ids = populate(db)
    target = tmp_path / "export.json"
    out = ok(run_cli(database_url, "export", "--file", str(target)))
    assert "5 payments, 2 transfers, 3 webhook events, 4 payment logs" in out
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    data = json.loads(target.read_text())
    assert data["counts"] == {"payments": 5, "transfers": 2, "webhook_events": 3, "payment_logs": 4}
    assert data["schema_revision"] == migrate.head_revision()
    payments = {p["id"]: p for p in data["payments"]}
    done = payments[str(ids["done"])]
    assert done["expected_amount_usdt"] == "7.25" and done["received_amount_usdt"] == "7.25"
    assert done["status"] == "completed" and done["metadata"] == {"k": "v"}
    assert isinstance(done["created_at"], str) and done["created_at"].endswith("Z")
    assert payments[str(ids["pending"])]["expected_amount_usdt"] == "10.5"
    assert sorted(t["amount_usdt"] for t in data["transfers"]) == ["1.000001", "7.25"]
    assert {e["state"] for e in data["webhook_events"]} == {"pending", "delivered", "failed"}
    assert all(log["payment_id"] == str(ids["done"]) for log in data["payment_logs"])
    assert "key_hash" not in target.read_text()

    stdout = ok(run_cli(database_url, "export", "--file", "-"))
    assert json.loads(stdout)["counts"] == data["counts"]


def test_export_to_missing_directory_fails_cleanly(database_url: str, db: Database, tmp_path: Path) -> None:
    line = one_line_failure(run_cli(database_url, "export", "--file", str(tmp_path / "no" / "such" / "x.json")))
    assert "does not exist" in line


def test_cleanup_logs_deletes_only_old_logs_of_settled_payments(database_url: str, db: Database) -> None:
    with db.transaction() as s:
        pending = add_payment(s)
        done = add_payment(s, PaymentStatus.completed, "5", received="5")
        undelivered = add_payment(s, PaymentStatus.completed, "6", received="6")
        add_event(s, undelivered, EventState.pending)
        add_log(s, done, "old settled")
        add_log(s, None, "old orphan")
        add_log(s, pending, "old pending")
        add_log(s, undelivered, "old undelivered event")
        add_log(s, done, "recent settled")
    for message in ("old settled", "old orphan", "old pending", "old undelivered event"):
        age_logs(db, message, 40)
    age_logs(db, "recent settled", 10)

    assert ok(run_cli(database_url, "cleanup-logs", "--days", "30", "--dry-run")).startswith("would delete 2 ")
    out = ok(run_cli(database_url, "cleanup-logs", "--days", "30"))
    assert out.startswith("deleted 2 payment log rows older than 30 days")
    with db.transaction() as s:
        left = set(s.scalars(select(PaymentLog.message)))
    assert left == {"old pending", "old undelivered event", "recent settled"}
    assert ok(run_cli(database_url, "cleanup-logs", "--days", "1")).startswith("deleted 1 payment log row ")


# --- reset ---------------------------------------------------------------------------------------

@pytest.fixture
def own_db(empty_url: str) -> Iterator[Database]:
    """A database of this test's own, migrated and populated, its pool closed: a reset refuses while any service
    process (another test's background thread included) holds a connection to its database."""
    migrate.upgrade_to_head(empty_url)
    db = Database(empty_url)
    populate(db)
    db.engine.dispose()
    yield db
    db.dispose()


def test_reset_requires_confirmation_without_a_tty(empty_url: str, own_db: Database) -> None:
    line = one_line_failure(run_cli(empty_url, "reset"))
    assert "--yes" in line
    with own_db.transaction() as s:
        assert len(s.scalars(select(Payment)).all()) == 5


def test_reset_refuses_while_a_service_uses_the_database(empty_url: str, own_db: Database) -> None:
    """A reset under a running service would delete the API keys and webhook secret it goes on using."""
    with own_db.engine.connect():  # a service process's connection (application_name tron-usdt-monitor:<pid>)
        line = one_line_failure(run_cli(empty_url, "reset", "--yes"))
    assert "running service" in line and f"tron-usdt-monitor:{os.getpid()}" in line and "stop it" in line
    with own_db.transaction() as s:
        assert len(s.scalars(select(Payment)).all()) == 5


def test_reset_yes_empties_everything(empty_url: str, own_db: Database) -> None:
    ok(run_cli(empty_url, "create-api-key"))
    out = ok(run_cli(empty_url, "reset", "--yes"))
    assert f"recreated at revision {migrate.head_revision()}" in out
    with own_db.transaction() as s:
        for model in (Payment, PaymentLog, Transfer, WebhookEvent, ApiKey):
            assert s.scalars(select(model)).all() == []
    assert migrate.current_revision(empty_url) == migrate.head_revision()


# --- API keys ------------------------------------------------------------------------------------

def test_api_key_lifecycle(database_url: str, db: Database) -> None:
    out = ok(run_cli(database_url, "create-api-key", "--name", "shop backend"))
    key = out.strip().splitlines()[-1]
    assert key.startswith("tum_") and len(key) > 30
    with db.transaction() as s:
        assert is_valid_key(s, key, ())
        assert s.scalar(select(ApiKey.key_hash)) == hashlib.sha256(key.encode()).hexdigest()

    listing = ok(run_cli(database_url, "list-api-keys"))
    assert key[:12] in listing and "shop backend" in listing and key not in listing

    assert "revoked" in ok(run_cli(database_url, "revoke-api-key", key[:12]))
    with db.transaction() as s:
        assert not is_valid_key(s, key, ())
    listing_row = ok(run_cli(database_url, "list-api-keys")).splitlines()[1]
    assert not listing_row.rstrip().endswith("-")  # the REVOKED column now has a time

    assert "no active API key" in one_line_failure(run_cli(database_url, "revoke-api-key", key[:12]))
    assert "no active API key" in one_line_failure(run_cli(database_url, "revoke-api-key", "tum_nosuchkey"))
    assert "at least" in one_line_failure(run_cli(database_url, "revoke-api-key", "tum"))


@pytest.mark.parametrize("args", [
    ["cleanup-logs", "--days", "0"],
    ["cleanup-logs", "--days", "seven"],
    ["cleanup-logs"],
    ["export"],
    ["create-api-key", "--name", "x" * 129],
    ["assign-transfer", "abc:0", str(uuid.uuid4())],
    ["assign-transfer", "a" * 64, str(uuid.uuid4())],
    ["assign-transfer", "a" * 64 + ":-1", str(uuid.uuid4())],
    ["assign-transfer", "g" * 64 + ":0", str(uuid.uuid4())],
    ["assign-transfer", "a" * 64 + ":0", "not-a-uuid"],
    ["no-such-command"],
    [],
])
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = run_cli(UNREACHABLE_URL, *args)  # never reaches the database
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


def test_database_url_option_after_the_command(database_url: str, db: Database) -> None:
    result = subprocess.run(
        [sys.executable, "db_manager.py", "test", "--database-url", database_url],
        cwd=ROOT, env=cli_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert ok(result).strip().endswith("ok")


# --- webhook secret and assign-transfer (delivery/signing.py, ledger/matching.py) ------------------------------

def secret_fields(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.strip().splitlines())


def test_show_and_rotate_webhook_secret(database_url: str, db: Database) -> None:
    first = secret_fields(ok(run_cli(database_url, "show-webhook-secret")))
    assert first["current"].startswith("whsec_")
    assert first == secret_fields(ok(run_cli(database_url, "show-webhook-secret")))

    new_secret = ok(run_cli(database_url, "rotate-webhook-secret")).strip().splitlines()[-1]
    assert new_secret.startswith("whsec_") and new_secret != first["current"]
    after = secret_fields(ok(run_cli(database_url, "show-webhook-secret")))
    assert after["current"] == new_secret
    assert after["previous"] == first["current"]


def test_assign_transfer_credits_an_unmatched_transfer(database_url: str, db: Database) -> None:
    with db.transaction() as s:
        payment = add_payment(s, amount="12", created_ago=timedelta(hours=2))
        transfer = add_transfer(s, "12", TransferStatus.unmatched, log_index=3)
        elsewhere = add_transfer(s, "12", TransferStatus.unmatched, wallet=OTHER_WALLET)
        extra = add_transfer(s, "0.5", TransferStatus.unmatched, log_index=1)
    ref = f"{transfer.transaction_hash.upper()}:3"

    out = ok(run_cli(database_url, "assign-transfer", ref, str(payment.id)))
    assert f"credited to payment {payment.id}: status completed, received 12 of 12 USDT" in out
    with db.transaction() as s:
        row = s.scalars(select(Transfer).where(Transfer.id == transfer.id)).one()
        assert row.status == TransferStatus.credited and row.payment_id == payment.id
        assert s.get(Payment, payment.id).status == PaymentStatus.completed  # type: ignore[union-attr]
        assert "assigned" in set(s.scalars(select(PaymentLog.event_type).where(PaymentLog.payment_id == payment.id)))
    # Announced as transfer.assigned, the transfer with the payment: without MERCHANT_WEBHOOK_URL, stored with no
    # target; with it, queued for it.
    [assigned] = assigned_events(db)
    assert assigned.state == EventState.no_target and assigned.payment_id is None and assigned.callback_url is None
    data = json.loads(assigned.body)["data"]
    assert (data["transfer"]["transaction_hash"], data["transfer"]["status"]) == (transfer.transaction_hash,
                                                                                 "credited")
    assert (data["payment"]["id"], data["payment"]["status"]) == (str(payment.id), "completed")
    merchant = "http://127.0.0.1:9/merchant"
    ok(run_cli(database_url, "assign-transfer", f"{extra.transaction_hash}:1", str(payment.id),
               env=cli_env(MERCHANT_WEBHOOK_URL=merchant)))
    assert [(e.state, e.callback_url) for e in assigned_events(db)] == [(EventState.no_target, None),
                                                                        (EventState.pending, merchant)]

    assert "already credited" in one_line_failure(run_cli(database_url, "assign-transfer", ref, str(payment.id)))
    missing = f"{'b' * 64}:0"
    assert "no observed transfer" in one_line_failure(run_cli(database_url, "assign-transfer", missing,
                                                              str(payment.id)))
    wrong_wallet = f"{elsewhere.transaction_hash}:0"
    assert "wallet" in one_line_failure(run_cli(database_url, "assign-transfer", wrong_wallet, str(payment.id)))
    assert "no payment" in one_line_failure(run_cli(database_url, "assign-transfer", wrong_wallet,
                                                    str(uuid.uuid4())))


def assigned_events(db: Database) -> list[WebhookEvent]:
    with db.Session() as s:
        return list(s.scalars(select(WebhookEvent).where(WebhookEvent.type == "transfer.assigned")
                              .order_by(WebhookEvent.seq)))


# --- setup_postgres.sh ---------------------------------------------------------------------------

def local_admin_reachable() -> bool:
    if shutil.which("psql") is None:
        return False
    probe = subprocess.run(["psql", "-X", "-At", f"{LOCAL_ADMIN_URL}/postgres", "-c", "SELECT 1"],
                           capture_output=True, text=True, timeout=15)
    return probe.returncode == 0 and probe.stdout.strip() == "1"


def admin_query(sql: str, database: str = "postgres") -> str:
    result = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", f"{LOCAL_ADMIN_URL}/{database}",
                             "-c", sql], capture_output=True, text=True, timeout=30, check=True)
    return result.stdout.strip()


def scram_matches(verifier: str, password: str) -> bool:
    """Check a PostgreSQL SCRAM-SHA-256 verifier (pg_authid.rolpassword) against a password."""
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == stored_key


def run_setup(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "setup_postgres.sh"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


def test_setup_postgres_is_idempotent_and_gives_a_working_role(tmp_path: Path) -> None:
    if not local_admin_reachable():
        pytest.skip(f"no PostgreSQL superuser reachable with psql at {LOCAL_ADMIN_URL}")
    name = f"tron_setup_{uuid.uuid4().hex[:8]}"
    password_file = tmp_path / "pw"
    env = cli_env(DATABASE_URL=f"postgresql://{name}@127.0.0.1:5432/{name}", POSTGRES_ADMIN_URL=LOCAL_ADMIN_URL,
                  PASSWORD_FILE=str(password_file))
    try:
        first = run_setup(env)
        assert first.returncode == 0, first.stderr
        assert f"created role {name}" in first.stdout and f"created database {name}" in first.stdout
        url_lines = [line for line in first.stdout.splitlines() if line.startswith("DATABASE_URL=")]
        assert len(url_lines) == 1
        password = password_file.read_text().strip()
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        assert url_lines[0] == f"DATABASE_URL=postgresql://{name}:{password}@127.0.0.1:5432/{name}"
        verifier = admin_query(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'")

        second = run_setup(env)
        assert second.returncode == 0, second.stderr
        assert "created" not in second.stdout and "set the password" not in second.stdout
        assert url_lines[0] in second.stdout.splitlines()
        assert admin_query(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'") == verifier
        assert scram_matches(verifier, password)

        attrs = admin_query("SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication "
                            f"FROM pg_roles WHERE rolname = '{name}'")
        assert attrs == "t|f|f|f|f"
        assert admin_query(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'") == name

        role_url = url_lines[0].removeprefix("DATABASE_URL=")
        assert "schema upgraded" in ok(run_cli(role_url, "create-tables"))
        assert ok(run_cli(role_url, "test")).strip().endswith("ok")
    finally:
        if shutil.which("psql"):
            admin_query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin_query(f'DROP ROLE IF EXISTS "{name}"')
