"""The two pages a sales leader reads: calibration and the forecast call, as server-rendered HTML.

No FastAPI here: :func:`render_calibration_page` and :func:`render_forecast_page` turn the plain
dicts of the calibration service (``GET /calibration``) and the forecast
(:func:`serving.forecasting.forecast_export`) into one self-contained HTML document each — inline CSS, charts as inline SVG
(:mod:`serving.reports.svg`), no JavaScript. :func:`calibration_page` and
:func:`forecast_page` fetch those dicts and render them, for ``GET /reports/…`` and
``pipecast report calibration``. Text that comes from the data (deal ids, owners, segments) is
escaped by the templates (Jinja2 autoescape), never trusted as markup.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from serving.reports import svg
from serving.reports.svg import money, number, pct

if TYPE_CHECKING:
    from pipecast.config import Settings
    from serving.champions import Champion
    from serving.store import Store

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
#: what each stored model predicts, in a sales leader's words
MODEL_TITLES = {
    "close_probability": "Deal close probability",
    "sqo_likelihood": "Lead SQO likelihood",
}
MODEL_OUTCOMES = {
    "close_probability": ("deals scored", "won"),
    "sqo_likelihood": ("leads scored", "became an SQO"),
}
#: the pipeline coverage practitioners call healthy (domain primer): 1.5–2× what is left to book
HEALTHY_COVERAGE = 1.5
#: the group column names as a page heading says them
GROUP_TITLES = {
    "owner_id": "owner",
    "segment": "segment",
    "source": "source",
    "region": "region",
    "stage": "stage",
    "product": "product",
    "forecast_category": "CRM forecast category",
    "category": "probability category",
}
#: changes listed one by one at most (largest amounts first)
MAX_CHANGES = 30
#: how a change since last week reads on the page, in order of interest
CHANGE_ORDER = (
    "won",
    "lost",
    "new",
    "moved into period",
    "moved out of period",
    "probability up",
    "probability down",
)


@functools.cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=money, pct=pct)
    return env


def _plain(value: Any) -> Any:
    """A pydantic model as its dict; anything else as is."""
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def _footer(generated_at: datetime | None) -> str:
    when = generated_at or datetime.now(UTC).replace(tzinfo=None)
    return f"pipecast · generated {when:%Y-%m-%d %H:%M} UTC"


def _num_text(value: Any, digits: int = 3) -> str:
    v = number(value)
    return "—" if v is None else f"{v:.{digits}f}"


def _count(value: Any) -> str:
    v = number(value)
    return "—" if v is None else f"{int(round(v)):,}"


# ----------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------


def _verdict(overall: Mapping[str, Any], model: str) -> str:
    """One sentence on whether the probabilities meant what they said."""
    predicted, happened = number(overall.get("mean_predicted")), number(overall.get("base_rate"))
    ece = number(overall.get("ece"))
    if predicted is None or happened is None:
        return ""
    outcome = MODEL_OUTCOMES.get(model, ("predictions", "happened"))[1]
    gap = 100 * (predicted - happened)
    if abs(gap) < 2:
        lean = "right on average"
    elif gap > 0:
        lean = f"{abs(gap):.0f} points too optimistic on average"
    else:
        lean = f"{abs(gap):.0f} points too cautious on average"
    text = f"The predictions averaged {pct(predicted)} and {pct(happened)} {outcome}: {lean}."
    if ece is not None:
        text += f" A probability bin is off by {100 * ece:.1f} points on average (ECE)."
    return text


def _metric_rows(rows: Sequence[Mapping[str, Any]], key: str) -> list[dict[str, str]]:
    return [
        {
            "key": "(none)" if r.get(key) is None else str(r.get(key)),
            "n": _count(r.get("n")),
            "base_rate": pct(r.get("base_rate"), 1),
            "mean_predicted": pct(r.get("mean_predicted"), 1),
            "brier": _num_text(r.get("brier")),
            "log_loss": _num_text(r.get("log_loss")),
            "ece": _num_text(r.get("ece")),
            "auc": _num_text(r.get("auc")),
        }
        for r in rows
    ]


def _week_sort(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    def key(r: Mapping[str, Any]) -> float:
        v = number(r.get("week_of_quarter"))
        return v if v is not None else float("inf")

    return sorted(rows, key=key)


def _model_section(report: Mapping[str, Any]) -> dict[str, Any]:
    model = str(report.get("model") or "close_probability")
    overall = dict(report.get("overall") or {})
    reliability = list(report.get("reliability") or [])
    n_known = int(number(report.get("n_with_outcome")) or 0)
    title = MODEL_TITLES.get(model, model.replace("_", " "))
    return {
        "model": model,
        "title": title,
        "scored_label": MODEL_OUTCOMES.get(model, ("predictions", "happened"))[0],
        "n_predictions": _count(report.get("n_predictions")),
        "n_with_outcome": _count(n_known),
        "pending": _count(report.get("pending")),
        "has_outcomes": n_known > 0,
        "has_predictions": (number(report.get("n_predictions")) or 0) > 0,
        "verdict": _verdict(overall, model),
        "headline": [
            ("Brier score", _num_text(overall.get("brier")), "lower is better"),
            ("Log loss", _num_text(overall.get("log_loss")), "lower is better"),
            ("ECE", pct(overall.get("ece"), 1), "calibration gap"),
            ("AUC", _num_text(overall.get("auc"), 2), "ranking; 0.5 is chance"),
        ],
        "chart": Markup(svg.reliability_svg(reliability, label=f"Reliability of {title.lower()}")),
        "reliability": [
            {
                "range": f"{pct(r.get('lower'))}–{pct(r.get('upper'))}",
                "count": _count(r.get("count")),
                "mean_predicted": pct(r.get("mean_predicted"), 1),
                "observed_rate": pct(r.get("observed_rate"), 1),
                "interval": (
                    f"{pct(r.get('ci_low'), 0)}–{pct(r.get('ci_high'), 0)}"
                    if number(r.get("ci_low")) is not None
                    else "—"
                ),
            }
            for r in reliability
            if (number(r.get("count")) or 0) > 0
        ],
        "by_model_version": _metric_rows(report.get("by_model_version") or [], "model_version"),
        "by_segment": _metric_rows(report.get("by_segment") or [], "segment"),
        "by_week": _metric_rows(
            _week_sort(report.get("by_week_of_quarter") or []), "week_of_quarter"
        ),
    }


def _periods(forecasts: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Stored forecasts grouped by the period they forecast, periods in order of their end.

    Within a period the rows keep the store's order (as-of day, then request), so that the last
    of repeated requests is the latest.
    """
    by_period: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in forecasts:
        key = (
            str(row.get("period_end") or "")[:10],
            str(row.get("period_start") or "")[:10],
            str(row.get("period_label") or ""),
        )
        by_period.setdefault(key, []).append(row)
    return [by_period[k] for k in sorted(by_period)]


def _track_section(rows_of_period: Sequence[Mapping[str, Any]], currency: str) -> dict[str, Any]:
    """One ended period: the forecasts made through it against what was won in it."""
    first = rows_of_period[0]
    start, end = str(first.get("period_start") or "")[:10], str(first.get("period_end") or "")[:10]
    label = str(first.get("period_label") or f"{start} to {end}")
    # what was won is the period's, the same beside each of its forecasts
    actual = number(first.get("actual_won"))
    quota = next(
        (q for r in reversed(rows_of_period) if (q := number(r.get("quota"))) is not None), None
    )
    # the same model's forecast of the same day asked for again counts once: the latest
    latest = {(str(r.get("as_of")), str(r.get("model_version"))): r for r in rows_of_period}
    points = sorted(latest.values(), key=lambda p: str(p.get("as_of")))
    rows = []
    inside = 0
    for p in points:
        lo, hi, exp_ = number(p.get("p10")), number(p.get("p90")), number(p.get("expected"))
        within = actual is not None and lo is not None and hi is not None and lo <= actual <= hi
        inside += int(within)
        error = None if actual in (None, 0) or exp_ is None else (exp_ - actual) / actual
        rows.append(
            {
                "as_of": str(p.get("as_of") or "—")[:10],
                "version": str(p.get("model_version") or "—"),
                "expected": money(exp_, currency),
                "range": f"{money(lo, currency)}–{money(hi, currency)}",
                "stage_weighted": money(p.get("stage_weighted"), currency),
                "error": "—" if error is None else f"{100 * error:+.0f}%",
                "within": "—" if actual is None or lo is None else ("yes" if within else "no"),
            }
        )
    return {
        "label": label,
        "start": start,
        "end": end,
        "actual": money(actual, currency),
        "deals_won": _count(first.get("deals_won")),
        "quota": None if quota is None else money(quota, currency),
        "n_forecasts": len(points),
        "inside": inside,
        "chart": Markup(
            svg.forecast_track_svg(
                points,
                start=start,
                end=end,
                actual=actual,
                quota=quota,
                label=f"Forecast of {label} through the period against what was won",
                currency=currency,
            )
        ),
        "rows": rows,
    }


def render_calibration_page(
    calibration: Mapping[str, Any] | Sequence[Mapping[str, Any]] | Any,
    *,
    forecasts: Sequence[Mapping[str, Any]] | None = None,
    generated_at: datetime | None = None,
    currency: str = "$",
) -> str:
    """The calibration page: are the stored probabilities right, now that outcomes are known?

    Parameters
    ----------
    calibration
        One calibration report (the ``GET /calibration`` body: ``model, since, segment,
        n_predictions, n_with_outcome, pending, overall, reliability, by_model_version,
        by_segment, by_week_of_quarter``), a pydantic model of it, or a list of them (one section
        per model). Each counts the predictions made on or after ``since`` whose outcome was
        known when the report was made.
    forecasts
        Stored forecasts of periods that have ended, one record each (``as_of``,
        ``period_label``, ``period_start``, ``period_end``, ``expected``, ``p10``, ``p90``,
        optionally ``stage_weighted``, ``quota``, ``model_version``) with what was won in the
        period by the outcomes known (``actual_won``, ``deals_won``); drawn period by period, as
        made through it. Taken from a report's own ``forecasts`` key when not given.
    generated_at
        When the page is made (UTC; default now), shown in the footer.
    """
    raw = _plain(calibration)
    reports = [raw] if isinstance(raw, Mapping) else [_plain(r) for r in raw]
    if forecasts is None:
        # the close-probability report carries them; None: no report looked for any
        forecasts = next((r["forecasts"] for r in reports if r.get("forecasts")), None)
        if forecasts is None and any("forecasts" in r for r in reports):
            forecasts = []
    since = next((r.get("since") for r in reports if r.get("since")), None)
    segment = next((r.get("segment") for r in reports if r.get("segment")), None)
    scope = []
    if since:
        scope.append(f"predictions made on or after {str(since)[:10]}")
    if segment:
        scope.append(f"segment {segment}")
    tracks = [_track_section(rows, currency) for rows in _periods(forecasts or [])]
    return (
        _environment()
        .get_template("calibration.html")
        .render(
            title="Calibration — are the probabilities right?",
            scope=", ".join(scope) or "all stored predictions",
            sections=[_model_section(r) for r in reports],
            tracks=tracks,
            has_tracks=forecasts is not None,
            footer=_footer(generated_at),
        )
    )


# ----------------------------------------------------------------------------------------
# the forecast call
# ----------------------------------------------------------------------------------------


def _category_tag(category: Any) -> str:
    return {"commit": "commit", "best_case": "best case", "pipeline": "pipeline"}.get(
        str(category), str(category or "")
    )


def _items(value: Any) -> list[str]:
    """A list of short texts: as given, or split from the ``"a; b"`` of a per-deal table."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in value.split("; ") if part]
    return [str(v) for v in value if v is not None and str(v)]


def _deal_row(d: Mapping[str, Any], currency: str) -> dict[str, Any]:
    name = d.get("name") or d.get("opportunity_name")
    return {
        "id": str(d.get("opportunity_id") or "—"),
        "name": None if not name else str(name),
        "account": None if not d.get("account") else str(d.get("account")),
        "owner": None if not d.get("owner_id") else str(d.get("owner_id")),
        "stage": str(d.get("stage") or "—"),
        "amount": money(d.get("amount"), currency),
        "p_win": pct(d.get("p_win")),
        "p_in_period": pct(d.get("p_win_in_period")),
        "stage_probability": pct(d.get("stage_probability")),
        "expected_value": money(d.get("expected_value"), currency),
        "close": str(d.get("expected_close_date") or "—")[:10],
        "category": str(d.get("category") or ""),
        "category_text": _category_tag(d.get("category")),
        "flags": _items(d.get("flags")),
        "factors": _items(d.get("top_factors"))[:3],
        "change": _items(d.get("change")),
    }


def _coverage_card(forecast: Mapping[str, Any], currency: str) -> tuple[str, str, str, str]:
    coverage = number(forecast.get("coverage_ratio"))
    remaining = number(forecast.get("remaining_quota"))
    pipeline = money(forecast.get("open_pipeline_in_period"), currency)
    if number(forecast.get("quota")) is None:
        return ("Coverage", "—", "no quota given", "")
    if remaining is not None and remaining <= 0:
        return ("Coverage", "quota met", "won to date is over the quota", "good")
    if coverage is None:
        return ("Coverage", "—", "", "")
    tone = "good" if coverage >= HEALTHY_COVERAGE else "warn"
    return (
        "Coverage",
        f"{coverage:.1f}×",
        f"{pipeline} open pipeline closing in the period / {money(remaining, currency)} left "
        f"to book (healthy: 1.5–2×)",
        tone,
    )


def _changes(forecast: Mapping[str, Any], currency: str) -> dict[str, Any]:
    changes = forecast.get("changes")
    if changes is None:
        return {"given": False, "summary": [], "rows": [], "more": 0}
    summary = []
    for kind in [
        *CHANGE_ORDER,
        *sorted({str(c.get("change")) for c in changes} - set(CHANGE_ORDER)),
    ]:
        of_kind = [c for c in changes if str(c.get("change")) == kind]
        if of_kind:
            amount = sum(number(c.get("amount")) or 0.0 for c in of_kind)
            summary.append({"kind": kind, "n": len(of_kind), "amount": money(amount, currency)})

    def weight(c: Mapping[str, Any]) -> float:
        return abs(number(c.get("amount")) or 0.0)

    rows = [
        {
            "id": str(c.get("opportunity_id") or "—"),
            "kind": str(c.get("change") or ""),
            "tone": "up"
            if str(c.get("change")) in ("won", "new", "moved into period", "probability up")
            else "down",
            "detail": str(c.get("detail") or ""),
            "amount": money(c.get("amount"), currency),
            "p": (
                f"{pct(c.get('p_before'))} → {pct(c.get('p_after'))}"
                if number(c.get("p_before")) is not None or number(c.get("p_after")) is not None
                else ""
            ),
        }
        for c in sorted(changes, key=weight, reverse=True)
    ]
    # the largest moves are what the call discusses; the summary above counts them all
    return {
        "given": True,
        "summary": summary,
        "rows": rows[:MAX_CHANGES],
        "more": len(rows) - len(rows[:MAX_CHANGES]),
    }


def render_forecast_page(
    forecast: Mapping[str, Any] | Any,
    *,
    top: int = 12,
    generated_at: datetime | None = None,
    currency: str = "$",
) -> str:
    """The forecast call of one period as a page: the number, its range, quota odds, the detail.

    Parameters
    ----------
    forecast
        A forecast response (``POST /forecast``, :func:`serving.forecasting.forecast_export`):
        made at the end of day ``as_of`` for ``period``, from the deals open then. The headline
        is the period's total (won to date + open deals + new business) with its P10–P90 range;
        the roll-up is by ``group_by`` (owner when the forecast was made with it); ``changes``
        (since ``compare_to``) fill "what changed"; without a ``quota`` the odds and coverage are
        left out and the page says so.
    top
        How many deals the "deals that carry the period" and red-flag lists show.
    generated_at
        When the page is made (UTC; default now), shown in the footer.
    """
    f = _plain(forecast)
    period = dict(f.get("period") or {})
    label = str(period.get("label") or "")
    total = dict(f.get("total") or {})
    quota = number(f.get("quota"))
    odds = number(f.get("prob_attain_quota"))
    deals = list(f.get("deals") or [])
    odds_tone = (
        "" if odds is None else ("good" if odds >= 0.7 else "warn" if odds >= 0.4 else "bad")
    )
    cards = [
        (
            "Expected bookings",
            money(total.get("expected"), currency),
            f"won + open + new; P50 {money(total.get('p50'), currency)}",
            "main",
        ),
        (
            "Range P10–P90",
            f"{money(total.get('p10'), currency)}–{money(total.get('p90'), currency)}",
            "8 times out of 10 the period lands here",
            "range",
        ),
        (
            "Won to date",
            money(f.get("won_to_date"), currency),
            f"{_count(f.get('n_won_to_date'))} deals closed won in the period",
            "good",
        ),
        (
            "Quota attainment odds",
            svg.odds(odds),
            f"chance of booking at least {money(quota, currency)}"
            if quota is not None
            else "no quota given",
            odds_tone,
        ),
        _coverage_card(f, currency),
    ]
    groups = list(f.get("groups") or [])
    scale = max(
        [number(g.get("p90")) or 0.0 for g in groups]
        + [number(g.get("expected")) or 0.0 for g in groups]
        + [0.0]
    )
    group_rows = [
        {
            "group": str(g.get("group")),
            "won": money(g.get("won_to_date"), currency),
            "open": money(g.get("open_expected"), currency),
            "new": money(g.get("expected_new"), currency),
            "expected": money(g.get("expected"), currency),
            "range": f"{money(g.get('p10'), currency)}–{money(g.get('p90'), currency)}",
            "stage_weighted": money(g.get("stage_weighted"), currency),
            "n_deals": _count(g.get("n_deals")),
            "bar": Markup(
                svg.range_bar_svg(
                    p10=g.get("p10"),
                    expected=g.get("expected"),
                    p90=g.get("p90"),
                    won=g.get("won_to_date"),
                    scale_max=scale,
                )
            ),
        }
        for g in sorted(groups, key=lambda g: -(number(g.get("expected")) or 0.0))
    ]
    carry = sorted(deals, key=lambda d: -(number(d.get("expected_value")) or 0.0))[:top]
    open_expected = number(f.get("expected")) or 0.0
    carry_share = (
        sum(number(d.get("expected_value")) or 0.0 for d in carry) / open_expected
        if open_expected > 0
        else None
    )
    flagged = [d for d in deals if _items(d.get("flags"))]
    flagged.sort(key=lambda d: -(number(d.get("amount")) or 0.0))
    flag_counts = sorted(
        dict(f.get("flag_counts") or {}).items(), key=lambda kv: (-int(kv[1]), kv[0])
    )
    flagged_amount = sum(number(d.get("amount")) or 0.0 for d in flagged)
    group_by = f.get("group_by")
    new_business = dict(f.get("new_business") or {})
    return (
        _environment()
        .get_template("forecast.html")
        .render(
            title=f"Forecast {label} — as of {f.get('as_of')}",
            label=label,
            as_of=str(f.get("as_of") or ""),
            start=str(period.get("start") or ""),
            end=str(period.get("end") or ""),
            days_left=_days_left(f.get("as_of"), period.get("end")),
            model_version=str(f.get("model_version") or "—"),
            n_open=_count(f.get("n_open_deals")),
            cards=cards,
            quota_given=quota is not None,
            range_chart=Markup(
                svg.bookings_range_svg(
                    won_to_date=f.get("won_to_date"),
                    expected=total.get("expected"),
                    p10=total.get("p10"),
                    p50=total.get("p50"),
                    p90=total.get("p90"),
                    quota=quota,
                    label=f"Bookings of {label}: won to date, P10–P90 range, expected"
                    + (", quota" if quota is not None else ""),
                    currency=currency,
                )
            ),
            parts=[
                ("Won to date", money(f.get("won_to_date"), currency), ""),
                (
                    "Open deals, expected",
                    money(f.get("expected"), currency),
                    f"P10–P90 {money(f.get('p10'), currency)}–{money(f.get('p90'), currency)}; "
                    f"{_count(f.get('n_open_deals'))} deals",
                ),
                (
                    "New deals not yet created",
                    money(f.get("expected_new"), currency),
                    str(
                        new_business.get("note") or "from the deals created and won in past periods"
                    ),
                ),
                (
                    "CRM stage-weighted (open deals)",
                    money(f.get("stage_weighted"), currency),
                    "the CRM's fixed stage probabilities, for comparison",
                ),
            ],
            total_expected=money(total.get("expected"), currency),
            group_title=GROUP_TITLES.get(str(group_by), str(group_by or "")),
            group_rows=group_rows,
            carry=[_deal_row(d, currency) for d in carry],
            carry_share=None if carry_share is None else pct(carry_share),
            top=top,
            flag_counts=flag_counts,
            flagged=[_deal_row(d, currency) for d in flagged[:top]],
            n_flagged=len(flagged),
            flagged_amount=money(flagged_amount, currency),
            compare_to=str(f.get("compare_to") or ""),
            changes=_changes(f, currency),
            notes=[str(n) for n in f.get("notes") or []],
            method=dict(f.get("method") or {}),
            footer=_footer(generated_at),
        )
    )


def _days_left(as_of: Any, end: Any) -> int | None:
    try:
        return (date.fromisoformat(str(end)[:10]) - date.fromisoformat(str(as_of)[:10])).days
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------
# fetch and render (the routes and the command line)
# ----------------------------------------------------------------------------------------


def calibration_page(
    store: Store,
    *,
    since: date | None = None,
    segment: str | None = None,
    n_bins: int = 10,
    generated_at: datetime | None = None,
) -> str:
    """The calibration page of both models from the prediction store, outcomes known so far."""
    from serving import service

    reports = [
        service.calibration_report(store, model=model, since=since, segment=segment, n_bins=n_bins)
        for model in MODEL_TITLES
    ]
    return render_calibration_page(reports, generated_at=generated_at)


def write_page(html: str, path: Path) -> None:
    """Write a page to ``path`` whole or not at all (a temporary file renamed over it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(html)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


#: the forecast call compares with the call a week before
COMPARE_DAYS = 7


def forecast_page(
    settings: Settings,
    champion: Champion,
    store: Store | None = None,
    *,
    period: str,
    as_of: str | None = None,
    quota: float | None = None,
    group_by: str | None = None,
    compare_to: str | None = None,
    request_id: str | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The forecast call page of ``period`` from the server's export, as of the end of ``as_of``.

    ``as_of`` defaults to the export date; the roll-up is by owner when the export has owners;
    "what changed" compares with the forecast of :data:`COMPARE_DAYS` days before unless
    ``compare_to`` says otherwise. Bad parameters raise ``InputError`` before any scoring. With
    a ``store`` the forecast is stored before it is shown (:func:`store_forecast`), so that the
    calibration page can set it against what the period brings.
    """
    from features.io import read_export
    from serving.forecasting import forecast_export, group_columns
    from serving.scoring import pipeline_day_and_period

    export = read_export(settings.data_dir, require=("opportunities",))
    day, _ = pipeline_day_and_period(export, as_of=as_of, period=period)
    if group_by is None and "owner_id" in group_columns(export):
        group_by = "owner_id"
    if compare_to is None:
        compare_to = (day - timedelta(days=COMPARE_DAYS)).date().isoformat()
    result = forecast_export(
        export,
        champion.model,
        model_version=champion.version,
        period=period,
        as_of=as_of,
        quota=quota,
        group_by=group_by,
        compare_to=compare_to,
    )
    if store is not None:
        batch = store_forecast(
            store, result.response, model_name=champion.name, request_id=request_id
        )
        log.info("forecast of %s as of %s stored (batch %d)", period, day.date(), batch)
    return render_forecast_page(result.response, generated_at=generated_at)


def store_forecast(
    store: Store, forecast: Mapping[str, Any], *, model_name: str, request_id: str | None = None
) -> int:
    """Keep a forecast in the prediction store (headline numbers and the whole response).

    The headline numbers are the period's total (won to date + open deals + new business), the
    number that is later set against everything won in the period; ``stage_weighted`` is the
    CRM's number on the same footing: won to date + the stage-weighted open deals.
    """
    from serving.forecasting import jsonable
    from serving.store import Batch, utcnow

    total = dict(forecast.get("total") or {})
    period = dict(forecast.get("period") or {})
    won = number(forecast.get("won_to_date")) or 0.0
    crm = number(forecast.get("stage_weighted"))
    summary = {
        "expected": number(total.get("expected")),
        "p10": number(total.get("p10")),
        "p50": number(total.get("p50")),
        "p90": number(total.get("p90")),
        "stage_weighted": None if crm is None else won + crm,
        "quota": number(forecast.get("quota")),
        "prob_attain_quota": number(forecast.get("prob_attain_quota")),
    }
    batch = Batch(
        kind="forecast",
        model="close_probability",
        model_name=model_name,
        model_version=str(forecast.get("model_version")),
        as_of=date.fromisoformat(str(forecast.get("as_of"))[:10]),
        requested_at=utcnow(),
        request_id=request_id,
        period_label=period.get("label"),
        period_start=date.fromisoformat(str(period.get("start"))[:10]),
        period_end=date.fromisoformat(str(period.get("end"))[:10]),
    )
    return store.save_forecast(batch, summary, jsonable(dict(forecast)))
