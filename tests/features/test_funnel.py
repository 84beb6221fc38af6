"""The SQO funnel: intervals against a direct computation, bands at their edges, counts by hand,
complete cohorts only, and nothing after the report's day."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from features.errors import InputError
from features.funnel import BAND_NAMES, Z90, band, funnel, lead_segments, wilson_interval
from features.io import DatasetConfig, Export
from features.snapshots import cut_export

DAY = pd.Timestamp("2026-06-30")


def _direct_wilson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval written out from its definition, for one proportion."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = (z / (1 + z * z / n)) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_wilson_intervals_match_a_direct_computation() -> None:
    cases = [(0, 8), (3, 8), (8, 8), (1, 1), (45, 200), (300, 800), (7, 1000)]
    k = np.array([c[0] for c in cases])
    n = np.array([c[1] for c in cases])
    low, high = wilson_interval(k, n)
    for i, (kk, nn) in enumerate(cases):
        want = _direct_wilson(kk, nn, 0.90)
        assert low[i] == pytest.approx(want[0], abs=1e-12)
        assert high[i] == pytest.approx(want[1], abs=1e-12)
    assert pytest.approx(1.6448536269514722) == Z90
    # 8 meetings say little, 800 say much: the interval narrows with the evidence
    lows, highs = wilson_interval([3, 300], [8, 800])
    width = highs - lows
    assert width[0] > 5 * width[1] and (lows < 3 / 8).all() and (highs > 3 / 8).all()
    empty = wilson_interval([0], [0])
    assert np.isnan(empty[0]).all() and np.isnan(empty[1]).all()


def test_bands_at_their_edges() -> None:
    rates = [0.0, 0.2499, 1 / 4, 0.1 + 0.15, 0.3999, 2 / 5, 0.59, 3 / 5, 0.7 - 0.1, 1.0, np.nan]
    assert list(band(rates)) == [
        "poor",
        "poor",
        "average",  # exactly 25%
        "average",  # 0.25000000000000006 in floating point is still 25%
        "average",
        "good",  # exactly 40%
        "good",
        BAND_NAMES[3],  # exactly 60%
        BAND_NAMES[3],  # 0.6 reached by arithmetic (0.59999999999999998)
        BAND_NAMES[3],
        "",
    ]


def _export(leads: pd.DataFrame, opportunities: pd.DataFrame | None = None) -> Export:
    return Export(
        leads=leads,
        opportunities=opportunities,
        config=DatasetConfig(exported_at=DAY, sqo_window_days=90),
    )


def _leads() -> pd.DataFrame:
    """Twelve leads by hand: settled ones in two sources, one still in its window."""
    rows = [
        # id, created, meeting, sqo, source, employees
        ("a", "2026-01-05", "2026-01-10", "2026-01-20", "event", 50),
        ("b", "2026-01-06", "2026-01-12", None, "event", 199),
        ("c", "2026-01-07", "2026-01-09", "2026-02-01", "event", 200),
        ("d", "2026-01-08", None, None, "event", 1999),
        ("e", "2026-02-01", "2026-02-03", "2026-06-01", "outbound", 2000),  # SQO after 90 days
        ("f", "2026-02-02", "2026-06-10", None, "outbound", None),  # meeting after 90 days
        ("g", "2026-02-03", None, None, "outbound", 40000),
        ("h", "2026-02-04", "2026-02-05", "2026-02-20", "outbound", 10),
        ("i", "2026-03-01", None, "2026-03-20", "outbound", 10),  # an SQO without a meeting
        ("j", "2026-05-01", "2026-05-02", "2026-05-10", "outbound", 10),  # window still open
        ("k", "2025-12-01", "2025-12-02", "2025-12-05", "event", 10),  # before --since
        ("l", "2026-07-15", "2026-07-16", "2026-07-17", "event", 10),  # after the report's day
    ]
    frame = pd.DataFrame(
        rows, columns=["lead_id", "created_at", "meeting_at", "sqo_at", "source", "employees"]
    )
    for c in ("created_at", "meeting_at", "sqo_at"):
        frame[c] = pd.to_datetime(frame[c])
    frame["lead_id"] = frame["lead_id"].astype("string")
    frame["source"] = frame["source"].astype("string")
    frame["employees"] = frame["employees"].astype("float64")
    return frame


def test_counts_and_rates_by_hand() -> None:
    report = funnel(_export(_leads()), since="2026-01-01", by=["source", "segment", "month"])
    r = report.rates.set_index(["dimension", "group"])
    # settled since Jan 1: a–i (j's window is open on Jun 30; k is older; l is after the day)
    assert r.loc[("all", "all"), ["leads", "meetings", "sqos", "sqos_with_meeting"]].tolist() == [
        9,
        5,
        4,
        3,
    ]
    assert report.leads_in_window == 1
    ev = r.loc[("source", "event")]
    assert (ev["leads"], ev["meetings"], ev["sqos"]) == (4, 3, 2)
    assert ev["meeting_to_sqo"] == pytest.approx(2 / 3) and ev["lead_to_sqo"] == pytest.approx(0.5)
    out = r.loc[("source", "outbound")]
    # e's SQO came after its window and f's meeting too: neither counts; i is an SQO, no meeting
    assert (out["leads"], out["meetings"], out["sqos"], out["sqos_with_meeting"]) == (5, 2, 2, 1)
    assert out["meeting_to_sqo"] == pytest.approx(0.5) and out["band"] == "good"
    low, high = wilson_interval([1], [2])
    assert (out["meeting_to_sqo_low"], out["meeting_to_sqo_high"]) == (low[0], high[0])
    assert not out["band_certain"]  # two meetings cannot tell good from poor
    assert any("no meeting_at" in note for note in report.notes)
    seg = report.rates.loc[report.rates["dimension"] == "segment"].set_index("group")["leads"]
    assert seg.to_dict() == {"SMB": 4, "Mid-Market": 2, "Enterprise": 2, "(none)": 1}
    months = report.rates.loc[report.rates["dimension"] == "month", "group"].tolist()
    assert months == ["2026-01", "2026-02", "2026-03"]


def test_segments_from_headcount_at_their_edges() -> None:
    leads = pd.DataFrame({"employees": [1.0, 199.0, 200.0, 1999.0, 2000.0, np.nan]})
    assert list(lead_segments(leads).fillna("?")) == [
        "SMB",
        "SMB",
        "Mid-Market",
        "Mid-Market",
        "Enterprise",
        "?",
    ]


def test_nothing_after_the_report_day_counts(small_export: Export) -> None:
    day = pd.Timestamp("2025-12-31")
    full = funnel(small_export, as_of=day)
    cut = funnel(cut_export(small_export, day), as_of=day)
    pd.testing.assert_frame_equal(full.rates, cut.rates)
    assert full.closing is not None and cut.closing is not None
    pd.testing.assert_frame_equal(full.closing, cut.closing)


def test_sqo_to_won_by_segment_beside_the_benchmarks() -> None:
    opps = pd.DataFrame(
        {
            "opportunity_id": [f"O{i}" for i in range(7)],
            "created_at": pd.to_datetime(["2026-01-01"] * 6 + ["2026-06-01"]),
            "closed_at": pd.to_datetime(
                [
                    "2026-01-11",
                    "2026-01-21",
                    "2026-02-01",
                    "2026-05-01",
                    "2026-03-01",
                    "2026-08-01",
                    None,
                ]
            ),
            "status": ["won", "won", "lost", "won", "lost", "won", "open"],
            "segment": ["SMB", "SMB", "SMB", "Enterprise", "Enterprise", "Enterprise", "SMB"],
        }
    )
    report = funnel(_export(_leads(), opps), by=[])
    assert report.closing is not None
    c = report.closing.set_index("segment")
    assert (c.loc["SMB", "won"], c.loc["SMB", "lost"], c.loc["SMB", "open"]) == (2, 1, 1)
    assert c.loc["SMB", "win_rate"] == pytest.approx(2 / 3)
    assert c.loc["SMB", "median_days_to_close"] == 15  # 10 and 20 days
    assert c.loc["SMB", "win_rate_vs_benchmark"] == "above"  # SMB: 30–50%
    # the Enterprise deal won after the report's day is still open on it
    assert (c.loc["Enterprise", "won"], c.loc["Enterprise", "open"]) == (1, 1)
    assert c.loc["Enterprise", "benchmark_days"] == "60–180+"
    assert c.loc["Enterprise", "win_rate_vs_benchmark"] == "above"  # 50% against 10–25%


def test_bad_requests_are_refused_and_the_json_is_strict() -> None:
    export = _export(_leads())
    with pytest.raises(InputError, match="--by"):
        funnel(export, by=["colour"])
    with pytest.raises(InputError, match="after the report's day"):
        funnel(export, since="2026-08-01")
    with pytest.raises(InputError, match="settled"):
        funnel(export, since="2026-06-01")
    with pytest.raises(InputError, match="leads"):
        funnel(Export(config=DatasetConfig(exported_at=DAY)))
    with pytest.raises(InputError, match="sqo_at"):
        funnel(_export(_leads().drop(columns="sqo_at")))
    doc = json.loads(json.dumps(funnel(export).to_dict(), allow_nan=False))
    assert doc["rates"][0]["dimension"] == "all" and doc["bands"]["average"] == [0.25, 0.4]
