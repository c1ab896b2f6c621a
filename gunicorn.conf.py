"""Production gunicorn settings: `gunicorn -c gunicorn.conf.py "app:create_app()"`.

Every worker serves the API and runs a webhook dispatcher (events are claimed with
FOR UPDATE SKIP LOCKED, so workers never send the same attempt). Every worker also starts
a watcher thread when WATCHER_ENABLED is true, but only the holder of the PostgreSQL advisory
lock works: the others stand by and take over within one polling interval if it dies.
To run the watcher as its own process instead, set WATCHER_ENABLED=false here and run
`.venv/bin/python watcher.py`.

Metrics: every worker counts what it does (upstream requests, webhook attempts, cycles) in files of a directory
per run, .data/metrics-<PORT> (PROMETHEUS_MULTIPROC_DIR, emptied when gunicorn starts, removed when it stops);
GET /metrics on any worker sums them over every worker, and a worker that exits is marked dead, so its gauges
drop out (infra/instruments.py).

Logs: gunicorn's own lines and the app's (watcher, payments, webhooks) share gunicorn's error log (stderr unless
--error-logfile), in the service's one format (infra/logging_setup.py: time, level, logger, message; LOG_FORMAT=json for
one JSON object per line). An operator's own --log-config, logconfig_dict or --log-syslog is left as given.

With DATABASE_URL unset, the master starts the embedded development PostgreSQL before the workers and stops it
when it exits (lifecycle); the bootstrap and the workers only join it.
"""
from __future__ import annotations

import os
import shutil
import traceback

from gunicorn.glogging import Logger

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))
# GUNICORN_BIND=unix:/path/to/socket behind nginx (deploy/nginx, `dev.py production`); HOST:PORT otherwise.
bind = os.environ.get("GUNICORN_BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
# Connections: each worker's pool opens at most pool_size 10 + max_overflow 20 = 30, plus 1 for the watcher lock =
# 31 per worker. PostgreSQL allows 100 by default (max_connections), 3 of them reserved for superusers:
# 2 workers = 62, and a standalone `.venv/bin/python watcher.py` (31 more) = 93, leaving room for db_manager.py
# and psql.
# 3 workers would be 93 alone, 4 (124) over the limit. More workers: raise max_connections by 31 per worker first.
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# 3 request threads per worker, measured against 2 and 4 (docs/performance.md, "What was profiled and fixed"): with 4,
# reads (Python on the CPU) lose to the threads' contention for the GIL; with 2, creates (waiting for PostgreSQL's
# commit) lack threads to overlap. A stalled upstream holds at most one of them (chain/claims.py, CLAIMS_IN_FLIGHT).
threads = int(os.environ.get("GUNICORN_THREADS", "3"))
worker_class = "gthread"
# Each worker gets its own listening socket (SO_REUSEPORT) and the kernel spreads new connections
# over them: without it, a few busy keep-alive clients can all land on one worker.
reuse_port = True  # off for a Unix socket, whichever way it was bound (on_starting): SO_REUSEPORT is for TCP
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# gunicornc's control socket: gunicorn's default is one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn), which a
# second gunicorn on the host takes over. One per checkout and port instead, in the project's data directory.
control_socket = os.path.join(PROJECT_DIR, ".data", f"gunicorn-{os.environ.get('PORT', '5000')}.ctl")
# prometheus_client's multiprocess mode: set before any worker imports it (workers inherit the environment).
OWN_METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # an operator's own directory is left in place
METRICS_DIR = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(PROJECT_DIR, ".data", f"metrics-{os.environ.get('PORT', '5000')}"))
# The bootstrap (migrations, first API key, webhook secret) runs once, in a child process of on_starting; each
# worker then builds the app itself (no preload), so the master never imports or holds it.
preload_app = False


class ServiceLogger(Logger):
    """gunicorn's logger, with the app's lines sent to gunicorn's error log in the service's format: without it
    the workers' root logger has no handler and the app's INFO lines are lost, its warnings printed bare."""

    def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
        super().setup(cfg)
        if cfg.logconfig or cfg.logconfig_dict or cfg.logconfig_json or cfg.syslog:
            return  # the operator's own logging configuration
        from infra.config import Config, ConfigError, load_config
        from infra.logging_setup import configure_logging

        try:
            config = load_config()
        except ConfigError:  # reported in one line by the bootstrap, which stops the start
            config = Config()
        handler = self._get_gunicorn_handler(self.error_log)
        configure_logging(config.log_level, config.log_format, handlers=[handler] if handler else None)


    def access(self, resp, req, environ, request_time) -> None:  # type: ignore[no-untyped-def]
        """gunicorn's access line, with only the atoms its format names computed (infra.logging_setup.AccessAtoms)."""
        if not self.access_log_enabled:
            return
        from infra.logging_setup import AccessAtoms

        try:
            self.access_log.info(self.cfg.access_log_format, AccessAtoms(self, resp, req, environ, request_time))
        except Exception:  # as gunicorn's: a line that cannot be written is reported, the request is not failed
            self.error(traceback.format_exc())


logger_class = ServiceLogger


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """Upgrade the schema and create the first key/secret once, before any worker starts.

    In a short-lived child process: the master then never holds the app, SQLAlchemy and Alembic in
    memory (about 50 MB of RSS for the lifetime of the server otherwise). With DATABASE_URL unset, the master
    first starts (or joins) the embedded PostgreSQL, so that it outlives every worker."""
    import subprocess
    import sys

    if any(isinstance(address, str) for address in server.cfg.address):  # unix:... from here, -b or GUNICORN_CMD_ARGS
        server.cfg.set("reuse_port", False)
    from infra.config import ConfigError, load_config
    from infra.lifecycle import EmbeddedPostgresError, embedded_postgres

    try:
        if not load_config().database_url:
            embedded_postgres()
    except ConfigError:
        pass  # the bootstrap reports it in one line
    except EmbeddedPostgresError as exc:
        server.log.error("database error: %s", exc)
        raise SystemExit(1) from None
    code = "from app import bootstrap_from_environment as b; raise SystemExit(b())"
    # The bootstrap's lines go where the master's go.
    stderr = open(server.cfg.errorlog, "a") if server.cfg.errorlog != "-" else None  # noqa: SIM115
    try:
        # Its process counts nothing the workers' /metrics should sum: prometheus_client in its own memory.
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, stderr=stderr, env=env)
    finally:
        if stderr is not None:
            stderr.close()
    if done.returncode != 0:
        raise SystemExit(done.returncode)
    reset_metrics_dir(METRICS_DIR)  # only for a start that goes on to run workers
    share_libraries()


# The third-party libraries every worker loads, imported once in the master: the forked workers share their pages
# (copy-on-write) instead of each importing its own copy. Measured with 2 idle workers: 116 MB of PSS for the
# three processes against 137 MB, and each worker's RSS 65 MB against 69 MB. The project's own modules stay out of
# the master, so a HUP's new workers load the code as it is now.
SHARED_LIBRARIES = ("flask", "jinja2", "werkzeug", "sqlalchemy.orm", "sqlalchemy.dialects.postgresql.psycopg2",
                    "psycopg2.extras", "requests", "urllib3", "prometheus_client", "segno", "standardwebhooks",
                    "base58")


def share_libraries() -> None:
    import gc
    import importlib

    for name in SHARED_LIBRARIES:
        importlib.import_module(name)
    # Out of the garbage collector's sight: a collection in a worker would otherwise write to every one of these
    # objects' headers and copy the pages the workers share.
    gc.freeze()


def reset_metrics_dir(path: str) -> None:
    """A new run starts from zero: the counters of a previous run's workers would otherwise be summed in."""
    if os.path.isdir(path):
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    os.makedirs(path, exist_ok=True)


def on_exit(server) -> None:  # type: ignore[no-untyped-def]
    """The run is over: its counters mean nothing to the next one (which would empty the directory anyway)."""
    if OWN_METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """A worker is gone: its live gauges (is it the watcher's leader?) no longer count; its counters still do."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, METRICS_DIR)


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """Start this worker's background threads (dispatcher, standby watcher) explicitly, once."""
    import gc

    from app import start_background

    start_background(worker.wsgi)
    quit_without_the_pools_lock(worker)
    # What the worker built to serve (the app, its modules, SQLAlchemy's compiled statements) lives as long as the
    # worker: frozen, it is no longer traversed by every full collection, which otherwise paused a request
    # for milliseconds now and then.
    gc.freeze()


def quit_without_the_pools_lock(worker) -> None:  # type: ignore[no-untyped-def]
    """A quick stop (SIGQUIT from the master, which Ctrl-C sends; SIGINT) raises SystemExit in the worker's main
    thread, and worker_exit below ends the process.

    gthread's own handler shuts its request pool down from inside the signal handler: when the signal lands while
    the main thread is handing a request to that pool (ThreadPoolExecutor.submit, holding the pool's lock), the
    handler waits for that lock forever and the worker never exits (seen under `dev.py production`: the master
    then gives up on it and it is killed). Raising instead leaves `submit` through its `with` block, lock released."""
    import signal
    import sys

    def quit_now(signum: int, frame: object) -> None:
        worker.alive = False
        sys.exit(0)

    for quick in (signal.SIGQUIT, signal.SIGINT):
        signal.signal(quick, quit_now)


def worker_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """Stop this worker's background threads, then end the process at once.

    Without the last step a worker could outlive its stop: the interpreter's exit joins every thread of gthread's
    request pool, and a request thread still waiting (on a client that sends nothing, on a stalled upstream) held
    the worker while its watcher thread, a daemon, kept running cycles; after the master's own timeout the worker
    was left orphaned. Nothing the worker still has to do needs the interpreter's clean exit: its database work is
    committed or rolled back by PostgreSQL, its counters are in the metrics files already."""
    import logging
    import sys

    if os.getpid() != worker.pid:  # gunicorn also calls this hook in the master for a worker it lost track of
        return
    from app import stop_background
    from web.services import services_of

    try:
        stop_background(worker.wsgi, timeout=5)
        services_of(worker.wsgi).db.dispose()  # the connections end with a goodbye, not an EOF in PostgreSQL's log
    except Exception:  # the worker is going away either way
        pass
    exiting = sys.exc_info()[1]
    code = exiting.code if isinstance(exiting, SystemExit) and isinstance(exiting.code, int) else 0
    logging.shutdown()  # the log lines written so far reach gunicorn's error log
    os._exit(code)
