"""One attempt of one notification: Apprise run in a child process (`notify/child.py`) that is ended at the
attempt's deadline, whatever Apprise is doing then (a target that accepts the connection and never answers, an
answer that never ends, a DNS lookup that hangs). The child caps its own memory and CPU; its answer to this process
is one JSON line, read with a cap. What it says went wrong is redacted of every part of the target's URL.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from infra.notify_targets import NotifyTarget
from notify.messages import TEST_MESSAGE, render

logger = logging.getLogger(__name__)

CHILD = Path(__file__).resolve().parent / "child.py"
MAX_CHILD_OUTPUT = 16 * 1024
# The child's own Apprise call stops waiting this much before the process is ended, so that a slow target is
# usually reported as such rather than as a killed process.
INNER_MARGIN_SECONDS = 1.0
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class SendResult:
    ok: bool
    error: str | None
    duration_ms: int


def send_once(target: NotifyTarget, title: str, body: str, deadline: float) -> SendResult:
    """Send `title` and `body` to `target`, all within `deadline` seconds; never raises for the target's failures."""
    started = time.monotonic()
    request = json.dumps({"url": target.url, "title": title, "body": body,
                          "timeout": max(0.5, deadline - INNER_MARGIN_SECONDS)})
    child = subprocess.Popen([sys.executable, "-I", str(CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, start_new_session=True, env=child_environment())
    try:
        out, _ = child.communicate(request.encode(), timeout=deadline)
    except subprocess.TimeoutExpired:
        end_child(child)
        return SendResult(False, f"no outcome within {deadline:g}s: the attempt was ended", elapsed_ms(started))
    return SendResult(*read_outcome(out[:MAX_CHILD_OUTPUT], child.returncode, target), elapsed_ms(started))


def child_environment() -> dict[str, str]:
    """What the child inherits: the locale, proxies and certificates settings, nothing of this service's
    configuration (its secrets stay in this process)."""
    kept = ("PATH", "LANG", "LC_ALL", "HOME", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
            "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
    return {name: os.environ[name] for name in kept if name in os.environ}


def end_child(child: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group (it started its own session), reap it and close its pipes."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.communicate()


def read_outcome(out: bytes, returncode: int | None, target: NotifyTarget) -> tuple[bool, str | None]:
    try:
        outcome = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
        ok, error = bool(outcome["ok"]), outcome.get("error")
    except (ValueError, IndexError, KeyError, TypeError):
        return False, f"the sending process ended without an outcome (exit status {returncode})"
    return ok, None if ok else redact(str(error or "failed"), target)


def redact(text: str, target: NotifyTarget) -> str:
    """`text` without any part of the target's URL of four characters or more (its token, password, path, query
    values) but the scheme: what Apprise says goes into the database and the log, the URL never."""
    parts = {part for part in re.split(r"[^A-Za-z0-9_\-.~%]+", target.url.partition("://")[2]) if len(part) >= 4}
    for part in sorted(parts, key=len, reverse=True):
        text = text.replace(part, "…")
    return text[:MAX_ERROR_CHARS]


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def send_test(targets: tuple[NotifyTarget, ...], language: str, merchant: str, deadline: float) -> list[SendResult]:
    """`db_manager.py notify-test`: one test message to every target at once, each within `deadline`; the results in
    the targets' order."""
    title, body = render(TEST_MESSAGE, {"merchant": merchant}, language)
    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(lambda target: send_once(target, title, body, deadline), targets))
