"""HTTP load generator, run as its own process by bench/api.py:

    python -m bench.loadgen --host 127.0.0.1 --port 5000 --key K --mode post|get --rate 200 --duration 30
        [--connections 32] [--ids FILE] [--wallets FILE] [--save-ids FILE] [--prefix P]

--rate R > 0: open loop. Request i is due at start + i/R whatever happened before, and its latency is
measured from that due time (so a stalled server cannot hide queueing: no coordinated omission).
--rate 0: closed loop, each connection sends back to back (saturation).
Prints one JSON object: counts, statuses, latency percentiles (ms), achieved rate, and this process's CPU.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import resource
import sys
import time
from pathlib import Path


def build_request(args: argparse.Namespace, n: int, wallets: list[str], ids: list[str]) -> bytes:
    if args.mode == "post":
        # (wallet, amount) pairs never repeat: the amount carries the request number. No wallets: no
        # wallet_address, each payment gets a deposit address derived from the service's DEPOSIT_XPUB.
        amount = f"{args.base + n // 1_000_000}.{n % 1_000_000:06d}"
        wallet = {"wallet_address": wallets[n % len(wallets)]} if wallets else {}
        body = json.dumps({**wallet, "expected_amount_usdt": amount,
                           "order_id": f"{args.prefix}-{n}", "callback_url": "http://127.0.0.1:9/hook"},
                          separators=(",", ":")).encode()
        head = (f"POST /payments HTTP/1.1\r\nHost: {args.host}\r\nAuthorization: Bearer {args.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        return head + body
    pid = ids[random.randrange(len(ids))]
    return (f"GET /payments/{pid} HTTP/1.1\r\nHost: {args.host}\r\nAuthorization: Bearer {args.key}\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(args: argparse.Namespace) -> dict:
    wallets = Path(args.wallets).read_text().split() if args.wallets else []
    ids = Path(args.ids).read_text().split() if args.ids else []
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    saved: list[str] = []
    counter = itertools.count()
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    start = time.perf_counter() + 0.2
    end = start + args.duration

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(args.host, args.port)
        while True:
            if args.rate > 0:
                due = await queue.get()
                if due is None:
                    break
            else:
                due = time.perf_counter()
                if due >= end:
                    break
            request = build_request(args, next(counter), wallets, ids)
            try:
                writer.write(request)
                status, body = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(args.host, args.port)
                continue
            done = time.perf_counter()
            if due >= start:
                latencies.append((done - due) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
            if args.save_ids and status == 201:
                saved.append(json.loads(body)["id"])
        writer.close()

    async def pacer() -> None:
        i = 0
        while True:
            due = start + i / args.rate
            if due >= end:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(due)
            i += 1
        for _ in range(args.connections):
            queue.put_nowait(None)

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    tasks = [asyncio.create_task(connection()) for _ in range(args.connections)]
    if args.rate > 0:
        tasks.append(asyncio.create_task(pacer()))
    await asyncio.gather(*tasks)
    finished = time.perf_counter()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    wall = max(1e-9, finished - start)
    if args.save_ids:
        with open(args.save_ids, "w") as f:
            f.write("\n".join(saved) + "\n")
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(len(ordered) - 1, max(0, int(-(-p * len(ordered) // 100)) - 1))], 3)

    return {
        "mode": args.mode, "offered_rate": args.rate, "connections": args.connections, "duration_s": round(wall, 2),
        "requests": len(latencies), "errors": errors, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "achieved_rate": round(len(latencies) / wall, 1),
        "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": pct(100),
                       "mean": round(sum(ordered) / len(ordered), 3) if ordered else None},
        "cpu_seconds": round(cpu, 2), "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--mode", choices=["post", "get"], required=True)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ids")
    parser.add_argument("--wallets")
    parser.add_argument("--save-ids")
    parser.add_argument("--prefix", default="lg")
    parser.add_argument("--base", type=int, default=100, help="integer part of the amounts (keeps runs apart)")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
