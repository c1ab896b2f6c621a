"""What open checkout pages cost the database: N pages polling GET /pay/<token>/status as the page does (every
3 s), against the app on a real PostgreSQL, counting every statement and connection checkout the app makes.

    .venv/bin/python -m bench.checkout                  # 1,000 pages for 30 s
    .venv/bin/python -m bench.checkout --pages 100 --seconds 10

The page's own first load looks its token up once; after that a process answers every page from its status board
(web.status_board.StatusBoard), which re-reads all the open pages' payments in one query at most every
web.services.STATUS_TTL_SECONDS. Each gunicorn worker keeps its own board: the total is about one query per
worker per period, whatever the number of pages.
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import event

from bench.common import DEFAULT_PG, BenchDatabase

POLL_SECONDS = 3.0  # what web/templates/checkout.html waits between two polls
API_KEY = "bench_checkout_key"


def count_database_work(engine: Any) -> dict[str, int]:
    counted = {"statements": 0, "checkouts": 0}
    event.listen(engine, "before_cursor_execute", lambda *a: counted.__setitem__("statements",
                                                                                counted["statements"] + 1))
    event.listen(engine.pool, "checkout", lambda *a: counted.__setitem__("checkouts", counted["checkouts"] + 1))
    return counted


def open_pages(client: Any, pages: int) -> list[str]:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    tokens = []
    for n in range(pages):
        body = {"wallet_address": "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx", "expected_amount_usdt": f"{n + 1}.5",
                "order_id": f"bench-{n}", "callback_url": "http://127.0.0.1:9/hook"}
        created = client.post("/payments", json=body, headers=auth)
        assert created.status_code == 201, created.get_json()
        tokens.append(created.get_json()["checkout_url"].rsplit("/", 1)[1])
    for token in tokens:
        assert client.get(f"/pay/{token}").status_code == 200
    return tokens


def poll(app: Any, tokens: list[str], seconds: float) -> int:
    """Every page polls once per POLL_SECONDS, spread over the period, from 4 threads; the polls made."""
    def one(token: str) -> None:
        with app.test_client() as client:
            assert client.get(f"/pay/{token}/status").status_code == 200

    made, started = 0, time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        while time.monotonic() - started < seconds:
            period = time.monotonic()
            list(pool.map(one, tokens))
            made += len(tokens)
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - period)))
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checkout", description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    args = parser.parse_args(argv)
    from app import create_app
    from database import Database
    from infra.config import Config

    bench_db = BenchDatabase(args.pg_url, "checkout")
    try:
        bench_db.migrate()
        db = Database(bench_db.url)
        app = create_app(Config(database_url=bench_db.url, api_keys=(API_KEY,), watcher_enabled=False,
                                allow_private_callbacks=True, api_key_cache_seconds=60.0), database=db)
        tokens = open_pages(app.test_client(), args.pages)
        counted = count_database_work(db.engine)
        started = time.monotonic()
        polls = poll(app, tokens, args.seconds)
        elapsed = time.monotonic() - started
        print(f"{args.pages} open pages, {polls} status polls in {elapsed:.1f} s ({polls / elapsed:.0f} polls/s): "
              f"{counted['statements']} SQL statements ({counted['statements'] / elapsed:.2f}/s), "
              f"{counted['checkouts']} connection checkouts ({counted['checkouts'] / elapsed:.2f}/s, each with "
              "its pre-ping)")
        db.dispose()
    finally:
        bench_db.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
