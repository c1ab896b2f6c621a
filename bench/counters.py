"""What counting costs a create: `pgbench` at saturation running the create-shaped transaction (bench/pg_floor.py)
on one database, in alternating rounds, with the row counts' triggers off, on (migration 0011: each backend adds to
its own rows), and replaced by a single counter row per key that every create updates (the design the counts
avoid, to show what it would cost).

    .venv/bin/python -m bench.counters                  # 5 rounds of 10 s each way -> bench/results/counters.json
    .venv/bin/python -m bench.counters --quick --out /tmp/counters.json
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import DEFAULT_PG, RESULTS, BenchDatabase, machine, print_table, rnd, write_json
from bench.pg_floor import pgbench_path, pgbench_url, run_pgbench, tps

TRIGGERS = ("payments_counted_insert", "payments_counted_update", "payments_counted_delete")
# The design avoided: one row per key, updated by every create (created with the bench's database, dropped with it).
HOT_ROW = """
CREATE TABLE hot_counts (key text PRIMARY KEY, n bigint NOT NULL);
CREATE FUNCTION hot_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hot_counts AS c (key, n) SELECT 'payments:' || status, count(*) FROM new_rows GROUP BY 1
    ON CONFLICT (key) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END $$;
CREATE TRIGGER payments_hot_insert AFTER INSERT ON payments REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION hot_count();
"""


def set_mode(engine: Any, mode: str) -> None:
    """"off": no counting trigger; "sharded": the service's; "hot row": the single-row counter only."""
    with engine.begin() as conn:
        for trigger in TRIGGERS:
            conn.execute(text(f"ALTER TABLE payments {'ENABLE' if mode == 'sharded' else 'DISABLE'} TRIGGER {trigger}"))
        conn.execute(text(f"ALTER TABLE payments {'ENABLE' if mode == 'hot row' else 'DISABLE'} TRIGGER "
                          "payments_hot_insert"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.counters", description=__doc__.split("\n")[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="a PostgreSQL server (superuser); default %(default)s")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10, help="of each pgbench run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--out", type=Path, default=RESULTS / "counters.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.connections = 1, 1, 4
    if pgbench_path() is None:
        raise SystemExit("pgbench is not installed (Debian: postgresql-client)")
    modes = ("off", "sharded", "hot row")
    bench_db = BenchDatabase(args.pg_url, "counters")
    tmp = Path(tempfile.mkdtemp(prefix="bench_counters_"))
    engine = create_engine(bench_db.url)
    runs: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        bench_db.migrate()
        with engine.begin() as conn:
            conn.execute(text(HOT_ROW))
        url = pgbench_url(bench_db.url)
        for _ in range(args.rounds):
            for mode in modes:
                set_mode(engine, mode)
                output = run_pgbench(url, tmp, ["-c", str(args.connections), "-j", "2", "-T", str(args.seconds)])
                runs[mode].append(tps(output))
                print(f"{mode}: {runs[mode][-1]:.0f} tps", flush=True)
    finally:
        engine.dispose()
        bench_db.close()
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {mode: statistics.median(values) for mode, values in runs.items()}
    rows = [[mode, rnd(medians[mode], 0), " / ".join(f"{v:.0f}" for v in runs[mode]),
             rnd(medians[mode] / medians["off"], 3)] for mode in modes]
    table = print_table(["counting", "tps (median)", "tps per round", "over no counting"], rows)
    write_json(args.out, {"benchmark": "counters", "quick": args.quick, "machine": machine(),
                          "settings": {k: str(v) for k, v in vars(args).items()}, "tps": runs,
                          "median_tps": medians, "table": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
