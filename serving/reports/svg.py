"""Charts of the report pages as inline SVG, drawn from numbers computed elsewhere.

Compute and draw apart: :mod:`models.calibration` computes the reliability table and
:mod:`serving.forecasting` the forecast; these functions only turn them into ``<svg>`` text that
a page embeds as is (no JavaScript, no image files, crisp at any zoom). Every piece of text that
comes from the data is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from html import escape
from typing import Any

#: the palette of the pages (colour-blind safe: blue / orange / green, greys)
BLUE = "#1f5fa8"
BLUE_LIGHT = "#c9dcf2"
ORANGE = "#d9731a"
GREEN = "#2e8540"
GREY = "#6b7280"
GREY_LIGHT = "#e5e7eb"
INK = "#1f2937"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, Arial, sans-serif\""


def money(value: Any, currency: str = "$") -> str:
    """An amount as a sales leader reads it: $1.25M, $850k, $9,400; "—" when unknown."""
    v = number(value)
    if v is None:
        return "—"
    sign = "-" if v < 0 else ""
    a = abs(v)
    if a >= 1e9:
        text = f"{a / 1e9:,.1f}B"
    elif a >= 1e6:
        # three significant digits: $1.25M, $12.5M, $125M
        text = f"{a / 1e6:,.{2 if a < 1e7 else 1 if a < 1e8 else 0}f}M"
    elif a >= 1e4:
        text = f"{a / 1e3:,.0f}k"
    else:
        text = f"{a:,.0f}"
    return f"{sign}{currency}{text}"


def pct(value: Any, digits: int = 0) -> str:
    """A probability or share as a percentage (0.734 → "73%"); "—" when unknown."""
    v = number(value)
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def odds(value: Any) -> str:
    """A chance as a percentage that never rounds a possibility away: "<1%", "62%", ">99%"."""
    v = number(value)
    if v is not None and 0.0 < v < 0.005:
        return "<1%"
    if v is not None and 0.995 <= v < 1.0:
        return ">99%"
    return pct(v)


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (None, NaN, ±inf and text that is no number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _f(x: float) -> str:
    """A coordinate, short."""
    return f"{x:.1f}"


def _text(
    x: float,
    y: float,
    content: str,
    *,
    anchor: str = "middle",
    size: int = 12,
    fill: str = INK,
    weight: str = "normal",
) -> str:
    return (
        f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" font-size="{size}" '
        f'fill="{fill}" font-weight="{weight}">{escape(content)}</text>'
    )


def _open(width: int, height: int, label: str, css_class: str) -> str:
    # role/aria-label: a screen reader says what the chart shows; <title> is the tooltip
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css_class}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}" {FONT}><title>{escape(label)}</title>'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>'
    )


def nice_ticks(low: float, high: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values from ``low`` up to the first at or above ``high``.

    Steps are 1, 2, 2.5 or 5 × a power of ten, so the axis ends on a round number that holds
    every value.
    """
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(n, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [round(first, 10)]
    while ticks[-1] < high - step * 1e-9:
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks


@dataclass(frozen=True)
class _Scale:
    """A linear map from data values to pixels."""

    d0: float
    d1: float
    p0: float
    p1: float

    def __call__(self, v: float) -> float:
        if self.d1 == self.d0:
            return (self.p0 + self.p1) / 2
        return self.p0 + (v - self.d0) / (self.d1 - self.d0) * (self.p1 - self.p0)


# ----------------------------------------------------------------------------------------
# reliability diagram
# ----------------------------------------------------------------------------------------


def reliability_svg(rows: Sequence[Mapping[str, Any]], *, label: str = "Reliability") -> str:
    """Predicted against observed per probability bin, with the diagonal and the counts.

    ``rows`` is a reliability table (:func:`models.calibration.reliability_table` as records:
    ``lower, upper, count, mean_predicted, observed_rate, ci_low, ci_high``). A point is a bin's
    mean predicted probability against the share that actually happened, the whisker its 95%
    interval (wide when the bin holds few predictions); the bars below count the predictions per
    bin. On the dashed diagonal the probabilities mean what they say.
    """
    width = 460
    left, right, top = 58, 20, 16
    plot = width - left - right  # square plot area
    bars_top, bars_h = top + plot + 64, 60
    height = bars_top + bars_h + 8
    x = _Scale(0.0, 1.0, left, left + plot)
    y = _Scale(0.0, 1.0, top + plot, top)
    parts = [_open(width, height, label, "reliability")]
    # grid and axes
    for t in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        parts.append(
            f'<line x1="{_f(x(t))}" y1="{_f(y(0))}" x2="{_f(x(t))}" y2="{_f(y(1))}" '
            f'stroke="{GREY_LIGHT}"/>'
            f'<line x1="{_f(x(0))}" y1="{_f(y(t))}" x2="{_f(x(1))}" y2="{_f(y(t))}" '
            f'stroke="{GREY_LIGHT}"/>'
        )
        parts.append(_text(x(t), y(0) + 16, pct(t), size=11, fill=GREY))
        parts.append(_text(x(0) - 6, y(t) + 4, pct(t), anchor="end", size=11, fill=GREY))
    parts.append(
        f'<rect x="{_f(x(0))}" y="{_f(y(1))}" width="{plot}" height="{plot}" fill="none" '
        f'stroke="{GREY}"/>'
    )
    parts.append(
        f'<line x1="{_f(x(0))}" y1="{_f(y(0))}" x2="{_f(x(1))}" y2="{_f(y(1))}" '
        f'stroke="{GREY}" stroke-dasharray="5 4"/>'
    )
    parts.append(_text(x(0.5), y(0) + 34, "predicted probability (bin mean)", size=12))
    parts.append(
        f'<text transform="translate(16 {_f(y(0.5))}) rotate(-90)" text-anchor="middle" '
        f'font-size="12" fill="{INK}">share that happened</text>'
    )
    filled = [r for r in rows if (number(r.get("count")) or 0) > 0]
    points: list[tuple[float, float]] = []
    for r in filled:
        mp, obs = number(r.get("mean_predicted")), number(r.get("observed_rate"))
        if mp is None or obs is None:
            continue
        lo, hi = number(r.get("ci_low")), number(r.get("ci_high"))
        if lo is not None and hi is not None:
            parts.append(
                f'<line x1="{_f(x(mp))}" y1="{_f(y(lo))}" x2="{_f(x(mp))}" y2="{_f(y(hi))}" '
                f'stroke="{BLUE}" stroke-width="1.5" opacity="0.55"/>'
            )
        points.append((mp, obs))
    if points:
        path = " ".join(f"{_f(x(a))},{_f(y(b))}" for a, b in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{BLUE}" stroke-width="2"/>')
        for a, b in points:
            parts.append(
                f'<circle cx="{_f(x(a))}" cy="{_f(y(b))}" r="4.5" fill="{BLUE}" '
                f'stroke="#ffffff" stroke-width="1.5"/>'
            )
    else:
        parts.append(_text(x(0.5), y(0.55), "no outcomes known yet", size=14, fill=GREY))
    # counts per bin
    counts = [
        (number(r.get("lower")), number(r.get("upper")), number(r.get("count"))) for r in rows
    ]
    top_count = max((c or 0.0 for _, _, c in counts), default=0.0)
    parts.append(
        _text(x(0), bars_top - 6, "predictions per bin", anchor="start", size=11, fill=GREY)
    )
    base = bars_top + bars_h
    parts.append(
        f'<line x1="{_f(x(0))}" y1="{_f(base)}" x2="{_f(x(1))}" y2="{_f(base)}" stroke="{GREY}"/>'
    )
    for lower, upper, count in counts:
        if lower is None or upper is None or not count:
            continue
        # the tallest bar leaves room for its count above it
        h = (bars_h - 14) * count / top_count if top_count else 0.0
        x0, x1 = x(lower) + 1.5, x(upper) - 1.5
        parts.append(
            f'<rect x="{_f(x0)}" y="{_f(base - h)}" width="{_f(max(x1 - x0, 1.0))}" '
            f'height="{_f(h)}" fill="{BLUE_LIGHT}" stroke="{BLUE}" stroke-width="0.8"/>'
        )
        parts.append(_text((x0 + x1) / 2, base - h - 3, f"{int(count):,}", size=10, fill=INK))
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------
# forecast through a period against what was booked
# ----------------------------------------------------------------------------------------


def _day(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def forecast_track_svg(
    points: Sequence[Mapping[str, Any]],
    *,
    start: Any,
    end: Any,
    actual: Any = None,
    quota: Any = None,
    label: str = "Forecast through the period",
    currency: str = "$",
) -> str:
    """The forecast as made on each day of a period (expected, P10–P90 band) and the actual.

    ``points`` are forecasts of one period, each with ``as_of`` (a day), ``expected``, ``p10``
    and ``p90`` (optionally ``stage_weighted``, the CRM's stage-weighted number). ``actual`` is
    what was booked in the period, drawn as a line across; ``quota`` likewise when given.
    """
    width, height = 640, 310
    left, right, top, bottom = 70, 112, 18, 62
    d0, d1 = _day(start), _day(end)
    rows = sorted(
        (
            (
                _day(p.get("as_of")),
                number(p.get("expected")),
                number(p.get("p10")),
                number(p.get("p90")),
                number(p.get("stage_weighted")),
            )
            for p in points
        ),
        key=lambda r: r[0] or date.min,
    )
    rows = [r for r in rows if r[0] is not None and r[1] is not None]
    parts = [_open(width, height, label, "track")]
    if d0 is None or d1 is None or d1 < d0:
        d0 = min((r[0] for r in rows if r[0]), default=date.today())
        d1 = max((r[0] for r in rows if r[0]), default=d0)
    span = max((d1 - d0).days, 1)
    x = _Scale(0.0, float(span), left, width - right)
    values = [v for r in rows for v in r[1:] if v is not None]
    for extra in (number(actual), number(quota)):
        if extra is not None:
            values.append(extra)
    high = max(values, default=1.0) * 1.1 or 1.0
    ticks = nice_ticks(0.0, high, 5)
    y = _Scale(0.0, ticks[-1] if ticks[-1] > 0 else 1.0, height - bottom, top)
    for t in ticks:
        parts.append(
            f'<line x1="{left}" y1="{_f(y(t))}" x2="{width - right}" y2="{_f(y(t))}" '
            f'stroke="{GREY_LIGHT}"/>'
        )
        parts.append(
            _text(left - 6, y(t) + 4, money(t, currency), anchor="end", size=11, fill=GREY)
        )
    parts.append(
        f'<line x1="{left}" y1="{_f(y(0))}" x2="{width - right}" y2="{_f(y(0))}" stroke="{GREY}"/>'
    )
    axis_y = y(0) + 16
    parts.append(_text(left, axis_y, d0.isoformat(), anchor="start", size=11, fill=GREY))
    parts.append(_text(width - right, axis_y, d1.isoformat(), anchor="end", size=11, fill=GREY))
    parts.append(_text((left + width - right) / 2, axis_y, "forecast made on", size=11, fill=GREY))

    def px(day: date) -> float:
        return x(float(min(max((day - d0).days, 0), span)))

    band = [(px(r[0]), r[2], r[3]) for r in rows if r[0] and r[2] is not None and r[3] is not None]
    if len(band) >= 2:
        upper = " ".join(f"{_f(a)},{_f(y(hi))}" for a, _, hi in band)
        lower = " ".join(f"{_f(a)},{_f(y(lo))}" for a, lo, _ in reversed(band))
        parts.append(f'<polygon points="{upper} {lower}" fill="{BLUE_LIGHT}" opacity="0.8"/>')
    for a, lo, hi in band:
        # each forecast's own range, visible also where the band has a single point
        parts.append(
            f'<line x1="{_f(a)}" y1="{_f(y(lo))}" x2="{_f(a)}" y2="{_f(y(hi))}" '
            f'stroke="{BLUE}" stroke-width="{6 if len(band) == 1 else 1.5}" opacity="0.45"/>'
        )
    crm = [(px(r[0]), r[4]) for r in rows if r[0] and r[4] is not None]
    if len(crm) >= 2:
        parts.append(
            '<polyline points="'
            + " ".join(f"{_f(a)},{_f(y(v))}" for a, v in crm)
            + f'" fill="none" stroke="{GREY}" stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
    for a, v in crm:
        parts.append(
            f'<line x1="{_f(a - 6)}" y1="{_f(y(v))}" x2="{_f(a + 6)}" y2="{_f(y(v))}" '
            f'stroke="{GREY}" stroke-width="2"/>'
        )
    line = [(px(r[0]), r[1]) for r in rows if r[0] and r[1] is not None]
    if len(line) >= 2:
        parts.append(
            '<polyline points="'
            + " ".join(f"{_f(a)},{_f(y(v))}" for a, v in line)
            + f'" fill="none" stroke="{BLUE}" stroke-width="2.5"/>'
        )
    for a, v in line:
        parts.append(f'<circle cx="{_f(a)}" cy="{_f(y(v))}" r="3.5" fill="{BLUE}"/>')
    legend = [("expected", BLUE, ""), ("P10–P90", BLUE_LIGHT, "")]
    if crm:
        legend.append(("CRM stage-weighted", GREY, "4 3"))
    for value, name, colour in ((actual, "actual", GREEN), (quota, "quota", ORANGE)):
        level = number(value)
        if level is None:
            continue
        parts.append(
            f'<line x1="{left}" y1="{_f(y(level))}" x2="{width - right}" y2="{_f(y(level))}" '
            f'stroke="{colour}" stroke-width="2"'
            + (' stroke-dasharray="6 3"' if name == "quota" else "")
            + "/>"
        )
        parts.append(
            _text(
                width - right + 4,
                y(level) + 4,
                f"{name} {money(level, currency)}",
                anchor="start",
                size=11,
                fill=colour,
                weight="bold",
            )
        )
    if not line:
        parts.append(
            _text((left + width - right) / 2, height / 2, "no forecast stored", size=14, fill=GREY)
        )
    # the legend runs along the bottom, clear of the lines' labels on the right
    lx, ly = float(left), height - 12.0
    for name, colour, dash in legend:
        parts.append(
            f'<line x1="{_f(lx)}" y1="{_f(ly - 4)}" x2="{_f(lx + 18)}" y2="{_f(ly - 4)}" '
            f'stroke="{colour}" stroke-width="{6 if name == "P10–P90" else 2.5}"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + "/>"
        )
        parts.append(_text(lx + 24, ly, name, anchor="start", size=11))
        lx += 24 + 6.5 * len(name) + 22
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------
# the range of a forecast against quota
# ----------------------------------------------------------------------------------------


def bookings_range_svg(
    *,
    won_to_date: Any,
    expected: Any,
    p10: Any,
    p50: Any,
    p90: Any,
    quota: Any = None,
    label: str = "Bookings this period",
    currency: str = "$",
) -> str:
    """Where the period's bookings will land: won so far, the P10–P90 range, expected, quota.

    One horizontal scale from zero: the solid bar is what is already won, the band the range
    the total lands in eight times out of ten (P10 to P90), the diamond the expected total and
    the tick the median; the dashed line is the quota when one is given.
    """
    width, height = 720, 150
    left, right = 24, 24
    won, exp_, lo, med, hi, q = (number(v) for v in (won_to_date, expected, p10, p50, p90, quota))
    top_value = max([v for v in (won, exp_, lo, med, hi, q) if v is not None] or [1.0]) * 1.08
    ticks = nice_ticks(0.0, top_value or 1.0, 6)
    x = _Scale(0.0, ticks[-1] if ticks[-1] > 0 else 1.0, left, width - right)
    bar_y, bar_h = 54, 34
    parts = [_open(width, height, label, "range")]
    for t in ticks:
        parts.append(
            f'<line x1="{_f(x(t))}" y1="{bar_y - 10}" x2="{_f(x(t))}" y2="{bar_y + bar_h + 8}" '
            f'stroke="{GREY_LIGHT}"/>'
        )
        parts.append(_text(x(t), bar_y + bar_h + 24, money(t, currency), size=11, fill=GREY))
    parts.append(
        f'<rect x="{left}" y="{bar_y}" width="{width - left - right}" height="{bar_h}" '
        f'fill="#f8fafc" stroke="{GREY_LIGHT}"/>'
    )
    if lo is not None and hi is not None:
        parts.append(
            f'<rect x="{_f(x(lo))}" y="{bar_y}" width="{_f(max(x(hi) - x(lo), 2.0))}" '
            f'height="{bar_h}" fill="{BLUE_LIGHT}"/>'
        )
        for value, name in ((lo, "P10"), (hi, "P90")):
            parts.append(
                _text(
                    x(value),
                    bar_y - 8,
                    f"{name} {money(value, currency)}",
                    anchor=_anchor(x(value), width),
                    size=11,
                    fill=BLUE,
                )
            )
    if won is not None and won > 0:
        parts.append(
            f'<rect x="{left}" y="{bar_y + 8}" width="{_f(x(won) - left)}" height="{bar_h - 16}" '
            f'fill="{GREEN}"/>'
        )
        parts.append(
            _text(
                left + 4,
                bar_y + bar_h + 40,
                f"won to date {money(won, currency)}",
                anchor="start",
                size=11,
                fill=GREEN,
                weight="bold",
            )
        )
    if med is not None:
        parts.append(
            f'<line x1="{_f(x(med))}" y1="{bar_y}" x2="{_f(x(med))}" y2="{bar_y + bar_h}" '
            f'stroke="{BLUE}" stroke-width="2"/>'
        )
    if exp_ is not None:
        cx, cy = x(exp_), bar_y + bar_h / 2
        parts.append(
            f'<polygon points="{_f(cx)},{_f(cy - 9)} {_f(cx + 9)},{_f(cy)} {_f(cx)},{_f(cy + 9)} '
            f'{_f(cx - 9)},{_f(cy)}" fill="{BLUE}" stroke="#ffffff" stroke-width="1.5"/>'
        )
    if q is not None:
        parts.append(
            f'<line x1="{_f(x(q))}" y1="{bar_y - 26}" x2="{_f(x(q))}" y2="{bar_y + bar_h + 8}" '
            f'stroke="{ORANGE}" stroke-width="2.5" stroke-dasharray="6 3"/>'
        )
        parts.append(
            _text(
                x(q),
                bar_y - 30,
                f"quota {money(q, currency)}",
                anchor=_anchor(x(q), width),
                size=12,
                fill=ORANGE,
                weight="bold",
            )
        )
    parts.append("</svg>")
    return "".join(parts)


def _anchor(x: float, width: float, room: float = 70.0) -> str:
    """Text anchor of a label at ``x`` so that it stays inside the chart."""
    return "end" if x > width - room else "start" if x < room else "middle"


def range_bar_svg(
    *, p10: Any, expected: Any, p90: Any, scale_max: float, won: Any = None, width: int = 160
) -> str:
    """A small inline bar for a table row: won (green), P10–P90 (band), expected (tick)."""
    height = 16
    lo, exp_, hi, w = (number(v) for v in (p10, expected, p90, won))
    x: Callable[[float], float] = _Scale(0.0, scale_max if scale_max > 0 else 1.0, 1, width - 1)
    label = f"P10 {money(lo)}, expected {money(exp_)}, P90 {money(hi)}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>',
        f'<rect x="0" y="3" width="{width}" height="10" fill="#f3f4f6"/>',
    ]
    if lo is not None and hi is not None:
        parts.append(
            f'<rect x="{_f(x(lo))}" y="3" width="{_f(max(x(hi) - x(lo), 1.5))}" height="10" '
            f'fill="{BLUE_LIGHT}"/>'
        )
    if w is not None and w > 0:
        parts.append(f'<rect x="1" y="6" width="{_f(x(w) - 1)}" height="4" fill="{GREEN}"/>')
    if exp_ is not None:
        parts.append(
            f'<rect x="{_f(x(exp_) - 1.25)}" y="1" width="2.5" height="14" fill="{BLUE}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)
