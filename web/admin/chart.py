"""The overview's chart, drawn on the server as inline SVG: payments created and USDT credited per UTC day, one bar
each per day. Presentation attributes only (no style attribute or element, no script), so the pages' strict
Content-Security-Policy holds; each bar carries its numbers in a <title>, and the page lists them in a table too."""
from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from markupsafe import Markup, escape

from console.totals import Day
from infra.money import format_amount

WIDTH, PANEL, GAP, LEFT = 720, 120, 36, 56
COLOURS = ("#0f5f9b", "#0f7b5f")


def panel(values: Sequence[Decimal], labels: Sequence[str], top: int, colour: str, heading: str) -> list[str]:
    """One row of bars, scaled to its largest value, with its heading and its maximum on the left axis."""
    top_value = max(values, default=Decimal(0))
    biggest = top_value if top_value > 0 else Decimal(1)
    step = (WIDTH - LEFT) / max(len(values), 1)
    parts = [f'<text x="0" y="{top - 8}" font-size="13" fill="#1c2430">{escape(heading)}</text>',
             f'<text x="{LEFT - 6}" y="{top + 10}" font-size="11" text-anchor="end" fill="#5b6675">'
             f'{escape(format_amount(top_value))}</text>',
             f'<line x1="{LEFT}" y1="{top + PANEL}" x2="{WIDTH}" y2="{top + PANEL}" stroke="#c4ccd6"/>']
    for n, (value, label) in enumerate(zip(values, labels, strict=True)):
        height = float(value / biggest) * PANEL
        x = LEFT + n * step + 1
        parts.append(f'<rect x="{x:.1f}" y="{top + PANEL - height:.1f}" width="{max(step - 2, 1):.1f}" '
                     f'height="{height:.1f}" fill="{colour}"><title>{escape(label)}: '
                     f'{escape(format_amount(value))}</title></rect>')
    return parts


def chart_svg(days: Sequence[Day], t: dict[str, str]) -> Markup:
    labels = [d.day.isoformat() for d in days]
    height = 2 * (PANEL + GAP) + 16
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" '
             f'aria-label="{escape(t["admin_chart_label"])}" class="chart">']
    parts += panel([Decimal(d.payments) for d in days], labels, GAP - 12, COLOURS[0], t["admin_chart_payments"])
    parts += panel([d.usdt for d in days], labels, 2 * GAP + PANEL - 12, COLOURS[1], t["admin_chart_usdt"])
    if days:
        bottom = height - 2
        parts.append(f'<text x="{LEFT}" y="{bottom}" font-size="11" fill="#5b6675">{escape(labels[0])}</text>')
        parts.append(f'<text x="{WIDTH}" y="{bottom}" font-size="11" text-anchor="end" fill="#5b6675">'
                     f'{escape(labels[-1])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
