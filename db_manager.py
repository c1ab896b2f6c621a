"""Admin CLI: `python db_manager.py [--database-url URL] <command>`; `--help` lists the commands.

The database is DATABASE_URL (environment or `.env`), or `--database-url`; with neither, the
embedded development PostgreSQL, exactly as the app does. Every failure exits non-zero with one
line on stderr (argparse usage errors exit 2); `--debug` shows the traceback instead.

Decisions:
- `cleanup-logs` never deletes the logs of a payment that is still `pending`, nor of a payment
  whose webhook events are not all settled (an event still `pending` delivery): both are live
  stories. Logs without a payment (unmatched transfers, service notes) are deleted by age only.
  It deletes in batches (`--batch-size`, each its own transaction over a range of the time index),
  so no lock is held longer than one batch and the API goes on at its usual pace meanwhile.
- `archive` takes closed payments created before the date, outside their late window, whose webhook
  events are all settled (an event `pending` or `failed` may still be delivered: kept); the file is
  whole and on disk before anything is deleted (ops/retention.py says how a crash loses nothing).
  `restore` skips a payment already present, so it can run twice.
- `export` writes one consistent snapshot (REPEATABLE READ, read only), streamed, into a 0600
  file that replaces F only once complete. API keys and stored secrets are never exported.
- `reset` drops only the service's own tables and enum types (and `alembic_version`), then
  migrates to head; other objects in the database are left alone. API keys and the stored
  webhook secret go too: the next app start creates new ones.
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import math
import os
import re
import sys
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

import migrate
from chain.answers import TronError, public_error
from console import accounts
from database import Database, DatabaseError, describe_url, normalize_url, resolve_database_url
from delivery import signing as webhook_signing
from deposits.indexes import next_index, skipped_count
from deposits.taken import received_by, taken_query
from infra.config import Config, ConfigError, first_line, load_config
from infra.lifecycle import interrupt_on_sigterm
from infra.logging_setup import configure_logging
from infra.money import format_amount
from infra.times import iso
from infra.xpub import MAX_INDEX, DepositKey
from ledger import matching
from ledger.checkout import open_ledger
from models import DepositAddress, EventState, Payment
from notify.outbox import with_notifications
from notify.sending import send_test
from ops.export import export_snapshot, export_to_file
from ops.records import CLEANUP_BATCH, CLEANUP_DUTY, CLEANUP_PAUSE, collect_stats, delete_old_logs
from ops.reset import drop_service_schema, running_services
from ops.retention import BATCH_SIZE as ARCHIVE_BATCH
from ops.retention import ArchiveError, Selection, archive, restore, select_before
from rates.store import rates_report
from tron_client import make_client
from web.auth import ApiKeyError, create_api_key, list_api_keys, revoke_api_key

logger = logging.getLogger(__name__)

PROG = "db_manager.py"
CONNECT_ARGS: dict[str, Any] = {"connect_timeout": 10, "application_name": "tron-usdt-monitor db_manager"}
MAX_CLEANUP_DAYS = 36500
TX_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class CliError(Exception):
    """A failure reported as one line on stderr."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message, self.exit_code = message, exit_code


# --- argument types ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TransferRef:
    tx_hash: str
    log_index: int

    def __str__(self) -> str:
        return f"{self.tx_hash}:{self.log_index}"


def days_arg(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, got {value!r}") from None
    if not 1 <= days <= MAX_CLEANUP_DAYS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_CLEANUP_DAYS}, got {days}")
    return days


def batch_arg(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 100_000:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100000, got {value!r}")
    return int(value)


def bounded_number(low: float, high: float, what: str) -> Callable[[str], float]:
    """An option's type: a number from `low` to `high` (NaN is none), described as `what` in the error."""
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}")
        return number
    return parse


pause_arg = bounded_number(0, 60, "a number of seconds from 0 to 60")
duty_arg = bounded_number(0.01, 1, "a fraction from 0.01 to 1")


def date_arg(value: str) -> datetime:
    """An ISO date or time; one without an offset is UTC."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an ISO date or time (2026-01-31, 2026-01-31T12:00:00Z), "
                                         f"got {value!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def transfer_ref_arg(value: str) -> TransferRef:
    tx_hash, sep, index = value.strip().rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected <tx_hash>:<log_index>, got {value!r}")
    tx_hash = tx_hash.lower().removeprefix("0x")
    if not TX_HASH_RE.match(tx_hash):
        raise argparse.ArgumentTypeError(f"the transaction hash must be 64 hexadecimal characters, got {tx_hash!r}")
    if not index.isdigit():
        raise argparse.ArgumentTypeError(f"the log index must be a whole number ≥ 0, got {index!r}")
    return TransferRef(tx_hash, int(index))


def count_arg(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 10_000:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 10000, got {value!r}")
    return int(value)


def index_arg(value: str) -> int:
    if not value.isdigit() or int(value) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {2**31 - 1}, got {value!r}")
    return int(value)


def uuid_arg(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a payment id (UUID), got {value!r}") from None


def key_name_arg(value: str) -> str:
    name = value.strip()
    if not name or len(name) > 128:
        raise argparse.ArgumentTypeError("must be 1 to 128 characters")
    return name


# --- context -------------------------------------------------------------------------------------

class Context:
    """What a command needs, created lazily so argument errors never touch the database."""

    def __init__(self, args: argparse.Namespace, config: Config) -> None:
        self.args = args
        self.config = config
        self._url: str | None = None
        self._db: Database | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = resolve_database_url(self.config.database_url)
        return self._url

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = with_notifications(open_ledger(self.url, self.config.public_base_url,
                                                      connect_args=CONNECT_ARGS), self.config)
        return self._db

    def engine(self) -> Engine:
        """A pool-less engine for one-off work (locks, DDL, snapshots)."""
        return create_engine(normalize_url(self.url), poolclass=NullPool, connect_args=CONNECT_ARGS)

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


def load_cli_config(database_url: str | None) -> Config:
    """The app's configuration (environment after `.env`), with `--database-url` validated the same way."""
    return load_config(**({"DATABASE_URL": database_url} if database_url else {}))


# --- create-tables, test -------------------------------------------------------------------------

def cmd_create_tables(ctx: Context) -> int:
    before, after = migrate.upgrade_to_head(ctx.url)
    head = migrate.head_revision()
    print(f"database: {describe_url(ctx.url)}")
    print(f"schema revision before: {before or 'none (empty database)'}")
    print(f"schema revision after: {after}{' (head)' if after == head else ''}")
    print("schema upgraded" if before != after else "schema already up to date")
    return 0


def cmd_test(ctx: Context) -> int:
    engine = ctx.engine()
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT current_setting('server_version'), current_database(), current_user")
            ).one()
    finally:
        engine.dispose()
    current, head = migrate.current_revision(ctx.url), migrate.head_revision()
    print(f"connected to {describe_url(ctx.url)}")
    print(f"server: PostgreSQL {row[0]}")
    print(f"database: {row[1]} (user {row[2]})")
    print(f"schema revision: {current or 'none'} (head: {head})")
    if current != head:
        state = "has no schema" if current is None else f"is at revision {current}, not head {head}"
        raise CliError(f"the database {state}: run `.venv/bin/python {PROG} create-tables`")
    print("ok")
    return 0


# --- stats ---------------------------------------------------------------------------------------

def print_stats(stats: dict[str, Any]) -> None:
    p, t, e, logs = stats["payments"], stats["transfers"], stats["webhook_events"], stats["payment_logs"]
    print(f"payments: {p['total']}")
    for status in ("pending", "completed", "failed", "expired"):
        suffix = f" (cancelled: {p['cancelled']})" if status == "failed" else ""
        print(f"  {status}: {p[status]}{suffix}")
    print(f"transfers: {t['total']}")
    print(f"  unmatched: {t['unmatched']}")
    print(f"  credited: {t['credited']}")
    print(f"webhook events: {e['total']}")
    for state in (member.value for member in EventState):
        print(f"  {state}: {e[state]}")
    print(f"notifications: {stats['notifications']['total']}")
    for state in ("pending", "delivered", "failed"):
        print(f"  {state}: {stats['notifications'][state]}")
    oldest = f" (oldest {logs['oldest']})" if logs["oldest"] else ""
    print(f"payment logs: {logs['total']}{oldest}")
    deposits = stats.get("deposit_addresses")
    if deposits is not None:
        print(f"deposit addresses (DEPOSIT_XPUB): next index {deposits['next_index']}")
        print(f"  taken by payments: {deposits['taken']}")
        print(f"  passed over (already a given wallet_address): {deposits['passed_over']}")


def deposit_stats(ctx: Context, key: DepositKey) -> dict[str, int]:
    """The configured account's next index and what its indexes went to."""
    with ctx.db.engine.connect() as connection:
        following, skipped = next_index(connection, key.account), skipped_count(connection, key.account)
    return {"next_index": following, "taken": following - skipped, "passed_over": skipped}


def cmd_stats(ctx: Context) -> int:
    stats = collect_stats(ctx.db)
    if ctx.config.deposit_key is not None:
        stats["deposit_addresses"] = deposit_stats(ctx, ctx.config.deposit_key)
    if ctx.args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_stats(stats)
    return 0


# --- rates ---------------------------------------------------------------------------------------

def cmd_rates(ctx: Context) -> int:
    with ctx.db.Session() as session:
        report = rates_report(session, ctx.config)
    if ctx.args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"rates at {report['timestamp']} (quotes older than {report['max_age_seconds']:g} s are never used; "
          f"markup {report['markup_percent']} %, rounded up to {report['price_rounding_usdt']} USDT)")
    for row in report["currencies"]:
        if row["rate"] is None:
            print(f"  {row['currency']}: no rate ({row['reason']}): {row['message']}")
        else:
            print(f"  {row['currency']}: {row['rate']} per USDT from {row['rate_source']}, "
                  f"{row['age_seconds']:g} s old")
    for source in report["sources"]:
        paused = f", paused until {source['paused_until']}" if source["paused_until"] else ""
        print(f"source {source['name']} ({source['base_url']}): {source['errors']} errors{paused}; last success "
              f"{source['last_success_at'] or 'never'}" + (f"; last error: {source['last_error']}"
                                                           if source["last_error"] else ""))
        for quote in source["quotes"]:
            print(f"  {quote['currency']}: {quote['rate']}, {quote['age_seconds']:g} s old")
    if not report["sources"]:
        print("no rate source (RATE_SOURCES=none, or the sandbox's fixed rates)")
    return 0


# --- deposit addresses ---------------------------------------------------------------------------

def deposit_key(ctx: Context) -> DepositKey:
    if ctx.config.deposit_key is None:
        raise CliError("DEPOSIT_XPUB is not set: set it to your wallet's account xpub (see docs/deposit-addresses.md)")
    return ctx.config.deposit_key


def cmd_notify_test(ctx: Context) -> int:
    targets = ctx.config.notify_targets
    if not targets:
        raise CliError("NOTIFY_URLS is not set: there is no target to test")
    merchant = ctx.config.merchant_name or "tron-usdt-monitor"
    results = send_test(targets, ctx.config.notify_language, merchant, ctx.config.notify_timeout_seconds)
    for number, (target, result) in enumerate(zip(targets, results, strict=True), start=1):
        outcome = "delivered" if result.ok else f"failed: {result.error}"
        print(f"{number}. {target.scheme}: {outcome} ({result.duration_ms} ms)")
    failed = sum(not r.ok for r in results)
    if failed:
        print(f"error: {failed} of {len(results)} target(s) failed", file=sys.stderr)
    return 1 if failed else 0


def cmd_derive_addresses(ctx: Context) -> int:
    """Print addresses without taking them (no database needed)."""
    key = deposit_key(ctx)
    start, count = ctx.args.start, ctx.args.count
    if start > MAX_INDEX:
        raise CliError(f"--from must be at most {MAX_INDEX}")
    for index, address in key.addresses(start, count):
        print(f"{index}\t0/{index}\t{address}")
    return 0


def cmd_addresses(ctx: Context) -> int:
    """The addresses payments took, what the watcher saw reach each, and, unless --no-balance, each one's USDT
    balance on chain now (money after the late window, or never seen, shows there)."""
    client = None if ctx.args.no_balance or ctx.config.is_sandbox else make_client(ctx.config)
    with ctx.db.Session() as session:
        rows = list(session.execute(
            taken_query(ctx.args.received).add_columns(Payment.order_id, Payment.status)
            .join(Payment, Payment.id == DepositAddress.payment_id).order_by(DepositAddress.id)))
        received = received_by(session, [row[0].address for row in rows])
    print("index\taddress\torder_id\tstatus\treceived_usdt\tbalance_usdt")
    total, unread = 0, 0
    for deposit, order_id, status in rows:
        balance = "-"
        if client is not None:
            try:
                micro = client.usdt_balance(deposit.address)
            except TronError as exc:  # one address the upstream cannot answer for: said, the others still listed
                unread += 1
                balance = f"unavailable ({public_error(exc)})"
            else:
                total += micro
                balance = format_amount(micro)
        print(f"{deposit.address_index}\t{deposit.address}\t{order_id}\t{status.value}\t"
              f"{format_amount(received[deposit.address])}\t{balance}")
    if client is not None:
        print(f"total balance: {format_amount(total)} USDT on {len(rows) - unread} addresses")
    if unread:
        raise CliError(f"the balance of {unread} address(es) could not be read from the upstream; run it again")
    return 0


# --- export --------------------------------------------------------------------------------------

def cmd_export(ctx: Context) -> int:
    if ctx.args.file == "-":
        export_snapshot(ctx.engine(), sys.stdout, describe_url(ctx.url))
        return 0
    target = Path(ctx.args.file)
    try:
        counts = export_to_file(ctx.engine(), target, describe_url(ctx.url))
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    summary = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items())
    print(f"exported {summary} to {target}")
    return 0


# --- cleanup-logs --------------------------------------------------------------------------------

def cmd_cleanup_logs(ctx: Context) -> int:
    days, dry_run = ctx.args.days, ctx.args.dry_run
    count = delete_old_logs(ctx.db, days, dry_run, ctx.args.batch_size, ctx.args.pause, duty=ctx.args.duty)
    verb = "would delete" if dry_run else "deleted"
    print(f"{verb} {count} payment log row{'s' if count != 1 else ''} older than {days} day{'s' if days != 1 else ''} "
          "(logs of pending payments and of undelivered webhook events are kept)")
    return 0


# --- archive, restore ----------------------------------------------------------------------------

def print_kept(selection: Selection) -> None:
    kept = {"still pending": selection.still_open, "inside the late window": selection.in_late_window,
            "with an undelivered webhook event": selection.undelivered_event}
    for reason, count in kept.items():
        if count:
            print(f"  kept {count} payment{'s' if count != 1 else ''} {reason}")


def cmd_archive(ctx: Context) -> int:
    before, late_window = ctx.args.before, ctx.config.late_payment_window_seconds
    if not ctx.args.dry_run and not ctx.args.file:
        raise CliError("archive needs --file F (the archive to write), unless --dry-run", exit_code=2)
    engine = ctx.engine()
    try:
        with engine.connect() as conn:
            selection = select_before(conn, before, late_window)
        if ctx.args.dry_run:
            rows = ", ".join(f"{n} {name}" for name, n in selection.rows.items())
            print(f"would archive {selection.archivable} payments created before {iso(before)} ({rows})")
            print_kept(selection)
            return 0
        outcome = archive(engine, Path(ctx.args.file), before, late_window, describe_url(ctx.url),
                          ctx.args.batch_size)
    except ArchiveError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {ctx.args.file}: {exc.strerror or exc}") from None
    finally:
        engine.dispose()
    rows = ", ".join(f"{n} {name}" for name, n in outcome.rows.items())
    print(f"archived {outcome.archived} payments created before {iso(before)} to {ctx.args.file} ({rows})")
    print_kept(selection)
    if outcome.changed:
        print(f"  kept {outcome.changed} payments that changed while the file was written (they are in the file "
              "too; restore skips them)")
    return 0


def cmd_restore(ctx: Context) -> int:
    engine = ctx.engine()
    try:
        restored = restore(engine, Path(ctx.args.file), ctx.args.batch_size)
    except ArchiveError as exc:
        raise CliError(str(exc)) from None
    finally:
        engine.dispose()
    rows = ", ".join(f"{n} {name}" for name, n in restored.rows.items()) or "no rows"
    print(f"restored {restored.payments} payments from {ctx.args.file} ({rows}); "
          f"{restored.present} already present, left as they are")
    return 0


# --- reset ---------------------------------------------------------------------------------------

def confirm_reset(ctx: Context, database: str) -> None:
    if ctx.args.yes:
        return
    if not sys.stdin.isatty():
        raise CliError("refusing to reset: standard input is not a terminal, so nobody can confirm; pass --yes")
    sys.stderr.write(
        f"This deletes ALL service data in database {database!r} ({describe_url(ctx.url)}): payments, transfers, "
        "logs, webhook events, API keys and the stored webhook secret, then recreates the empty schema.\n"
        f"Type the database name ({database}) or 'yes' to continue: "
    )
    sys.stderr.flush()
    answer = sys.stdin.readline().strip()
    if answer not in (database, "yes"):
        raise CliError("reset cancelled: the answer was neither the database name nor 'yes'")


def refuse_under_a_service(ctx: Context, database: str) -> None:
    """Under a running service a reset deletes the API keys and the webhook secret it has cached and the rows its
    threads hold: it would go on with keys that no longer exist. (A service whose DATABASE_URL sets its own
    application_name, or that connects through a pooler that rewrites it, is not seen.)"""
    running = running_services(ctx.engine())
    if running:
        raise CliError(f"refusing to reset: a running service uses database {database} ({', '.join(running[:5])}); "
                       "stop it (Ctrl-C, or systemctl stop tron-usdt-monitor), then run reset again")


def cmd_reset(ctx: Context) -> int:
    database = make_url(ctx.url).database or ""
    refuse_under_a_service(ctx, database)
    confirm_reset(ctx, database)
    refuse_under_a_service(ctx, database)  # one may have started while the question waited
    drop_service_schema(ctx.engine())
    _, after = migrate.upgrade_to_head(ctx.url)
    print(f"database {database} reset: all service data deleted, empty schema recreated at revision {after}")
    return 0


# --- API keys ------------------------------------------------------------------------------------

def cmd_create_api_key(ctx: Context) -> int:
    with ctx.db.transaction() as session:
        created = create_api_key(session, ctx.args.name)
    label = f" {ctx.args.name!r}" if ctx.args.name else ""
    print(f"Created API key{label} (prefix {created.prefix}). It is shown only once; store it now:")
    print(created.key)
    return 0


def cmd_revoke_api_key(ctx: Context) -> int:
    prefix = ctx.args.prefix.strip()
    if prefix and any(k.startswith(prefix) for k in ctx.config.api_keys):
        raise CliError(f"the key starting with {prefix!r} comes from API_KEYS: remove it there and restart the service")
    try:
        with ctx.db.transaction() as session:
            revoke_api_key(session, prefix)
    except ApiKeyError as exc:
        raise CliError(str(exc)) from None
    print(f"revoked the API key starting with {prefix}")
    return 0


def cmd_list_api_keys(ctx: Context) -> int:
    with ctx.db.transaction() as session:
        keys = list_api_keys(session)
    rows = [("PREFIX", "NAME", "CREATED", "REVOKED")] + [
        (k.prefix, k.name or "-", iso(k.created_at, "seconds") or "-", iso(k.revoked_at, "seconds") or "-")
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    if ctx.config.api_keys:
        print(f"plus {len(ctx.config.api_keys)} key(s) from API_KEYS in the environment")
    return 0


# --- webhook secret and manual matching (delivery/signing.py and ledger/matching.py) ---------------------

def format_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return "-" if value is None else str(value)


def cmd_show_webhook_secret(ctx: Context) -> int:
    with ctx.db.transaction() as session:
        info = webhook_signing.describe_webhook_secrets(session, ctx.config)
    for key, value in info.items():
        print(f"{key}: {format_value(value)}")
    return 0


def cmd_rotate_webhook_secret(ctx: Context) -> int:
    with ctx.db.transaction() as session:
        secret = webhook_signing.rotate_webhook_secret(session, ctx.config)
    print("Rotated the webhook signing secret. New secret (shown only once; give it to your webhook receiver):")
    print(secret)
    return 0


def cmd_assign_transfer(ctx: Context) -> int:
    ref: TransferRef = ctx.args.transfer
    payment_id: uuid.UUID = ctx.args.payment_id
    try:
        with ctx.db.transaction() as session:
            payment = matching.assign_transfer(
                session, ref.tx_hash, ref.log_index, payment_id, ctx.config.late_payment_window_seconds,
                ctx.config.merchant_webhook_url,
            )
            status = payment.status.value
            received = format_amount(payment.received_amount_usdt)
            expected = format_amount(payment.expected_amount_usdt)
    except matching.AssignError as exc:
        raise CliError(str(exc)) from None
    print(f"transfer {ref} credited to payment {payment_id}: status {status}, received {received} of {expected} USDT")
    return 0


# --- dashboard admins ----------------------------------------------------------------------------

def read_new_password(ctx: Context) -> str:
    """The password from standard input (--password-stdin: its first line), else asked twice on the terminal."""
    if ctx.args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        raise CliError("standard input is not a terminal: pass --password-stdin and write the password to it")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise CliError("the two passwords differ; nothing changed")
    try:
        return accounts.check_password(password)
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from None


def cmd_create_admin(ctx: Context) -> int:
    password = read_new_password(ctx)
    try:
        with ctx.db.transaction() as session:
            accounts.create_admin(session, ctx.args.name, password)
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from None
    print(f"admin {ctx.args.name} created: log in at /admin/login")
    return 0


def cmd_set_admin_password(ctx: Context) -> int:
    password = read_new_password(ctx)
    try:
        with ctx.db.transaction() as session:
            accounts.set_password(session, ctx.args.name, password, totp_off=ctx.args.totp_off)
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from None
    off = ", two-factor login off" if ctx.args.totp_off else ""
    print(f"admin {ctx.args.name}: password changed{off}, every session of theirs ended")
    return 0


def cmd_delete_admin(ctx: Context) -> int:
    try:
        with ctx.db.transaction() as session:
            accounts.delete_admin(session, ctx.args.name)
    except accounts.AccountError as exc:
        raise CliError(str(exc)) from None
    print(f"admin {ctx.args.name} deleted, every session of theirs ended")
    return 0


def cmd_list_admins(ctx: Context) -> int:
    with ctx.db.Session() as session:
        rows = [(a.name, "on" if a.totp_enabled else "off", iso(a.created_at, "seconds") or "-")
                for a in accounts.list_admins(session)]
    if not rows:
        print(f"no admins: create one with `{PROG} create-admin NAME`")
        return 0
    width = max(len(row[0]) for row in rows)
    print(f"{'NAME'.ljust(width)}  TWO-FACTOR  CREATED")
    for name, totp, created in rows:
        print(f"{name.ljust(width)}  {totp.ljust(10)}  {created}")
    return 0


# --- parser and main -----------------------------------------------------------------------------

Command = Callable[[Context], int]


def add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--database-url", default=default, metavar="URL",
                        help="PostgreSQL URL to use instead of DATABASE_URL (environment or .env)")
    parser.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                        help="log more (-v info, -vv debug) on stderr")
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the traceback of a failure")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Administer the tron-usdt-monitor database.",
        epilog="Exit status: 0 on success, 1 on failure (one line on stderr), 2 on bad usage.",
    )
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    def command(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_common(p, top=False)
        p.set_defaults(func=func)
        return p

    command("create-tables", cmd_create_tables,
            "create or upgrade the schema to the newest migration (safe to run from several processes at once)")
    p = command("stats", cmd_stats, "count payments by status, transfers, webhook events and notifications by state "
                                    "and log rows")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    command("test", cmd_test, "connect and report server version, database and schema revision; "
                              "fails if the database is unreachable or the schema is not at head")
    p = command("export", cmd_export,
                "write all payments, transfers, webhook events and payment logs as JSON (one consistent snapshot)")
    p.add_argument("--file", required=True, metavar="F", help="output file (created 0600), or - for stdout")
    p = command("cleanup-logs", cmd_cleanup_logs,
                "delete payment logs older than N days, except those of pending payments or undelivered events")
    p.add_argument("--days", required=True, type=days_arg, metavar="N", help="age in days, at least 1")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.add_argument("--batch-size", type=batch_arg, default=CLEANUP_BATCH, metavar="N",
                   help="rows per batch, each its own short transaction (default %(default)s)")
    p.add_argument("--pause", type=pause_arg, default=CLEANUP_PAUSE, metavar="S",
                   help="seconds to wait between batches, leaving the database to the service (default %(default)s)")
    p.add_argument("--duty", type=duty_arg, default=CLEANUP_DUTY, metavar="F",
                   help="the most of the time spent in batches, from 0.01 to 1: after a batch of t seconds, wait at "
                        "least t*(1-F)/F (default %(default)s: 99 t; 1: only --pause, flat out)")
    p = command("archive", cmd_archive,
                "move closed payments created before DATE, with their logs, transfers and events, to a gzip JSON "
                "Lines file, then delete them (their order ids and transfers stay taken)")
    p.add_argument("--before", required=True, type=date_arg, metavar="DATE",
                   help="ISO date or time (UTC unless it says otherwise): payments created before it")
    p.add_argument("--file", metavar="F", help="the archive to write (never overwritten); required unless --dry-run")
    p.add_argument("--dry-run", action="store_true", help="only count what would be archived and what is kept")
    p.add_argument("--batch-size", type=batch_arg, default=ARCHIVE_BATCH, metavar="N",
                   help="payments per batch (default %(default)s)")
    p = command("restore", cmd_restore, "bring back the payments of an archive file (those already present are "
                                        "left as they are: running it twice changes nothing)")
    p.add_argument("--file", required=True, metavar="F", help="an archive written by the archive command")
    p.add_argument("--batch-size", type=batch_arg, default=ARCHIVE_BATCH, metavar="N",
                   help="payments per batch (default %(default)s)")
    p = command("reset", cmd_reset, "drop and recreate every table of the service: ALL DATA IS LOST; asks first")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = command("create-api-key", cmd_create_api_key,
                "create an API key, print it once and store only its SHA-256")
    p.add_argument("--name", type=key_name_arg, help="a label to recognise the key by")
    p = command("revoke-api-key", cmd_revoke_api_key, "revoke the API key that starts with PREFIX")
    p.add_argument("prefix", help="the key's first characters (at least 6), as shown by list-api-keys")
    command("list-api-keys", cmd_list_api_keys, "list API keys: prefix, name, created, revoked (never the key)")
    command("show-webhook-secret", cmd_show_webhook_secret, "show the webhook signing secret(s) in use")
    command("rotate-webhook-secret", cmd_rotate_webhook_secret,
            "generate a new webhook signing secret; the old one keeps signing alongside it for a while")
    p = command("rates", cmd_rates, "the rate each currency would get now (or why none) and each rate source's "
                                    "latest quotes, errors and pause, as GET /rates shows them")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    command("notify-test", cmd_notify_test, "send one test notification to every NOTIFY_URLS target and report "
                                            "each one's result (by scheme; the URLs are never shown)")
    p = command("derive-addresses", cmd_derive_addresses,
                "print deposit addresses of DEPOSIT_XPUB (child 0/i) without taking them, to compare with a wallet")
    p.add_argument("--count", required=True, type=count_arg, metavar="N", help="how many addresses (1 to 10000)")
    p.add_argument("--from", dest="start", type=index_arg, default=0, metavar="I", help="the first index (default 0)")
    p = command("addresses", cmd_addresses, "list the deposit addresses payments took, what reached each and its "
                                            "USDT balance on chain now (asks the upstream once per address)")
    p.add_argument("--received", action="store_true", help="only the addresses some transfer reached")
    p.add_argument("--no-balance", action="store_true", help="do not ask the chain for balances")
    p = command("assign-transfer", cmd_assign_transfer, "credit an unmatched transfer to a payment by hand (logged)")
    p.add_argument("transfer", type=transfer_ref_arg, metavar="TX_HASH:LOG_INDEX", help="the transfer to credit")
    p.add_argument("payment_id", type=uuid_arg, metavar="PAYMENT_ID", help="the payment (UUID) to credit it to")
    for name, func, help_text in (("create-admin", cmd_create_admin, "create an admin of the dashboard (/admin); the "
                                                                "password is asked twice, stored as an Argon2 hash"),
                             ("set-admin-password", cmd_set_admin_password,
                              "give an admin a new password; their sessions end")):
        p = command(name, func, help_text)
        p.add_argument("name", help="the admin's name (letters, digits, . _ @ -)")
        p.add_argument("--password-stdin", action="store_true", help="read the password from standard input's "
                                                                      "first line instead of asking")
        if name == "set-admin-password":
            p.add_argument("--totp-off", action="store_true", help="also turn two-factor login off (a lost device)")
    p = command("delete-admin", cmd_delete_admin, "delete an admin of the dashboard; their sessions end at once")
    p.add_argument("name", help="the admin's name")
    command("list-admins", cmd_list_admins, "list the dashboard's admins: name, two-factor login, created")
    return parser


def describe_failure(exc: BaseException, ctx: Context | None) -> str:
    """One line for a person, never a password."""
    where = describe_url(ctx._url) if ctx is not None and ctx._url else "the configured URL"
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        code = getattr(orig, "pgcode", None)
        reason = first_line(orig)
        if code is None and (exc.connection_invalidated or type(orig).__name__ == "OperationalError"):
            return f"cannot connect to the database at {where}: {reason}"
        if code == "42P01":
            return f"the schema is missing or outdated ({reason}): run `.venv/bin/python {PROG} create-tables`"
        if code == "55P03":
            return f"the database is busy ({reason}): stop the service's processes and try again"
        return f"database error: {reason}"
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {first_line(exc)}"
    return f"unexpected error: {type(exc).__name__}: {first_line(exc)}"


def configure_cli_logging(verbosity: int) -> None:
    """The one logging setup (logging_setup), on stderr: warnings only unless -v (info) or -vv (debug); in
    LOG_FORMAT when it is valid (run() reports a bad one)."""
    try:
        log_format = load_cli_config(None).log_format
    except ConfigError:
        log_format = "text"
    configure_logging("WARNING" if verbosity <= 0 else "INFO" if verbosity == 1 else "DEBUG", log_format)


def run(args: argparse.Namespace) -> int:
    ctx: Context | None = None
    try:
        ctx = Context(args, load_cli_config(args.database_url))
        return int(args.func(ctx))
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        print(f"database error: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `export --file - | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:  # every other failure is still one line, unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"error: {describe_failure(exc, ctx)}", file=sys.stderr)
        return 1
    finally:
        if ctx is not None:
            ctx.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interrupt_on_sigterm()  # SIGTERM ends as Ctrl-C does: one line, and an embedded PostgreSQL it started stopped
    configure_cli_logging(args.verbose)
    return run(args)


if __name__ == "__main__":
    import db_manager  # this module under its own name, so its log lines say "db_manager", not "__main__"

    sys.exit(db_manager.main())
