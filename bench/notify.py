"""What one operator notification attempt costs, and where a hanging target is cut.

    .venv/bin/python -m bench.notify                 # 10 sends to a json:// receiver, 2 to one that never answers
    .venv/bin/python -m bench.notify --sends 30 --deadline 3

Each attempt runs Apprise in a child process (notify/sending.py) that is killed at the deadline. This measures, on
this machine: the wall time of one attempt to a receiver on 127.0.0.1 that answers at once (the child's start and
Apprise's import included), the CPU the child used (its rusage), and how long an attempt to a receiver that accepts
and never answers takes before it is ended (it should be the deadline, plus the kill).
"""
from __future__ import annotations

import argparse
import resource
import socket
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import print_table, write_json
from infra.notify_targets import NotifyTarget
from notify.sending import send_once


class Answer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def answering_target() -> tuple[NotifyTarget, ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return NotifyTarget.of(f"json://127.0.0.1:{server.server_address[1]}/hook"), server


def silent_target() -> tuple[NotifyTarget, socket.socket]:
    """A listener that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return NotifyTarget.of(f"json://127.0.0.1:{listener.getsockname()[1]}/hook"), listener


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=10)
    parser.add_argument("--hangs", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="3 sends, 1 hang")
    parser.add_argument("--out", type=Path, default=Path("bench/results/notify.json"))
    parser.add_argument("--pg-url", help="unused (no database here); accepted like the other benchmarks")
    args = parser.parse_args()
    sends, hangs = (3, 1) if args.quick else (args.sends, args.hangs)

    target, server = answering_target()
    walls, cpus = [], []
    for _ in range(sends):
        cpu, started = children_cpu(), time.monotonic()
        result = send_once(target, "Payment received: 10 USDT", "Order bench\nReceived 10 of 10 USDT", 10.0)
        walls.append(time.monotonic() - started)
        cpus.append(children_cpu() - cpu)
        assert result.ok, result.error
    server.shutdown()

    silent, listener = silent_target()
    cut = []
    for _ in range(hangs):
        started = time.monotonic()
        result = send_once(silent, "t", "b", args.deadline)
        cut.append(time.monotonic() - started)
        assert not result.ok
    listener.close()

    rows = [["attempt, answered at once: wall s (median, max)", f"{statistics.median(walls):.3f}", f"{max(walls):.3f}"],
            ["attempt, answered at once: child CPU s (median, max)", f"{statistics.median(cpus):.3f}",
             f"{max(cpus):.3f}"],
            [f"attempt, never answered, deadline {args.deadline:g} s: wall s (median, max)",
             f"{statistics.median(cut):.3f}", f"{max(cut):.3f}"]]
    print_table(["what", "median", "max"], rows)
    write_json(args.out, {"sends": sends, "hangs": hangs, "deadline": args.deadline, "wall_seconds": walls,
                          "child_cpu_seconds": cpus, "cut_seconds": cut})


if __name__ == "__main__":
    main()
