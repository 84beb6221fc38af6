"""The SQO funnel: lead → meeting → SQO rates by group, with intervals and benchmark bands.

Numbers only (no I/O, no drawing): ``pipecast report funnel`` prints them, writes them as JSON
and draws them (``serving.reports.charts``).

Time meaning: everything is as of the end of day ``as_of`` (default: the export date). A lead
counts once its outcome is settled by then, with the training label's rule
(:func:`features.labels.lead_label_values`): it became an SQO within ``sqo_window_days`` of
``created_at``, and its whole window has ended by ``as_of`` (complete cohorts only — counting
the early SQOs of recent leads before their non-SQOs are known would inflate recent rates).
A meeting counts when ``meeting_at`` falls within the same window. ``since`` keeps the leads
created on or after that day. Leads without dates but with an ``is_sqo`` label count as settled.

Rates
-----
lead → meeting    leads with a meeting / leads
meeting → SQO     leads with a meeting that became SQOs / leads with a meeting (the SQO rate
                  of domain.md, the one the bands judge)
lead → SQO        SQOs / leads

Each with a 90% Wilson score interval, so that a BDR with 8 meetings shows how little 8
meetings say. Bands of the meeting → SQO rate (domain.md): ``[0, 25%)`` poor, ``[25%, 40%)``
average, ``[40%, 60%)`` good, ``60%`` and above excellent — or a qualification bar set too low.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from features.errors import InputError
from features.io import Export
from features.labels import lead_label_values

#: two-sided 90% interval
CONFIDENCE = 0.90
Z90 = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)
#: lower edges of the bands of the meeting → SQO rate; a rate on an edge belongs to the band above
BAND_EDGES = (0.25, 0.40, 0.60)
BAND_NAMES = ("poor", "average", "good", "excellent or bar too low")
#: the groupings of the report: name → lead column (``segment`` and ``month`` are derived)
DIMENSIONS: dict[str, str] = {
    "segment": "segment",
    "source": "source",
    "signal": "signal_type",
    "sequence": "sequence",
    "bdr": "sdr_id",
    "month": "created_at",
}
#: a lead list has no segment column: it is read from the headcount, with these lower bounds
SEGMENT_EMPLOYEES = (("SMB", 0), ("Mid-Market", 200), ("Enterprise", 2000))
NONE_LABEL = "(none)"
#: domain.md's benchmarks of SQO → won and of SQO → close time (days), by segment
BENCHMARKS: dict[str, dict[str, Any]] = {
    "SMB": {"win_rate": (0.30, 0.50), "days_to_close": (14, 30)},
    "Mid-Market": {"win_rate": (0.15, 0.40), "days_to_close": (30, 60), "note": "overall range"},
    "Enterprise": {"win_rate": (0.10, 0.25), "days_to_close": (60, 180)},
}


def wilson_interval(successes: Any, n: Any, z: float = Z90) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of binomial proportions (vectorised); NaN where ``n == 0``.

    ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``, 90% by default.
    """
    k = np.asarray(successes, dtype="float64")
    m = np.asarray(n, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        phat = k / m
        denom = 1 + z**2 / m
        centre = (phat + z**2 / (2 * m)) / denom
        half = z * np.sqrt(phat * (1 - phat) / m + z**2 / (4 * m**2)) / denom
    low = np.where(m > 0, np.clip(centre - half, 0, 1), np.nan)
    high = np.where(m > 0, np.clip(centre + half, 0, 1), np.nan)
    return low, high


def band(rate: Any) -> np.ndarray:
    """The benchmark band of each meeting → SQO rate ("" where the rate is NaN).

    Edges belong to the band above: exactly 25% is average, 40% good, 60% excellent. Rates are
    compared after rounding to 12 decimals, so 2/5 computed in floating point is exactly 40%.
    """
    r = np.round(np.asarray(rate, dtype="float64"), 12)
    out = np.select(
        [np.isnan(r), r < BAND_EDGES[0], r < BAND_EDGES[1], r < BAND_EDGES[2]],
        ["", *BAND_NAMES[:3]],
        default=BAND_NAMES[3],
    )
    return out.astype(object)


@dataclass
class FunnelReport:
    """The funnel as of a day.

    Attributes
    ----------
    as_of, since
        The day the report is as of (end of day) and the first creation day counted.
    window_days
        The SQO window of the export.
    rates
        One row per group: ``dimension``, ``group``, ``leads``, ``meetings``, ``sqos``,
        ``sqos_with_meeting``, and for each of ``lead_to_meeting``, ``meeting_to_sqo``,
        ``lead_to_sqo`` the rate with ``_low`` / ``_high`` (90% Wilson); ``band`` of the
        meeting → SQO rate and ``band_certain`` (its whole interval lies in that band). The
        first row is ``dimension == "all"``.
    closing
        Per opportunity segment (and ``all``): SQOs created since ``since``, ``won``, ``lost``,
        ``open``, ``win_rate`` (won / closed, with ``_low`` / ``_high``), ``median_days_to_close``
        of won deals, and domain.md's ranges beside them (``benchmark_win_rate``,
        ``benchmark_days``) with ``win_rate_vs_benchmark`` (below / within / above).
    leads_in_window
        Leads created since ``since`` whose outcome is not settled yet (left out).
    notes
        What could not be computed and why.
    """

    as_of: pd.Timestamp
    since: pd.Timestamp | None
    window_days: int
    rates: pd.DataFrame
    closing: pd.DataFrame | None
    leads_in_window: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN → ``None``)."""
        return {
            "as_of": str(self.as_of.date()),
            "since": None if self.since is None else str(self.since.date()),
            "sqo_window_days": self.window_days,
            "confidence": CONFIDENCE,
            "bands": {
                "poor": [0.0, BAND_EDGES[0]],
                "average": [BAND_EDGES[0], BAND_EDGES[1]],
                "good": [BAND_EDGES[1], BAND_EDGES[2]],
                "excellent or bar too low": [BAND_EDGES[2], 1.0],
            },
            "leads_in_window": self.leads_in_window,
            "rates": _records(self.rates),
            "closing": None if self.closing is None else _records(self.closing),
            "notes": list(self.notes),
        }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{str(k): _plain(v) for k, v in row.items()} for row in rows]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, tuple):
        return list(v)
    return v


def dimension_column(name: str) -> str:
    """The lead column of a ``--by`` name (``signal`` → ``signal_type``; a column as itself)."""
    return DIMENSIONS.get(name, name)


def funnel(
    export: Export,
    *,
    since: Any = None,
    as_of: Any = None,
    by: tuple[str, ...] | list[str] = tuple(DIMENSIONS),
) -> FunnelReport:
    """Lead → meeting → SQO rates by group, and SQO → won by segment, as of ``as_of``.

    Parameters
    ----------
    export
        The CRM export (its leads; its opportunities for SQO → won).
    since
        First creation day counted (leads and SQOs created on or after it); default: all.
    as_of
        The report's day, the end of it (default: the export date). Nothing recorded after it
        counts: a lead whose window is still open then is left out, a deal closed after it is
        open.
    by
        Groupings: ``segment``, ``source``, ``signal``, ``sequence``, ``bdr``, ``month``, or any
        lead column.

    Raises
    ------
    InputError
        No leads, no SQO label, an unknown grouping, or no settled lead since ``since``.
    """
    leads = export.leads
    if leads is None:
        raise InputError(
            "the funnel report needs leads: the export has no leads.csv (or .parquet)."
        )
    if not {"sqo_at", "is_sqo"} & set(leads.columns):
        raise InputError(
            "the funnel report needs the SQO outcome of leads: leads.csv has neither sqo_at "
            "nor is_sqo."
        )
    day = _day(export.exported_at if as_of is None else as_of, "--as-of")
    start = None if since is None else _day(since, "--since")
    if start is not None and start > day:
        raise InputError(f"--since {start.date()} is after the report's day {day.date()}.")
    unknown = [
        b
        for b in by
        if b not in DIMENSIONS
        and b not in leads.columns
        and not (b == "segment" or dimension_column(b) in leads.columns)
    ]
    if unknown:
        raise InputError(
            f"--by {', '.join(unknown)}: not a grouping of the report nor a column of the "
            f"leads. Choose from {', '.join(DIMENSIONS)} or a lead column."
        )
    window = int(export.config.sqo_window_days)
    notes: list[str] = []
    created = (
        leads["created_at"].dt.normalize()
        if "created_at" in leads.columns
        else pd.Series(pd.NaT, index=leads.index, dtype="datetime64[ns]")
    )
    dated = created.notna().to_numpy(dtype=bool)
    label = lead_label_values(leads, window).to_numpy(dtype="float64")
    ends = (created + pd.Timedelta(days=window)).to_numpy(dtype="datetime64[ns]")
    settled = np.where(dated, ends <= np.datetime64(day), True) & ~np.isnan(label)
    in_range = np.where(dated, created.to_numpy() <= np.datetime64(day), True)
    if start is not None:
        in_range &= np.where(dated, created.to_numpy() >= np.datetime64(start), True)
    pending = int((in_range & dated & ~settled & (created.to_numpy() <= np.datetime64(day))).sum())
    keep = in_range & settled
    if not keep.any():
        raise InputError(
            f"no lead created {'since ' + str(start.date()) + ' ' if start is not None else ''}"
            f"has a settled outcome by {day.date()} (a lead is settled {window} days after "
            "its creation). Give an earlier --since."
        )
    cohort = leads.loc[keep].reset_index(drop=True)
    sqo = label[keep] == 1.0
    if "meeting_at" in cohort.columns:
        met_at = cohort["meeting_at"].dt.normalize()
        c = created[keep].reset_index(drop=True)
        limit = (c + pd.Timedelta(days=window)).where(c.notna(), pd.Timestamp(day))
        met = (met_at.notna() & (met_at <= limit) & (met_at <= day)).to_numpy(dtype=bool)
        no_meeting = int((sqo & ~met).sum())
        if no_meeting:
            notes.append(
                f"{no_meeting} SQO lead(s) have no meeting_at within the window: they count in "
                "lead → SQO but not in meeting → SQO"
            )
    else:
        met = None
        notes.append("leads have no meeting_at: lead → meeting and meeting → SQO are unavailable")
    frames = [_rates("all", pd.Series(["all"] * len(cohort), dtype="string"), sqo, met)]
    for name in by:
        groups = _groups(cohort, name, notes)
        if groups is not None:
            frames.append(_rates(name, groups, sqo, met))
    rates = pd.concat(frames, ignore_index=True)
    closing = _closing(export, start, day, notes)
    return FunnelReport(
        as_of=day,
        since=start,
        window_days=window,
        rates=rates,
        closing=closing,
        leads_in_window=pending,
        notes=notes,
    )


def _day(value: Any, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise InputError(
            f"{what} {value!r} is not a date: give a day such as 2026-03-14."
        ) from None
    if pd.isna(ts):
        raise InputError(f"{what} is empty: give a day such as 2026-03-14.")
    return ts.normalize()


def lead_segments(leads: pd.DataFrame) -> pd.Series:
    """The segment of each lead: its ``segment`` column, else read from ``employees``
    (:data:`SEGMENT_EMPLOYEES`: under 200 SMB, under 2,000 Mid-Market, else Enterprise)."""
    if "segment" in leads.columns:
        return leads["segment"].astype("string").reset_index(drop=True)
    if "employees" not in leads.columns:
        return pd.Series(pd.NA, index=range(len(leads)), dtype="string")
    people = leads["employees"].to_numpy(dtype="float64", na_value=np.nan)
    names = [name for name, _ in SEGMENT_EMPLOYEES]
    edges = [low for _, low in SEGMENT_EMPLOYEES[1:]]
    seg = np.asarray(names, dtype=object)[np.searchsorted(edges, people, side="right")]
    return pd.Series(np.where(np.isnan(people), None, seg), dtype="string")


def _groups(cohort: pd.DataFrame, name: str, notes: list[str]) -> pd.Series | None:
    if name == "segment":
        seg = lead_segments(cohort)
        if seg.isna().all():
            notes.append("leads have neither segment nor employees: no segment grouping")
            return None
        return seg.fillna(NONE_LABEL)
    if name == "month":
        if "created_at" not in cohort.columns:
            notes.append("leads have no created_at: no month grouping")
            return None
        return (
            cohort["created_at"].dt.strftime("%Y-%m").astype("string").fillna(NONE_LABEL)
        ).reset_index(drop=True)
    column = dimension_column(name)
    if column not in cohort.columns:
        notes.append(f"leads have no {column} column: no {name} grouping")
        return None
    values = cohort[column].astype("string").str.strip()
    return values.where(values != "", pd.NA).fillna(NONE_LABEL).reset_index(drop=True)


def _rates(
    dimension: str, groups: pd.Series, sqo: np.ndarray, met: np.ndarray | None
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "group": groups.to_numpy(),
            "lead": 1,
            "sqo": sqo.astype(int),
            "meeting": (met if met is not None else np.zeros(len(sqo), bool)).astype(int),
            "sqo_meeting": (sqo & met if met is not None else np.zeros(len(sqo), bool)).astype(int),
        }
    )
    t = frame.groupby("group", sort=True).agg(
        leads=("lead", "sum"),
        meetings=("meeting", "sum"),
        sqos=("sqo", "sum"),
        sqos_with_meeting=("sqo_meeting", "sum"),
    )
    t = t.reset_index()
    t.insert(0, "dimension", dimension)
    for name, k, n in (
        ("lead_to_meeting", t["meetings"], t["leads"]),
        ("meeting_to_sqo", t["sqos_with_meeting"], t["meetings"]),
        ("lead_to_sqo", t["sqos"], t["leads"]),
    ):
        kk, nn = k.to_numpy(dtype="float64"), n.to_numpy(dtype="float64")
        unavailable = met is None and name != "lead_to_sqo"
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where((nn > 0) & ~unavailable, kk / nn, np.nan)
        low, high = wilson_interval(kk, np.where(unavailable, 0, nn))
        t[name], t[f"{name}_low"], t[f"{name}_high"] = rate, low, high
    t["band"] = band(t["meeting_to_sqo"])
    low_band, high_band = band(t["meeting_to_sqo_low"]), band(t["meeting_to_sqo_high"])
    t["band_certain"] = (low_band == t["band"].to_numpy()) & (high_band == t["band"].to_numpy())
    t.loc[t["band"] == "", "band_certain"] = False
    if dimension not in ("all", "month"):  # months in time order, other groups largest first
        t = t.sort_values(["leads", "group"], ascending=[False, True], kind="stable")
    return t.reset_index(drop=True)


def _segment_key(name: Any) -> str | None:
    key = "".join(ch for ch in str(name).lower() if ch.isalpha())
    return {
        "smb": "SMB",
        "midmarket": "Mid-Market",
        "mm": "Mid-Market",
        "enterprise": "Enterprise",
        "ent": "Enterprise",
    }.get(key)


def _closing(
    export: Export, start: pd.Timestamp | None, day: pd.Timestamp, notes: list[str]
) -> pd.DataFrame | None:
    """SQO → won and days to close by segment, as known at the end of ``day``."""
    opps = export.opportunities
    if opps is None:
        notes.append("no opportunities: SQO → won and days to close are unavailable")
        return None
    end = day + pd.Timedelta(days=1)
    created = opps["created_at"]
    keep = (created < end).to_numpy(dtype=bool, na_value=False)
    if start is not None:
        keep = keep & (created >= start).to_numpy(dtype=bool, na_value=False)
    o = opps.loc[keep]
    closed_at = o["closed_at"] if "closed_at" in o.columns else pd.Series(pd.NaT, index=o.index)
    known_closed = (closed_at < end).to_numpy(dtype=bool, na_value=False)
    status = o["status"].astype("string").to_numpy(dtype=object, na_value="")
    won = known_closed & (status == "won")
    lost = known_closed & (status == "lost")
    days = (closed_at.dt.normalize() - o["created_at"].dt.normalize()).dt.days.to_numpy(
        dtype="float64", na_value=np.nan
    )
    segment = (
        o["segment"].astype("string").fillna(NONE_LABEL).to_numpy(dtype=object)
        if "segment" in o.columns
        else np.full(len(o), NONE_LABEL, dtype=object)
    )
    if "segment" not in o.columns:
        notes.append("opportunities have no segment column: SQO → won is shown overall only")
    rows = []
    for name in [*sorted(set(segment)), "all"]:
        m = np.ones(len(o), bool) if name == "all" else segment == name
        if name != "all" and "segment" not in o.columns:
            continue
        n_won, n_lost = int((m & won).sum()), int((m & lost).sum())
        closed = n_won + n_lost
        low, high = wilson_interval(n_won, closed)
        rate = n_won / closed if closed else math.nan
        won_days = days[m & won]
        bench = (
            BENCHMARKS.get(_segment_key(name) or "", {})
            if name != "all"
            else {"win_rate": (0.15, 0.40)}
        )
        wr = bench.get("win_rate")
        vs = ""
        if wr is not None and closed:
            vs = "below" if rate < wr[0] else "above" if rate > wr[1] else "within"
        rows.append(
            {
                "segment": name,
                "sqos": int(m.sum()),
                "won": n_won,
                "lost": n_lost,
                "open": int((m & ~known_closed).sum()),
                "win_rate": rate,
                "win_rate_low": float(low),
                "win_rate_high": float(high),
                "median_days_to_close": float(np.median(won_days)) if won_days.size else math.nan,
                "benchmark_win_rate": None if wr is None else f"{wr[0]:.0%}–{wr[1]:.0%}",
                "benchmark_days": (
                    None
                    if "days_to_close" not in bench
                    else f"{bench['days_to_close'][0]}–{bench['days_to_close'][1]}"
                    + ("+" if _segment_key(name) == "Enterprise" else "")
                ),
                "win_rate_vs_benchmark": vs,
            }
        )
    return pd.DataFrame(rows)
