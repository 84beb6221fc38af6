"""The calibration and forecast pages: numbers as shown, charts, escaping, empty states, routes."""

from __future__ import annotations

import html as htmllib
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from models import CLOSE_MODEL_NAME
from models import calibration as metrics
from pipecast.cli import app as cli_app
from serving.app import create_app
from serving.forecast_schema import ForecastResponse
from serving.reports import svg
from serving.reports.pages import (
    calibration_page,
    render_calibration_page,
    render_forecast_page,
    write_page,
)
from serving.store import Batch, DealOutcome, Store, utcnow
from tests.serving.conftest import Registry, ScoringSetup, settings_for

WHEN = datetime(2026, 6, 15, 9, 30)
EVIL = "<script>alert('x')</script>"


def cards(page: str) -> dict[str, str]:
    """The headline cards of a page: label → value, as the reader sees them."""
    found = re.findall(
        r'<div class="label">(.*?)</div>\s*<div class="value">(.*?)</div>', page, flags=re.S
    )
    return {htmllib.unescape(k).strip(): htmllib.unescape(v).strip() for k, v in found}


def a_forecast(**changes: Any) -> dict[str, Any]:
    """A forecast response as ``POST /forecast`` gives it, with round numbers to check."""
    deals = [
        {
            "opportunity_id": f"OPP-{i:03d}",
            "p_win": p,
            "p_win_in_period": p * 0.9,
            "expected_value": amount * p * 0.9,
            "amount": amount,
            "stage": stage,
            "stage_probability": 0.5,
            "expected_close_date": "2026-07-20",
            "category": "commit" if p * 0.9 >= 0.7 else "pipeline",
            "forecast_category": None,
            "flags": flags,
            "top_factors": ["stage Proposal"],
            "change": [],
        }
        for i, (amount, p, stage, flags) in enumerate(
            [
                (500_000.0, 0.9, "Negotiation", []),
                (300_000.0, 0.5, "Proposal", ["close date pushed 3 times"]),
                (120_000.0, 0.2, "Discovery", ["no activity in 30 days"]),
                (30_000.0, 0.6, "Proposal", []),
            ]
        )
    ]
    forecast: dict[str, Any] = {
        "as_of": "2026-06-14",
        "period": {"label": "2026-Q2", "start": "2026-05-01", "end": "2026-07-31"},
        "model_version": "12",
        "n_open_deals": len(deals),
        "expected": sum(d["expected_value"] for d in deals),
        "p10": 450_000.0,
        "p50": 640_000.0,
        "p90": 900_000.0,
        "stage_weighted": 700_000.0,
        "won_to_date": 400_000.0,
        "n_won_to_date": 5,
        "expected_new": 200_000.0,
        "total": {
            "expected": 1_250_000.0,
            "p10": 900_000.0,
            "p50": 1_240_000.0,
            "p90": 1_600_000.0,
        },
        "quota": 1_200_000.0,
        "prob_attain_quota": 0.62,
        "coverage_ratio": 2.0,
        "open_pipeline_in_period": 1_600_000.0,
        "remaining_quota": 800_000.0,
        "new_business": {"expected": 200_000.0, "past_periods": [], "note": None, "segments": []},
        "categories": {"thresholds": {"commit": 0.7, "best_case": 0.4}, "model": [], "crm": None},
        "group_by": "owner_id",
        "groups": [
            {
                "group": "AE-1",
                "expected": 800_000.0,
                "p10": 600_000.0,
                "p50": 790_000.0,
                "p90": 1_000_000.0,
                "stage_weighted": 500_000.0,
                "won_to_date": 300_000.0,
                "open_expected": 450_000.0,
                "expected_new": 50_000.0,
                "n_deals": 2,
            },
            {
                "group": "AE-2",
                "expected": 450_000.0,
                "p10": 250_000.0,
                "p50": 440_000.0,
                "p90": 650_000.0,
                "stage_weighted": 200_000.0,
                "won_to_date": 100_000.0,
                "open_expected": 200_000.0,
                "expected_new": 150_000.0,
                "n_deals": 2,
            },
        ],
        "deals": deals,
        "flag_counts": {"close date pushed": 1, "no activity in 30 days": 1},
        "compare_to": "2026-06-07",
        "changes": [
            {
                "opportunity_id": "OPP-001",
                "change": "probability up",
                "detail": "35% → 45% in period",
                "amount": 300_000.0,
                "p_before": 0.35,
                "p_after": 0.45,
            },
            {
                "opportunity_id": "OPP-009",
                "change": "lost",
                "detail": "lost on 2026-06-10 (inside the period)",
                "amount": 80_000.0,
                "p_before": 0.3,
                "p_after": 0.0,
            },
        ],
        "method": {"distribution": "exact", "draws": 0},
        "notes": [],
    }
    forecast.update(changes)
    return forecast


# --- formatting and charts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1_250_000, "$1.25M"),
        (12_500_000, "$12.5M"),
        (850_000, "$850k"),
        (9_400, "$9,400"),
        (-2_000_000, "-$2.00M"),
        (2.5e9, "$2.5B"),
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_money_reads_as_a_sales_leader_writes_it(value: Any, text: str) -> None:
    assert svg.money(value) == text


def test_percentages() -> None:
    assert svg.pct(0.734) == "73%"
    assert svg.pct(0.0333, 1) == "3.3%"
    assert svg.pct(None) == "—"
    # a slim chance is not shown as none, nor a near certainty as certain
    assert [svg.odds(p) for p in (0.0, 0.003, 0.62, 0.997, 1.0)] == [
        "0%",
        "<1%",
        "62%",
        ">99%",
        "100%",
    ]


@pytest.mark.parametrize("high", [1.0, 7.3, 999.0, 1_620_000.0, 0.042])
def test_ticks_are_round_and_hold_the_largest_value(high: float) -> None:
    ticks = svg.nice_ticks(0.0, high, 5)
    assert ticks[0] == 0.0 and ticks[-1] >= high
    steps = np.diff(ticks)
    np.testing.assert_allclose(steps, steps[0])
    assert 2 <= len(ticks) <= 11


def test_reliability_chart_has_a_point_and_a_count_per_filled_bin() -> None:
    rng = np.random.default_rng(4)
    p = rng.beta(2, 5, size=500)
    y = (rng.random(500) < p).astype(float)
    table = metrics.reliability_table(y, p, n_bins=10)
    rows = table.to_dict("records")
    chart = svg.reliability_svg(rows)
    filled = table[table["count"] > 0]
    assert chart.count("<circle") == len(filled)
    for count in filled["count"]:
        assert f">{int(count):,}</text>" in chart
    assert 'stroke-dasharray="5 4"' in chart  # the diagonal
    empty = svg.reliability_svg([])
    assert "no outcomes known yet" in empty and "<circle" not in empty


def test_forecast_track_draws_the_band_the_line_and_the_actual() -> None:
    points = [
        {"as_of": f"2026-0{m}-01", "expected": 100.0 * m, "p10": 80.0 * m, "p90": 130.0 * m}
        for m in (2, 3, 4)
    ]
    chart = svg.forecast_track_svg(points, start="2026-02-01", end="2026-04-30", actual=350.0)
    assert chart.count("<polygon") == 1  # the P10–P90 band
    assert chart.count("<circle") == 3
    assert "actual $350" in chart
    assert "no forecast stored" in svg.forecast_track_svg([], start="2026-02-01", end="2026-04-30")


# --- the forecast page ------------------------------------------------------------------------


def test_forecast_page_shows_the_headline_numbers() -> None:
    page = render_forecast_page(a_forecast(), generated_at=WHEN)
    assert "<title>Forecast 2026-Q2 — as of 2026-06-14</title>" in page
    assert cards(page) == {
        "Expected bookings": "$1.25M",
        "Range P10–P90": "$900k–$1.60M",
        "Won to date": "$400k",
        "Quota attainment odds": "62%",
        "Coverage": "2.0×",
    }
    assert "47 days left" in page
    assert "generated 2026-06-15 09:30 UTC" in page
    # the bookings chart with the quota line, and one range bar per owner
    assert page.count('class="chart range"') == 1 and "quota $1.20M" in page
    assert page.count('class="spark"') == 2
    assert "Roll-up by owner" in page


def test_forecast_page_lists_the_deals_that_carry_the_period_largest_first() -> None:
    page = render_forecast_page(a_forecast(), top=3)
    section = page.split("The deals that carry the period")[1].split("Red flags")[0]
    order = [section.index(f"OPP-00{i}") for i in (0, 1, 2)]
    assert order == sorted(order)
    assert "OPP-003" not in section  # the fourth deal is past top=3
    # (405k + 135k + 21.6k) of the 577.8k expected from open deals
    assert "hold 97% of the open pipeline's expected bookings" in section
    flags = page.split("<h2>Red flags</h2>")[1].split("<h2>What changed")[0]
    assert "2 open deals worth $420k carry a red flag" in flags
    assert "close date pushed 3 times" in flags


def test_forecast_page_says_what_changed_since_last_week() -> None:
    page = render_forecast_page(a_forecast())
    changed = page.split("What changed since 2026-06-07")[1]
    assert "probability up · 1 · $300k" in changed and "lost · 1 · $80k" in changed
    assert "35% → 45%" in changed
    nothing = render_forecast_page(a_forecast(changes=[]))
    assert "Nothing changed since 2026-06-07" in nothing
    no_day = render_forecast_page(a_forecast(changes=None, compare_to=None))
    assert "No earlier day to compare with" in no_day
    many = [
        {"opportunity_id": f"NEW-{i}", "change": "new", "detail": "opened since", "amount": 1e3 * i}
        for i in range(40)
    ]
    busy = render_forecast_page(a_forecast(changes=many))
    assert "new · 40 · $780k" in busy  # all counted
    assert "NEW-39<" in busy and "NEW-5<" not in busy  # the 30 largest listed
    assert "10 smaller ones are counted above" in busy


def test_forecast_page_without_a_quota_says_so() -> None:
    page = render_forecast_page(
        a_forecast(quota=None, prob_attain_quota=None, coverage_ratio=None, remaining_quota=None)
    )
    shown = cards(page)
    assert shown["Quota attainment odds"] == "—" and shown["Coverage"] == "—"
    assert "No quota given" in page and "quota $" not in page


def test_forecast_page_with_no_open_deal_and_no_roll_up() -> None:
    page = render_forecast_page(
        a_forecast(deals=[], groups=[], group_by=None, flag_counts={}, n_open_deals=0)
    )
    assert "No deal was open at the end of 2026-06-14" in page
    assert "No open deal carries a red flag" in page
    assert "No roll-up" in page


def test_user_text_is_escaped_everywhere() -> None:
    forecast = a_forecast()
    forecast["deals"][0]["opportunity_id"] = EVIL
    forecast["deals"][0]["flags"] = [EVIL]
    forecast["groups"][0]["group"] = EVIL
    forecast["changes"][0]["opportunity_id"] = EVIL
    forecast["period"]["label"] = EVIL
    page = render_forecast_page(forecast)
    assert "<script>" not in page
    assert page.count("&lt;script&gt;") >= 5
    calibration = render_calibration_page(
        {**an_empty_report(), "segment": EVIL, "by_segment": [{"segment": EVIL, "n": 3.0}]}
    )
    assert "<script>" not in calibration and "&lt;script&gt;" in calibration


def test_flags_given_as_one_text_read_as_a_list() -> None:
    forecast = a_forecast()
    forecast["deals"][1]["flags"] = "close date pushed 3 times; stale in stage"
    forecast["deals"][2]["flags"] = ""
    page = render_forecast_page(forecast)
    flags = page.split("<h2>Red flags</h2>")[1].split("<h2>What changed")[0]
    assert "1 open deal worth $300k carries a red flag" in flags
    assert '<span class="tag flag">stale in stage</span>' in flags


def test_forecast_page_takes_the_response_model_as_well_as_the_dict() -> None:
    forecast = a_forecast()
    model = ForecastResponse.model_validate(forecast)
    assert render_forecast_page(model, generated_at=WHEN) == render_forecast_page(
        forecast, generated_at=WHEN
    )


# --- the calibration page ---------------------------------------------------------------------


def an_empty_report(model: str = "close_probability") -> dict[str, Any]:
    return {
        "model": model,
        "since": None,
        "segment": None,
        "n_predictions": 40,
        "n_with_outcome": 0,
        "pending": 40,
        "overall": {"n": 0.0, "brier": None, "log_loss": None, "ece": None, "auc": None},
        "reliability": [],
        "by_model_version": [],
        "by_segment": [],
        "by_week_of_quarter": [],
        "forecasts": [],
    }


def test_calibration_page_before_any_outcome() -> None:
    page = render_calibration_page([an_empty_report(), an_empty_report("sqo_likelihood")])
    assert page.count("No outcomes known yet") == 2
    assert "40 are waiting for a result" in page
    assert "No stored forecast is of a period that has ended yet" in page
    shown = cards(page)
    assert shown["deals scored"] == "40" and shown["leads scored"] == "40"
    assert shown["Brier score"] == "—"


def test_calibration_page_shows_forecast_against_actual_for_ended_periods() -> None:
    q1 = {"period_label": "2026-Q1", "period_start": "2026-02-01", "period_end": "2026-04-30"}
    won = {"actual_won": 1_050_000.0, "deals_won": 14, "model_version": "3"}
    forecasts = [
        {**q1, **won, "as_of": "2026-03-07", "expected": 1.01e6, "p10": 9e5, "p90": 1.2e6},
        # the same forecast asked for again later that day: the latest counts, once
        {**q1, **won, "as_of": "2026-03-07", "expected": 1e6, "p10": 9e5, "p90": 1.2e6},
        {**q1, **won, "as_of": "2026-02-07", "expected": 9e5, "p10": 7e5, "p90": 1.1e6},
        {**q1, **won, "as_of": "2026-04-07", "expected": 1.15e6, "p10": 1.1e6, "p90": 1.3e6},
        {
            "period_label": "2025-Q4",
            "period_start": "2025-11-01",
            "period_end": "2026-01-31",
            "as_of": "2025-12-01",
            "expected": 5e5,
            "p10": 4e5,
            "p90": 6e5,
            "actual_won": 450_000.0,
            "deals_won": 6,
            "quota": 700_000.0,
        },
    ]
    page = render_calibration_page({**an_empty_report(), "forecasts": forecasts})
    # periods in order of their end, each with its own cards
    older, newer = page.split("<h3>2025-Q4")[1].split("<h3>2026-Q1")
    assert cards(older) == {"Won": "$450k", "Inside P10–P90": "1 of 1", "Quota": "$700k"}
    assert cards(newer) == {"Won": "$1.05M", "Inside P10–P90": "2 of 3"}
    assert "14 deals closed won in the period" in newer
    assert page.count('class="chart track"') == 2
    # the forecasts in the order they were made, with their misses
    made = re.findall(r"<tr><td>(2026-0\d-07)</td>", newer)
    assert made == ["2026-02-07", "2026-03-07", "2026-04-07"]
    assert "-14%" in newer and "+10%" in newer
    assert "$1.00M" in newer and "$1.01M" not in newer


@pytest.fixture()
def scored_store(tmp_path: Path) -> tuple[Store, np.ndarray, np.ndarray]:
    """A SQLite prediction store with 300 deal scores of two versions and their outcomes."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.ensure_schema(migrate=True)
    rng = np.random.default_rng(11)
    p = rng.uniform(0.02, 0.95, size=300)
    y = (rng.random(300) < p).astype(int)
    for version, part in (("3", slice(0, 150)), ("4", slice(150, 300))):
        batch = Batch(
            kind="opportunities",
            model="close_probability",
            model_name=CLOSE_MODEL_NAME,
            model_version=version,
            as_of=date(2025, 3, 2),
            requested_at=utcnow(),
            period_label="2025-Q1",
        )
        rows = [
            {
                "opportunity_id": f"D{i}",
                "p_win": float(p[i]),
                "p_win_in_period": float(p[i]) / 2,
                "amount": 10_000.0,
                "segment": "SMB" if i % 2 else "Enterprise",
                "week_of_quarter": 5,
            }
            for i in range(300)[part]
        ]
        store.save_scores(batch, rows)
    store.upsert_deal_outcomes(
        [
            DealOutcome(f"D{i}", "won" if y[i] else "lost", date(2025, 4, 1), 10_000.0)
            for i in range(280)  # the last 20 are still open
        ]
    )
    # two forecasts of the quarter those deals closed in (February to April 2025: ended)
    for as_of, expected in ((date(2025, 2, 9), 1_200_000.0), (date(2025, 3, 2), 1_500_000.0)):
        store.save_forecast(
            Batch(
                kind="forecast",
                model="close_probability",
                model_name=CLOSE_MODEL_NAME,
                model_version="4",
                as_of=as_of,
                requested_at=utcnow(),
                period_label="2025-Q1",
                period_start=date(2025, 2, 1),
                period_end=date(2025, 4, 30),
            ),
            {"expected": expected, "p10": expected * 0.8, "p50": expected, "p90": expected * 1.2},
            {"total": {"expected": expected}},
        )
    return store, p[:280], y[:280].astype(float)


def test_calibration_page_from_the_store_shows_the_measured_numbers(
    scored_store: tuple[Store, np.ndarray, np.ndarray],
) -> None:
    store, p, y = scored_store
    page = calibration_page(store, generated_at=WHEN)
    shown = cards(page.split('id="close_probability"')[1].split('id="sqo_likelihood"')[0])
    assert shown["deals scored"] == "300"
    assert "280 with an outcome, 20 still open" in page
    assert shown["Brier score"] == f"{metrics.brier_score(y, p):.3f}"
    assert shown["Log loss"] == f"{metrics.log_loss(y, p):.3f}"
    assert shown["ECE"] == f"{100 * metrics.expected_calibration_error(y, p):.1f}%"
    assert shown["AUC"] == f"{metrics.auc(y, p):.2f}"
    table = metrics.reliability_table(y, p)
    for count in table.loc[table["count"] > 0, "count"]:
        assert f">{int(count):,}</text>" in page  # the counts under the reliability diagram
    versions = page.split("By model version")[1].split("By segment")[0]
    assert ">3</td>" in versions and ">4</td>" in versions
    assert "Lead SQO likelihood" in page and "No leads scored are stored yet" in page
    # the quarter's forecasts against the 10,000 of every deal won in it
    quarter = page.split("<h3>2025-Q1")[1]
    won = 10_000.0 * y.sum()
    assert cards(quarter)["Won"] == svg.money(won)
    inside = sum(0.8 * e <= won <= 1.2 * e for e in (1_200_000.0, 1_500_000.0))
    assert cards(quarter)["Inside P10–P90"] == f"{inside} of 2"


def test_report_calibration_writes_the_page(
    scored_store: tuple[Store, np.ndarray, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, _, _ = scored_store
    monkeypatch.setenv("PIPECAST_DATABASE_URL", store.url)
    monkeypatch.setenv("PIPECAST_VAR_DIR", str(tmp_path / "var"))
    out = tmp_path / "reports" / "calibration.html"
    runner = CliRunner()
    done = runner.invoke(cli_app, ["report", "calibration", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "280 with an outcome" in out.read_text(encoding="utf-8")
    later = runner.invoke(
        cli_app, ["report", "calibration", "--since", "2026-04-01", "--out", str(out)]
    )
    assert later.exit_code == 0, later.output
    text = out.read_text(encoding="utf-8")
    assert "predictions made on or after 2026-04-01" in text
    assert "No deals scored are stored yet" in text  # all were made before that day
    for args, words in (
        (["--out", str(tmp_path / "page.txt")], "give a file ending in .html"),
        (["--since", "2026-13-01", "--out", str(tmp_path / "x.html")], "--since"),
    ):
        refused = runner.invoke(cli_app, ["report", "calibration", *args])
        assert refused.exit_code == 2, refused.output
        assert words in refused.output
    assert not (tmp_path / "page.txt").exists() and not (tmp_path / "x.html").exists()


def test_write_page_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "page.html"
    write_page("<p>one</p>", target)
    write_page("<p>two</p>", target)
    assert target.read_text(encoding="utf-8") == "<p>two</p>"
    assert [p.name for p in target.parent.iterdir()] == ["page.html"]  # no temporary left


# --- the routes -------------------------------------------------------------------------------


def test_calibration_route_answers_html(registry: Registry, tmp_path: Path) -> None:
    settings = settings_for(registry.uri, tmp_path)
    with TestClient(create_app(settings)) as client:
        page = client.get("/reports/calibration", params={"since": "2026-01-01"})
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "Calibration — are the probabilities right?" in page.text
        assert "predictions made on or after 2026-01-01" in page.text
        bad = client.get("/reports/calibration", params={"since": "soon"})
        assert bad.status_code == 422


def test_forecast_route_refuses_bad_parameters_with_a_reason(
    registry: Registry, tmp_path: Path
) -> None:
    from features import synthetic

    data = tmp_path / "data"
    synthetic.write_simulation(synthetic.simulate(seed=5, n_opportunities=120, n_leads=200), data)
    settings = settings_for(registry.uri, tmp_path, data_dir=data)
    with TestClient(create_app(settings)) as client:
        missing = client.get("/reports/forecast")
        assert missing.status_code == 422
        bad = client.get("/reports/forecast", params={"period": "next quarter"})
        assert bad.status_code == 422, bad.text
        assert "next quarter" in bad.json()["detail"]
        negative = client.get("/reports/forecast", params={"period": "2026-Q3", "quota": -5})
        assert negative.status_code == 422
        # the export ends on 2026-11-01, in fiscal Q4 (November to January)
        ended = client.get("/reports/forecast", params={"period": "2026-Q3"})
        assert ended.status_code == 422 and "ended before" in ended.json()["detail"]
        column = client.get("/reports/forecast", params={"period": "2026-Q4", "by": "shoe_size"})
        assert column.status_code == 422, column.text
        assert "shoe_size" in column.json()["detail"]
        backwards = client.get(
            "/reports/forecast", params={"period": "2026-Q4", "compare_to": "2026-11-05"}
        )
        assert backwards.status_code == 422, backwards.text
        assert "2026-11-05" in backwards.json()["detail"]


def test_forecast_route_renders_the_call_from_the_champion(
    scoring_setup: ScoringSetup, tmp_path: Path
) -> None:
    settings = settings_for(scoring_setup.registry_uri, tmp_path, data_dir=scoring_setup.data_dir)
    with TestClient(create_app(settings)) as client:
        page = client.get("/reports/forecast", params={"period": "2026-Q2", "as_of": "2026-07-01"})
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    shown = cards(page.text)
    assert shown["Expected bookings"].startswith("$")
    assert shown["Quota attainment odds"] == "—" and "No quota given" in page.text
    assert "Roll-up by owner" in page.text  # the simulated export has owners
    assert "What changed since 2026-06-24" in page.text  # a week before as_of by default
    # the forecast shown is stored, its total beside the CRM's number on the same footing
    store = Store(settings.database_url)
    try:
        made = store.forecasts_against_actuals(ended_before=date(2100, 1, 1))
    finally:
        store.dispose()
    [row] = made.to_dict("records")
    assert (row["period_label"], str(row["as_of"])) == ("2026-Q2", "2026-07-01")
    assert row["model_version"] == scoring_setup.close_version
    assert svg.money(row["expected"]) == shown["Expected bookings"]
    assert f"{svg.money(row['p10'])}–{svg.money(row['p90'])}" == shown["Range P10–P90"]
    assert row["p10"] <= row["p50"] <= row["p90"] and row["stage_weighted"] > 0
