"""``pipecast report funnel`` as rich tables (the numbers come from :mod:`features.funnel`)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from features.funnel import CONFIDENCE, FunnelReport

_BAND_STYLE = {
    "poor": "red",
    "average": "yellow",
    "good": "green",
    "excellent or bar too low": "cyan",
}


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _interval(rate: float, low: float, high: float) -> str:
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return "–"
    return f"{_pct(rate)} [{100 * low:.0f}–{100 * high:.0f}]"


def _text(value: object) -> str:
    return value if isinstance(value, str) and value else "–"


def render_funnel(report: FunnelReport, console: Console) -> None:
    """One table per grouping (rates with their intervals and band), then SQO → won."""
    since = "" if report.since is None else f"leads created since {report.since.date()}, "
    console.print(
        f"[bold]SQO funnel[/] — {since}settled by {report.as_of.date()} "
        f"(an SQO within {report.window_days} days of creation; {_pct(CONFIDENCE)[:-3]}% "
        f"Wilson intervals in brackets; {report.leads_in_window} newer lead(s) still in their "
        "window left out)",
        highlight=False,
    )
    for dimension in dict.fromkeys(report.rates["dimension"]):
        rows = report.rates.loc[report.rates["dimension"] == dimension]
        table = Table(title=f"by {dimension}", title_justify="left")
        for name in (
            dimension,
            "leads",
            "meetings",
            "SQOs",
            "lead→meeting",
            "meeting→SQO",
            "band",
            "lead→SQO",
        ):
            table.add_column(name, justify="left" if name in (dimension, "band") else "right")
        for r in rows.itertuples(index=False):
            style = _BAND_STYLE.get(str(r.band), "")
            band = str(r.band) + ("" if r.band_certain or not r.band else "*")
            table.add_row(
                str(r.group),
                str(r.leads),
                str(r.meetings),
                str(r.sqos),
                _interval(r.lead_to_meeting, r.lead_to_meeting_low, r.lead_to_meeting_high),
                _interval(r.meeting_to_sqo, r.meeting_to_sqo_low, r.meeting_to_sqo_high),
                f"[{style}]{band}[/]" if style else band,
                _interval(r.lead_to_sqo, r.lead_to_sqo_low, r.lead_to_sqo_high),
            )
        console.print(table)
    if report.closing is not None:
        table = Table(title="SQO → won and days to close, by segment", title_justify="left")
        for name in (
            "segment",
            "SQOs",
            "won",
            "lost",
            "open",
            "win rate",
            "benchmark",
            "median days to close",
            "benchmark days",
        ):
            table.add_column(name, justify="left" if name == "segment" else "right")
        for r in report.closing.itertuples(index=False):
            vs = f" {r.win_rate_vs_benchmark}" if r.win_rate_vs_benchmark else ""
            table.add_row(
                str(r.segment),
                str(r.sqos),
                str(r.won),
                str(r.lost),
                str(r.open),
                _interval(r.win_rate, r.win_rate_low, r.win_rate_high),
                _text(r.benchmark_win_rate) + vs,
                "–" if math.isnan(r.median_days_to_close) else f"{r.median_days_to_close:.0f}",
                _text(r.benchmark_days),
            )
        console.print(table)
    console.print(
        "[dim]mtg→SQO is the SQO rate the bands judge: poor < 25% ≤ average < 40% ≤ good < 60% ≤ "
        "excellent (or a bar set too low). * the interval reaches into another band: too few "
        "meetings to be sure.[/]",
        highlight=False,
    )
    for note in report.notes:
        console.print(f"[dim]note: {note}[/]", highlight=False)
