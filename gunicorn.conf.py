"""Production gunicorn settings: `gunicorn -c gunicorn.conf.py "app:create_app()"`.

Every worker serves the API and runs a webhook dispatcher (events are claimed with
FOR UPDATE SKIP LOCKED, so workers never send the same attempt). Every worker also starts
a watcher thread when WATCHER_ENABLED is true, but only the holder of the PostgreSQL advisory
lock works: the others stand by and take over within one polling interval if it dies.
To run the watcher as its own process instead, set WATCHER_ENABLED=false here and run
`python watcher.py`.

Connection budget: each worker's pool opens at most pool_size + max_overflow = 30 connections
(plus one for the watcher lock); keep workers * 31 (+ 31 per standalone watcher, + db_manager)
below PostgreSQL's max_connections (100 by default), e.g. 2 workers = 62.
"""
from __future__ import annotations

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("GUNICORN_WORKERS", min(4, multiprocessing.cpu_count())))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
# Each worker gets its own listening socket (SO_REUSEPORT) and the kernel spreads new connections
# over them: without it, a few busy keep-alive clients can all land on one worker.
reuse_port = True
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# The bootstrap (migrations, first API key, webhook secret) runs once, in a child process of on_starting; each
# worker then builds the app itself (no preload), so the master never imports or holds it.
preload_app = False


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """Upgrade the schema and create the first key/secret once, before any worker starts.

    In a short-lived child process: the master then never holds the app, SQLAlchemy and Alembic in
    memory (about 50 MB of RSS for the lifetime of the server otherwise)."""
    import subprocess
    import sys

    code = "from app import bootstrap_from_environment as b; raise SystemExit(b())"
    done = subprocess.run([sys.executable, "-c", code],
                          cwd=os.path.dirname(os.path.abspath(__file__)))
    if done.returncode != 0:
        raise SystemExit(done.returncode)


def post_worker_init(worker) -> None:  # type: ignore[no-untyped-def]
    """Start this worker's background threads (dispatcher, standby watcher) explicitly, once."""
    from app import start_background

    start_background(worker.wsgi)


def worker_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    from app import stop_background

    try:
        stop_background(worker.wsgi, timeout=5)
    except Exception:  # the worker is going away either way
        pass
