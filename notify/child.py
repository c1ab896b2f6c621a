"""The process one notification attempt runs in: `python notify/child.py`, the request as JSON on stdin (the URL
never on the command line, which `ps` shows), the outcome as one JSON line on stdout.

Apprise has per-socket timeouts only (its own call deadline stops waiting but leaves the service's thread running)
and reads answers whole: so the parent ends this process at the attempt's deadline (`notify.sending`), and this
process caps its own memory (MEMORY_LIMIT_BYTES) and CPU, which bounds what an answer can make it read. It imports
nothing of the project.
"""
from __future__ import annotations

import json
import logging
import resource
import sys
from typing import Any

MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024  # address space: Python and Apprise take about 60 MB of it
MAX_ERROR_CHARS = 300


class Collected(logging.Handler):
    """Apprise's warnings and errors: why a send failed, in its own words (redacted by the parent)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def limit_resources(seconds: float) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    cpu = max(1, int(seconds) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def send(request: dict[str, Any]) -> dict[str, Any]:
    """One Apprise notification to one URL; {"ok", "error"}."""
    import apprise
    from apprise.common import PersistentStoreMode

    collected = Collected()
    apprise_logger = logging.getLogger("apprise")
    apprise_logger.addHandler(collected)
    apprise_logger.setLevel(logging.WARNING)
    apprise_logger.propagate = False
    asset = apprise.AppriseAsset(storage_mode=PersistentStoreMode.MEMORY)
    target = apprise.Apprise(asset=asset)
    if not target.add(request["url"]):
        return {"ok": False, "error": "the URL is not one Apprise can send to"}
    # Plain text: each service escapes it for its own markup (an order id "A<1>" stays text on Telegram's HTML).
    result = target.notify(body=request["body"], title=request["title"], body_format=apprise.NotifyFormat.TEXT,
                           timeout=request["timeout"])
    ok = bool(result)
    error = None if ok else (collected.lines[-1] if collected.lines else "Apprise reported a failure")
    return {"ok": ok, "error": error[:MAX_ERROR_CHARS] if error else None}


def main() -> int:
    request = json.loads(sys.stdin.read(1024 * 1024))
    limit_resources(float(request["timeout"]))
    try:
        outcome = send(request)
    except MemoryError:
        outcome = {"ok": False, "error": "the attempt ran out of its memory limit (an answer too large?)"}
    except Exception as exc:  # reported to the parent, which records it; nothing else to do here
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]}
    sys.stdout.write(json.dumps(outcome) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
