"""The engine, sessions, the embedded PostgreSQL default, the client-side database deadline,
and the project's database errors."""
from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from sqlalchemy import Connection, Engine, Executable, create_engine, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from infra.deadlines import Deadline, start_deadline
from infra.lifecycle import EMBEDDED_PGDATA, EmbeddedPostgresError, embedded_postgres

logger = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "tron_payments"

# Seed pool settings. Each process opens at most pool_size + max_overflow = 30
# connections; with N gunicorn workers plus one watcher, budget
# (N + 1) * 30 + the watcher's lock connection against max_connections.
POOL_OPTIONS = {"pool_size": 10, "max_overflow": 20, "pool_recycle": 120, "pool_pre_ping": True}
# libpq's connect_timeout (TCP connect and start-up together) when nothing shorter applies;
# libpq treats anything under 2 s as 2 s.
CONNECT_TIMEOUT_SECONDS = 10
LIBPQ_MIN_CONNECT_TIMEOUT = 2


class DatabaseError(RuntimeError):
    """The database cannot be reached or set up; the message is meant for a person."""


def normalize_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def embedded_server_url(pgdata: Path = EMBEDDED_PGDATA, database: str = "postgres") -> str:
    """Start (or join) the embedded PostgreSQL under `pgdata` and return a URL to `database`; a server this
    process starts is stopped when it exits (lifecycle)."""
    try:
        server = embedded_postgres(pgdata)
    except EmbeddedPostgresError as exc:
        raise DatabaseError(str(exc)) from exc
    return normalize_url(server.uri(database))


def ensure_database(server_url: str, name: str) -> None:
    """Create database `name` on the server of `server_url` if it does not exist. On one libpq connection of its
    own, outside SQLAlchemy's pool: a gunicorn worker told to quit while it starts (its signal handler raises
    SystemExit wherever the worker is) then just exits, instead of the pool logging the interrupted close as an
    error with its traceback."""
    dsn = make_url(normalize_url(server_url)).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
    except psycopg2.Error as exc:
        raise DatabaseError(f"cannot reach the embedded PostgreSQL for database {name}: {exc}".strip()) from exc


@functools.cache
def warn_embedded() -> None:
    """Once per process (the bootstrap and the app both resolve the URL at a start)."""
    logger.warning("DATABASE_URL is not set: using the embedded PostgreSQL in %s, meant for development only",
                   EMBEDDED_PGDATA)


def resolve_database_url(database_url: str | None) -> str:
    """The URL to use: DATABASE_URL as given, or the embedded development server."""
    if database_url:
        return normalize_url(database_url)
    warn_embedded()
    server = embedded_server_url()
    ensure_database(server, EMBEDDED_DB_NAME)
    return str(make_url(server).set(database=EMBEDDED_DB_NAME).render_as_string(hide_password=False))


# --- the client-side deadline ------------------------------------------------------------------
#
# A frozen server (SIGSTOP, a hung host) runs no statement_timeout and its kernel still
# acknowledges packets, so only the client can end the wait. Inside `database_deadline(seconds)`
# every connection this thread uses has its socket watched by outbound's watchdog from its first
# statement on (the pool's pre-ping included: it is a statement too), and shut down at the
# deadline: libpq then fails the statement at once, SQLAlchemy drops the connection. A new
# connection gets libpq's connect_timeout from the time left, none once the deadline has passed.

_deadlines = threading.local()


def current_deadline() -> Deadline | None:
    return getattr(_deadlines, "deadline", None)


@contextmanager
def database_deadline(seconds: float) -> Iterator[Deadline]:
    """Everything this thread asks the database inside the block ends within `seconds`."""
    deadline = start_deadline(seconds)
    previous = current_deadline()
    _deadlines.deadline = deadline
    try:
        yield deadline
    finally:
        _deadlines.deadline = previous
        deadline.finish()


class DeadlineConnection(psycopg2.extensions.connection):
    """A psycopg2 connection that puts its socket under the thread's database deadline, if any,
    whenever a statement starts (every statement, pre-ping included, starts with cursor())."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        deadline = current_deadline()
        if deadline is not None:
            deadline.watch_fd(self.fileno())
        return super().cursor(*args, **kwargs)


def bounded_connect_timeout(cparams: dict[str, Any]) -> None:
    """libpq's connect_timeout for a new connection: the configured one, cut to the deadline."""
    try:
        timeout = int(cparams.get("connect_timeout", CONNECT_TIMEOUT_SECONDS))
    except (TypeError, ValueError):
        timeout = CONNECT_TIMEOUT_SECONDS
    if timeout <= 0:  # libpq: wait forever
        timeout = CONNECT_TIMEOUT_SECONDS
    deadline = current_deadline()
    if deadline is not None:
        if deadline.expired:
            raise psycopg2.OperationalError("the database did not answer before the deadline")
        timeout = min(timeout, max(LIBPQ_MIN_CONNECT_TIMEOUT, math.ceil(deadline.remaining())))
    cparams["connect_timeout"] = timeout


# The application_name of a service process's connections (`tron-usdt-monitor:<pid>`) and of the watcher's leader
# lock (`tron-usdt-watcher:<pid>`); db_manager.py names its own.
SERVICE_APPLICATION_NAME = "tron-usdt-monitor"
WATCHER_APPLICATION_NAME = "tron-usdt-watcher"


def make_engine(url: str, **overrides: object) -> Engine:
    connect_args = {"connection_factory": DeadlineConnection, **dict(overrides.pop("connect_args", None) or {})}
    options = {**POOL_OPTIONS, **overrides, "connect_args": connect_args}
    engine = create_engine(normalize_url(url), future=True, **options)  # type: ignore[arg-type]

    @event.listens_for(engine, "do_connect")
    def _bounded_connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        bounded_connect_timeout(cparams)
        # Who holds the connection, in pg_stat_activity: `db_manager.py reset` refuses while a service uses the
        # database. Taken at connect time, so a forked worker's connections name the worker.
        cparams.setdefault("application_name", f"{SERVICE_APPLICATION_NAME}:{os.getpid()}")

    return engine


class Database:
    """One engine and its session factory; callers own sessions and transactions. `session_info`: what every
    session of this database carries in `Session.info` (what the layers above hand down: the checkout links)."""

    def __init__(self, url: str, *, session_info: dict[str, Any] | None = None, engine: Engine | None = None,
                 **engine_options: object) -> None:
        self.url = normalize_url(url)
        self.engine = engine or make_engine(self.url, **engine_options)
        self.session_info = dict(session_info or {})
        self.Session = sessionmaker(self.engine, expire_on_commit=False, info=self.session_info)

    def with_session_info(self, **info: Any) -> Database:
        """The same database (the same engine and its pool) whose sessions carry `info` besides this one's."""
        return Database(self.url, session_info={**self.session_info, **info}, engine=self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """``with db.transaction() as s:`` commits on success, rolls back on error."""
        with self.Session() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """One pooled connection whose statements go to PostgreSQL as they are sent (the driver's autocommit):
        no BEGIN or ROLLBACK round trip of the driver's own. A read is then one round trip; a writer opens its
        transaction itself and sends it in as few messages as it can ("BEGIN; ...", then "...; COMMIT").
        Whatever happens in the block, the connection goes back to the pool outside any transaction: one left
        open (an error between a BEGIN and its COMMIT) is rolled back here, and a connection that cannot say
        so, or cannot roll back, is discarded."""
        with self.engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            raw.autocommit = True  # type: ignore[union-attr]
            try:
                yield connection
            finally:
                end_transaction(connection)


@dataclass(frozen=True)
class DriverStatement:
    """A Core statement compiled once for a dialect, for `driver_execute`: its SQL (after `prefix`, statements of
    its own sent in the same message), its constants with their bind processors applied, and the bind processors
    of the parameters a caller gives (UUIDs, JSON, enums)."""

    sql: str
    fixed: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]

    def params(self, given: dict[str, Any]) -> dict[str, Any]:
        params = dict(self.fixed)
        for name, value in given.items():
            processor = self.processors.get(name)
            params[name] = processor(value) if processor is not None else value
        return params


def driver_statement(statement: Executable, dialect: Dialect, prefix: str = "") -> DriverStatement:
    compiled = statement.compile(dialect=dialect)
    fixed: dict[str, Any] = {}
    processors: dict[str, Callable[[Any], Any]] = {}
    for bind, name in compiled.bind_names.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if bind.required:  # given by the caller
            if processor is not None:
                processors[name] = processor
        else:
            value = compiled.params[name]
            fixed[name] = processor(value) if processor is not None else value
    return DriverStatement(prefix + compiled.string, fixed, processors)


def driver_execute(connection: Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run `sql` (compiled by SQLAlchemy once, parameters already processed) on the connection's own driver cursor,
    and return its rows as the driver gives them: no execution context or Result object per call, which on the
    hot routes cost more than PostgreSQL's work. Kept from Connection.execute: `before_cursor_execute` listeners see
    the statement, errors are SQLAlchemy's (sqlalchemy.exc), and a connection found lost is invalidated (never
    reused). Not kept: `after_cursor_execute` and `handle_error` listeners and the engine's echo; and after a
    disconnect only this connection is dropped, not the whole pool (the pool's pre-ping finds any other lost one
    at its next checkout)."""
    raw = connection.connection.dbapi_connection
    dialect = connection.dialect
    cursor = raw.cursor()  # type: ignore[union-attr]
    try:
        for listener in connection.dispatch.before_cursor_execute:
            sql, params = listener(connection, cursor, sql, params, None, False)
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, raw, cursor)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost,
                                  dialect=dialect) from exc
    finally:
        if not cursor.closed:
            cursor.close()


def end_transaction(connection: Connection) -> None:
    """Leave `connection` (in the driver's autocommit) outside any transaction, in the driver's usual mode."""
    if connection.invalidated:  # lost in the block (a disconnect): the pool already let it go
        return
    try:
        raw = connection.connection.dbapi_connection
        status = raw.info.transaction_status  # type: ignore[union-attr]
        if status in (psycopg2.extensions.TRANSACTION_STATUS_INTRANS, psycopg2.extensions.TRANSACTION_STATUS_INERROR):
            with raw.cursor() as cursor:  # type: ignore[union-attr]
                cursor.execute("ROLLBACK")
            status = raw.info.transaction_status  # type: ignore[union-attr]
        if status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            raise psycopg2.InterfaceError(f"connection left in transaction status {status}")
        raw.autocommit = False  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001 - any doubt: the connection is not reused
        if not connection.invalidated:
            connection.invalidate()


def describe_url(url: str) -> str:
    """The URL without its password, for log lines and CLI output."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)

