"""Helpers shared by the benchmark scripts: databases, percentiles, tables, JSON results, an SVG plot."""
from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def with_database(url: str, name: str) -> str:
    from database import normalize_url

    return make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


class BenchDatabase:
    """A fresh database `bench_<prefix>_<hex>` on the server of `server_url`, dropped on close."""

    def __init__(self, server_url: str, prefix: str) -> None:
        self.name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(with_database(server_url, "postgres"), isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = with_database(server_url, self.name)

    def migrate(self) -> None:
        import migrate

        migrate.upgrade_to_head(self.url)

    def close(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def amounts_of_this_minute(width: int) -> int:
    """The first of `width` whole-USDT amounts (each a create run's `base`) that only this minute's runs use within
    1,000 minutes (16 h, far past a payment's hour): a create is never refused as amount_in_use or
    order_id_conflict by the still-pending payments of an earlier run or of a --reuse run, which would be
    measured as if it were a create."""
    return 10_000 + (int(time.time()) // 60 % 1000) * width


def wait_quiet(max_busy_percent: float = 15.0, timeout: float = 300.0) -> float:
    """Wait (up to `timeout` s) until the machine is idle over a 2 s sample (other work, e.g. a test suite,
    would distort the numbers); returns the busy share measured last, in % of all cores."""
    import psutil

    deadline = time.monotonic() + timeout
    busy = psutil.cpu_percent(interval=2.0)
    while busy > max_busy_percent and time.monotonic() < deadline:
        print(f"machine busy ({busy:.0f}% of all cores): waiting for it to be idle", flush=True)
        busy = psutil.cpu_percent(interval=5.0)
    return busy


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def rnd(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pg = "unknown"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(), "python": platform.python_version(), "postgresql_client": pg,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def print_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line, sep] + ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    text_ = "\n".join(out)
    print(text_, flush=True)
    return text_


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}", flush=True)


def svg_plot(path: Path, title: str, panels: list[dict[str, Any]]) -> None:
    """A small dependency-free SVG: one panel per dict(title, ylabel, xlabels, series={name: [y or None]}),
    x on a categorical axis (the sizes), y linear from 0."""
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    pw, ph, ml, mr, mt, mb = 420, 300, 64, 16, 40, 70
    width = pw * len(panels)
    height = ph + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="14">{title}</text>']
    for index, panel in enumerate(panels):
        x0 = index * pw + ml
        y0 = 30 + mt
        w, h = pw - ml - mr, ph - mt - mb
        log = bool(panel.get("log"))
        low = high = 0
        values = [v for s in panel["series"].values() for v in s if v is not None]
        values += [panel["line"]] if panel.get("line") else []
        if log:  # decades from below the smallest to above the largest value
            low = math.floor(math.log10(max(1e-3, min(v for v in values if v > 0))))
            high = math.ceil(math.log10(max(values)))
            high += high == low
        top = max(values) * 1.15 or 1.0
        xs = panel["xlabels"]
        step = w / max(1, len(xs) - 1) if len(xs) > 1 else 0

        def px(i: int, x0: float = x0, step: float = step, n: int = len(xs), w: float = w) -> float:
            return x0 + (i * step if n > 1 else w / 2)

        def py(v: float, y0: float = y0, h: float = h, top: float = top, log: bool = log, low: int = low,
               high: int = high) -> float:
            if log:
                return y0 + h - (math.log10(max(v, 1e-9)) - low) / (high - low) * h
            return y0 + h - v / top * h

        parts.append(f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" '
                     f'font-size="12">{panel["title"]}</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>')
        ticks = [10.0 ** e for e in range(low, high + 1)] if log else [top * t / 4 for t in range(5)]
        for v in ticks:
            parts.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>')
            parts.append(f'<text x="{x0 - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
        parts.append(f'<text transform="translate({x0 - 48},{y0 + h / 2}) rotate(-90)" text-anchor="middle">'
                     f'{panel["ylabel"]}</text>')
        for i, label in enumerate(xs):
            parts.append(f'<text x="{px(i):.1f}" y="{y0 + h + 16}" text-anchor="middle">{label}</text>')
        parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">{panel.get("xlabel", "")}</text>')
        if panel.get("line"):
            ly = py(panel["line"])
            parts.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{ly:.1f}" y2="{ly:.1f}" stroke="#999" '
                         f'stroke-dasharray="4 3"/><text x="{x0 + w - 2}" y="{ly - 3:.1f}" text-anchor="end" '
                         f'fill="#666">{panel.get("line_label", "target")}</text>')
        for n, (name, series) in enumerate(panel["series"].items()):
            color = colors[n % len(colors)]
            points = [(px(i), py(v)) for i, v in enumerate(series) if v is not None]
            if len(points) > 1:
                parts.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
                    color, " ".join(f"{x:.1f},{y:.1f}" for x, y in points)))
            for x, y in points:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
            ly = y0 + h + 40 + 14 * (n // 2)
            lx = x0 + (n % 2) * 160
            parts.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{color}"/>'
                         f'<text x="{lx + 14}" y="{ly + 9}">{name}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")
    print(f"wrote {path}", flush=True)
