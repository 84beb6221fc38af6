"""``/calibration``'s numbers from the store: groups, filters and the week of the quarter."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from models import calibration as metrics
from serving.service import calibration_report, week_of_quarter
from serving.store import Batch, DealOutcome, Store, utcnow


def _save(store: Store, version: str, as_of: date, rows: list[tuple[str, float, str]]) -> None:
    store.save_scores(
        Batch(
            kind="opportunities",
            model="close_probability",
            model_name="pipecast-close-probability",
            model_version=version,
            as_of=as_of,
            requested_at=utcnow(),
        ),
        [
            {
                "opportunity_id": oid,
                "p_win": p,
                "segment": segment,
                "week_of_quarter": week_of_quarter(as_of, 1),
            }
            for oid, p, segment in rows
        ],
    )


def test_groups_filters_and_weeks(store_url: str) -> None:
    store = Store(store_url)
    store.upgrade()
    # week 2 and week 10 of Q1 (January to March)
    _save(store, "1", date(2026, 1, 10), [("a", 0.8, "SMB"), ("b", 0.3, "SMB"), ("c", 0.6, "ENT")])
    _save(store, "2", date(2026, 3, 10), [("a", 0.9, "SMB"), ("c", 0.4, "ENT"), ("d", 0.5, "ENT")])
    store.upsert_deal_outcomes(
        [
            DealOutcome("a", "won", date(2026, 3, 20)),
            DealOutcome("b", "lost", date(2026, 3, 1)),
            DealOutcome("c", "lost", date(2026, 3, 25)),
        ]
    )
    report = calibration_report(store, model="close_probability", n_bins=5)
    assert report["n_predictions"] == 6 and report["n_with_outcome"] == 5
    assert report["pending"] == 1
    y = np.array([1, 0, 0, 1, 0], dtype=float)
    p = np.array([0.8, 0.3, 0.6, 0.9, 0.4])
    assert report["overall"]["brier"] == pytest.approx(metrics.brier_score(y, p))
    assert report["overall"]["ece"] == pytest.approx(
        metrics.expected_calibration_error(y, p, n_bins=5)
    )
    assert len(report["reliability"]) == 5
    assert [w["week_of_quarter"] for w in report["by_week_of_quarter"]] == [2, 10]
    assert {v["model_version"]: v["n"] for v in report["by_model_version"]} == {"1": 3, "2": 2}
    assert {s["segment"]: s["n"] for s in report["by_segment"]} == {"ENT": 2, "SMB": 3}
    recent = calibration_report(store, model="close_probability", since=date(2026, 2, 1))
    assert recent["n_with_outcome"] == 2 and recent["pending"] == 1
    ent = calibration_report(store, model="close_probability", segment="ENT")
    assert ent["n_with_outcome"] == 2
    assert ent["overall"]["brier"] == pytest.approx(metrics.brier_score([0, 0], [0.6, 0.4]))
    store.dispose()


@pytest.mark.parametrize(
    ("day", "fiscal_start", "week"),
    [
        (date(2026, 1, 1), 1, 1),
        (date(2026, 1, 7), 1, 1),
        (date(2026, 1, 8), 1, 2),
        (date(2026, 3, 31), 1, 13),
        (date(2026, 7, 1), 2, 9),
        (date(2026, 8, 1), 2, 1),
    ],
)
def test_week_of_quarter(day: date, fiscal_start: int, week: int) -> None:
    assert week_of_quarter(day, fiscal_start) == week


def test_forecasts_of_ended_periods_meet_what_was_won(store_url: str) -> None:
    store = Store(store_url)
    store.upgrade()

    def forecast(as_of: date, start: date, end: date, expected: float) -> None:
        store.save_forecast(
            Batch(
                kind="forecast",
                model="close_probability",
                model_name="pipecast-close-probability",
                model_version="3",
                as_of=as_of,
                requested_at=utcnow(),
                period_label="q",
                period_start=start,
                period_end=end,
            ),
            {"expected": expected, "p10": expected * 0.8, "p50": expected, "p90": expected * 1.2},
            {"total": {"expected": expected}},
        )

    forecast(date(2025, 1, 15), date(2025, 1, 1), date(2025, 3, 31), 10_000.0)
    forecast(date(2025, 4, 10), date(2025, 4, 1), date(2025, 6, 30), 5_000.0)
    # a period that has not ended is not judged yet
    forecast(date(2099, 1, 2), date(2099, 1, 1), date(2099, 3, 31), 1.0)
    store.upsert_deal_outcomes(
        [
            DealOutcome("a", "won", date(2025, 2, 1), 6_000.0),
            DealOutcome("b", "won", date(2025, 3, 31), 5_000.0),
            DealOutcome("c", "lost", date(2025, 3, 1), 9_000.0),
            DealOutcome("d", "won", date(2025, 4, 1), 1_000.0),
            DealOutcome("e", "won", date(2025, 5, 1), None),
        ]
    )
    made = calibration_report(store, model="close_probability")["forecasts"]
    assert [f["period_start"] for f in made] == [date(2025, 1, 1), date(2025, 4, 1)]
    assert [f["actual_won"] for f in made] == [11_000.0, 1_000.0]
    assert [f["deals_won"] for f in made] == [2, 2]
    assert [f["error"] for f in made] == [1_000.0, -4_000.0]
    assert [f["within_p10_p90"] for f in made] == [True, False]
    later = calibration_report(store, model="close_probability", since=date(2025, 4, 1))
    assert len(later["forecasts"]) == 1
    assert calibration_report(store, model="sqo_likelihood")["forecasts"] == []
    store.dispose()
