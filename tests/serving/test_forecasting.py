"""The forecast service on a small simulated export: fields, sums, point in time, refusals."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import opportunity as opportunity_features
from features.errors import InputError
from features.io import Export
from features.periods import parse_period
from features.snapshots import cut_export
from models.baselines import HistoricalCloseModel
from models.forecast import stage_probabilities
from serving.forecast_schema import ForecastResponse
from serving.forecasting import forecast_export, jsonable
from serving.scoring import simple_flags, stale_limits, won_stage_spell_days

AS_OF = "2026-06-14"
PERIOD = "2026-Q2"  # fiscal year from February: 2026-05-01 … 2026-07-31


def fit_history_model(export: Export) -> HistoricalCloseModel:
    """The fallback close model fitted on monthly snapshots of 2025 with their final outcomes."""
    opps = export.opportunities
    assert opps is not None
    outcome = opps.set_index("opportunity_id")
    frames, ys, days = [], [], []
    for day in pd.date_range("2024-10-06", "2025-12-28", freq="4W-SUN"):
        X = opportunity_features.build(export, as_of=day)
        status = outcome.loc[X.index, "status"]
        decided = (status != "open").to_numpy()
        X = X.loc[decided]
        frames.append(X)
        ys.append((outcome.loc[X.index, "status"] == "won").to_numpy(dtype=int))
        days.append((outcome.loc[X.index, "closed_at"] - day).dt.days.to_numpy(dtype=float))
    X = pd.concat(frames)
    return HistoricalCloseModel().fit(X, np.concatenate(ys), days_to_close=np.concatenate(days))


@pytest.fixture(scope="module")
def model(small_export: Export) -> HistoricalCloseModel:
    return fit_history_model(small_export)


@pytest.fixture(scope="module")
def result(small_export: Export, model: HistoricalCloseModel):  # type: ignore[no-untyped-def]
    return forecast_export(
        small_export,
        model,
        model_version="7",
        period=PERIOD,
        as_of=AS_OF,
        quota=1_500_000,
        group_by="owner_id",
        compare_to="2026-05-31",
    )


def test_response_has_the_interface_fields_and_adds_up(result, small_export: Export) -> None:  # type: ignore[no-untyped-def]
    r = result.response
    ForecastResponse.model_validate(jsonable(r))  # what POST /forecast answers
    assert r["as_of"] == AS_OF and r["period"] == {
        "label": PERIOD,
        "start": "2026-05-01",
        "end": "2026-07-31",
    }
    assert r["model_version"] == "7"
    deals = result.deals
    assert r["n_open_deals"] == len(deals) == len(r["deals"]) > 10
    # expected covers the open deals only: Σ amount × p_win_in_period
    assert r["expected"] == pytest.approx(deals["expected_value"].sum())
    np.testing.assert_allclose(
        deals["expected_value"], deals["amount"].fillna(0) * deals["p_win_in_period"]
    )
    assert r["p10"] <= r["p50"] <= r["p90"]
    total = r["total"]
    assert total["expected"] == pytest.approx(r["won_to_date"] + r["expected"] + r["expected_new"])
    assert total["p10"] <= total["p50"] <= total["p90"]
    assert r["won_to_date"] > 0 and r["expected_new"] > 0
    # roll-up: groups add up to the total; open deals are all counted once
    groups = pd.DataFrame(r["groups"])
    assert groups["expected"].sum() == pytest.approx(total["expected"])
    assert groups["won_to_date"].sum() == pytest.approx(r["won_to_date"])
    assert groups["n_deals"].sum() == r["n_open_deals"]
    assert groups["stage_weighted"].sum() == pytest.approx(r["stage_weighted"])
    assert "(new business)" in set(groups["group"])
    # quota odds and coverage
    assert 0.0 <= r["prob_attain_quota"] <= 1.0
    assert r["remaining_quota"] == pytest.approx(1_500_000 - r["won_to_date"])
    assert r["coverage_ratio"] == pytest.approx(r["open_pipeline_in_period"] / r["remaining_quota"])
    # probability categories and the CRM's own, beside each other
    cats = r["categories"]
    assert sum(c["n_deals"] for c in cats["model"]) == r["n_open_deals"]
    assert sum(c["n_deals"] for c in cats["crm"]) == r["n_open_deals"]
    commit = deals["p_win_in_period"] >= 0.7
    assert (deals.loc[commit, "category"] == "commit").all()
    assert (deals.loc[deals["p_win_in_period"] < 0.4, "category"] == "pipeline").all()
    assert list(deals.columns[:2]) == ["opportunity_id", "owner_id"]
    assert deals["expected_value"].is_monotonic_decreasing


def test_won_to_date_and_stage_weighted_by_hand(result, small_export: Export) -> None:  # type: ignore[no-untyped-def]
    opps = small_export.opportunities
    assert opps is not None
    period = parse_period(PERIOD, 2)
    won = opps[
        (opps["status"] == "won")
        & (opps["closed_at"] >= period.start)
        & (opps["closed_at"] < pd.Timestamp(AS_OF) + pd.Timedelta(days=1))
    ]
    assert result.response["won_to_date"] == pytest.approx(won["amount"].sum())
    assert result.response["n_won_to_date"] == len(won)
    deals = result.deals
    close = pd.to_datetime(deals["expected_close_date"])
    inside = (close >= period.start) & (close <= period.end)
    probability = small_export.stage_probabilities()
    by_hand = (deals["amount"] * deals["stage"].map(probability).astype(float))[inside].sum()
    assert result.response["stage_weighted"] == pytest.approx(by_hand)


def test_forecast_is_point_in_time(
    result,  # type: ignore[no-untyped-def]
    small_export: Export,
    model: HistoricalCloseModel,
) -> None:
    # the export as it would have been exported on AS_OF gives the same forecast
    cut = cut_export(small_export, AS_OF)
    again = forecast_export(
        cut, model, model_version="7", period=PERIOD, quota=1_500_000, group_by="owner_id"
    ).response
    r = result.response
    for key in ("expected", "p10", "p50", "p90", "won_to_date", "expected_new", "stage_weighted"):
        assert again[key] == pytest.approx(r[key]), key
    assert again["total"] == pytest.approx(r["total"])
    assert again["prob_attain_quota"] == pytest.approx(r["prob_attain_quota"])
    assert [d["opportunity_id"] for d in again["deals"]] == [
        d["opportunity_id"] for d in r["deals"]
    ]
    assert [d["flags"] for d in again["deals"]] == [d["flags"] for d in r["deals"]]
    # the CRM's forecast category is the one in force on AS_OF, not today's
    assert [d["forecast_category"] for d in again["deals"]] == [
        d["forecast_category"] for d in r["deals"]
    ]
    assert again["categories"] == r["categories"]
    hist = small_export.stage_history
    assert hist is not None
    known = hist[hist["changed_at"] < pd.Timestamp(AS_OF) + pd.Timedelta(days=1)]
    in_force = (
        known.dropna(subset=["forecast_category"])
        .sort_values("changed_at")
        .groupby("opportunity_id")["forecast_category"]
        .last()
    )
    latest = hist.dropna(subset=["forecast_category"]).sort_values("changed_at")
    latest = latest.groupby("opportunity_id")["forecast_category"].last()
    ids = [d["opportunity_id"] for d in r["deals"]]
    assert [d["forecast_category"] for d in r["deals"]] == in_force.reindex(ids).tolist()
    assert (latest.reindex(ids) != in_force.reindex(ids)).any()  # some changed after AS_OF


def test_changes_since_an_earlier_call(result, small_export: Export) -> None:  # type: ignore[no-untyped-def]
    changes = result.changes
    assert changes is not None and len(changes)
    opps = small_export.opportunities.set_index("opportunity_id")  # type: ignore[union-attr]
    since, day = pd.Timestamp("2026-05-31"), pd.Timestamp(AS_OF)
    end = day + pd.Timedelta(days=1)
    open_since = opportunity_features.build(small_export, as_of=since).index
    open_now = set(result.deals["opportunity_id"])
    closed = [i for i in open_since if i not in open_now]
    by_kind = changes.groupby("change")["opportunity_id"].apply(set).to_dict()
    assert set(closed) == by_kind.get("won", set()) | by_kind.get("lost", set())
    for i in by_kind.get("won", set()):
        assert opps.at[i, "status"] == "won" and since < opps.at[i, "closed_at"] < end
    created = {i for i in open_now if opps.at[i, "created_at"] > since}
    assert by_kind.get("new", set()) == created
    moved = changes[changes["change"].str.startswith("probability")]
    assert (abs(moved["p_after"] - moved["p_before"]) >= 0.10 - 1e-12).all()
    lines = result.deals.set_index("opportunity_id")["change"]
    assert (lines[list(created)] == "new").all()


def test_stale_limits_are_point_in_time_and_by_segment(small_export: Export) -> None:
    day = pd.Timestamp(AS_OF)
    features = opportunity_features.build(small_export, as_of=day)
    limits = stale_limits(small_export, features, as_of=day)
    spells = won_stage_spell_days(small_export, as_of=day)
    opps = small_export.opportunities.set_index("opportunity_id")  # type: ignore[union-attr]
    assert set(spells["deal"]) <= set(
        opps.index[(opps["status"] == "won") & (opps["closed_at"] < day + pd.Timedelta(days=1))]
    )
    for i in features.index[:15]:
        stage, segment = features.at[i, "stage"], opps.at[i, "segment"]
        cell = spells[(spells["stage"] == stage) & (spells["segment"] == segment)]["days"]
        wide = spells[spells["stage"] == stage]["days"]
        by_hand = (
            cell.quantile(0.9)
            if len(cell) >= 10
            else (wide.quantile(0.9) if len(wide) >= 5 else np.nan)
        )
        assert limits[i] == pytest.approx(by_hand, nan_ok=True)
    # a deal won after the as-of day changes nothing
    later = cut_export(small_export, "2026-09-30")
    assert stale_limits(later, features, as_of=day).equals(limits)


def test_stage_probabilities_fill_undeclared_stages(small_export: Export) -> None:
    known = cut_export(small_export, AS_OF)
    declared = stage_probabilities(known)
    assert declared["Proposal"] == 0.5
    plain = known.replace(config=type(known.config)(exported_at=known.config.exported_at))
    learned = stage_probabilities(plain)
    assert 0.0 < learned["Discovery"] < learned["Negotiation"] < 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"period": "2026-Q5"}, "not understood"),
        ({"period": "2026-Q1"}, "ended before"),
        ({"period": None}, "needs a period"),
        ({"quota": -5.0}, "≥ 0"),
        ({"group_by": "colour"}, "owner_id"),
        ({"group_by": "opportunity_id"}, "not a column"),
        ({"compare_to": "2026-06-20"}, "earlier day"),
        ({"compare_to": "last week"}, "YYYY-MM-DD"),
        ({"as_of": "2027-01-01"}, "after the export date"),
        ({"commit": 0.3, "best_case": 0.5}, "best case"),
    ],
)
def test_bad_options_are_refused(
    small_export: Export, model: HistoricalCloseModel, options: dict, message: str
) -> None:
    kwargs = {"period": PERIOD, "as_of": AS_OF, **options}
    with pytest.raises(InputError, match=message):
        forecast_export(small_export, model, model_version="7", **kwargs)


def test_too_many_groups_are_refused(
    small_export: Export, model: HistoricalCloseModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serving.forecasting.MAX_GROUPS", 3)
    with pytest.raises(InputError, match="at most 3"):
        forecast_export(
            small_export, model, model_version="7", period=PERIOD, as_of=AS_OF, group_by="owner_id"
        )


def test_red_flags_of_a_deal() -> None:
    X = pd.DataFrame(
        {
            "stage": pd.array(["Proposal", "Proposal", "Discovery", "Discovery"], dtype="string"),
            "days_in_stage": [50.0, 10.0, 70.0, 5.0],
            "amount": [1000.0, np.nan, 0.0, 500.0],
            "days_to_expected_close": [-3.0, np.nan, 10.0, 40.0],
            "close_date_pushes": [4.0, 1.0, 2.0, 0.0],
            "activities_total": [3.0, 0.0, 5.0, 9.0],
            "activities_30d": [0.0, 0.0, 1.0, 4.0],
            "days_since_last_activity": [45.0, np.nan, 20.0, 2.0],
            "has_next_step": [0.0, 1.0, 1.0, 1.0],
        },
        index=pd.Index(["o1", "o2", "o3", "o4"], name="opportunity_id"),
    )
    limits = pd.Series([40.0, 40.0, np.nan, 100.0], index=X.index)
    flags = simple_flags(X, stale_days=limits)
    assert flags["o1"] == (
        "expected close date passed; no activity in 30 days; close date pushed 4 times; "
        "no next step; stale in stage"
    )
    assert flags["o2"] == "no activity recorded; no amount; no close date"
    assert flags["o3"] == "close date pushed 2 times; no amount"  # no limit: not judged stale
    assert flags["o4"] == ""
    # a shorter neglect window reads the days since the last activity
    assert "no activity in 14 days" in simple_flags(X, neglect_days=14)["o3"]
    assert "no activity" not in simple_flags(X, neglect_days=60)["o1"]


def test_an_export_without_history_or_activities(
    small_export: Export, model: HistoricalCloseModel
) -> None:
    bare = small_export.replace(stage_history=None, activities=None, leads=None)
    # at the export date the current rows are the state: amounts and stages are known
    now = forecast_export(bare, model, model_version="7", period="2026-Q4", group_by="stage")
    r = now.response
    assert r["notes"] == [] and r["expected"] > 0 and r["stage_weighted"] > 0
    assert sum(g["expected"] for g in r["groups"]) == pytest.approx(r["total"]["expected"])
    assert r["categories"]["crm"] is None  # no forecast_category without stage_history
    # before it, amounts are unknown without history: they count 0 and the response says so
    past = forecast_export(bare, model, model_version="7", period=PERIOD, as_of=AS_OF).response
    assert past["expected"] == 0.0
    assert any("no amount known" in n for n in past["notes"])
    assert all("no amount" in d["flags"] for d in past["deals"])


def test_a_later_period_and_a_month(small_export: Export, model: HistoricalCloseModel) -> None:
    later = forecast_export(small_export, model, model_version="7", period="2027-Q1").response
    assert later["won_to_date"] == 0.0 and later["expected_new"] > 0
    month = forecast_export(small_export, model, model_version="7", period="2026-11").response
    assert month["new_business"]["past_periods"][0] == "2026-10-01:2026-10-31"
    q4 = forecast_export(small_export, model, model_version="7", period="2026-Q4").response
    # a month inside the quarter: each open deal is no likelier to close in it than in the quarter
    p_month = {d["opportunity_id"]: d["p_win_in_period"] for d in month["deals"]}
    for d in q4["deals"]:
        assert p_month[d["opportunity_id"]] <= d["p_win_in_period"] + 1e-12


def assert_same_json(got: Any, want: Any, path: str = "$") -> None:
    """Equal as JSON documents, type for type (3 is not 3.0) and key order for key order."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} vs {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} vs {list(want)}"
        for key in want:
            assert_same_json(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {len(got)} items vs {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_json(g, w, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} vs {want!r}"


@pytest.mark.parametrize("options", ["full", "bare"])
def test_the_document_is_already_the_validated_response(
    result: Any, small_export: Export, model: HistoricalCloseModel, options: str
) -> None:
    """POST /forecast sends the document as it is: it must be what validation would send."""
    if options == "full":  # roll-up, changes, quota, CRM categories
        response = result.response
        assert response["groups"] and response["changes"] and response["categories"]["crm"]
    else:
        response = forecast_export(
            small_export.replace(stage_history=None),
            model,
            model_version="7",
            period=PERIOD,
            as_of=AS_OF,
        ).response
        assert response["quota"] is None and response["changes"] is None
    document = jsonable(response)
    assert_same_json(document, ForecastResponse.model_validate(document).model_dump(mode="json"))


def test_the_table_draws_every_section(result, small_export: Export, model) -> None:  # type: ignore[no-untyped-def]
    import io

    from rich.console import Console

    from serving.forecasting import render_forecast

    buffer = io.StringIO()
    render_forecast(result.response, Console(file=buffer, width=120))
    text = buffer.getvalue()
    for part in (
        "Forecast 2026-Q2",
        "Quota 1.50M",
        "By owner_id",
        "Deals that carry the period",
        "Red flags",
        "What changed since 2026-05-31",
        "Categories",
    ):
        assert part in text, part
    # a pipeline with no open deal at all still forecasts (won to date and new business)
    opps = small_export.opportunities
    assert opps is not None
    closed = opps[opps["status"] != "open"]
    hist = small_export.stage_history
    assert hist is not None
    export = small_export.replace(
        opportunities=closed.reset_index(drop=True),
        stage_history=hist[hist["opportunity_id"].isin(closed["opportunity_id"])],
    )
    empty = forecast_export(export, model, model_version="7", period="2026-Q4", quota=10.0)
    r = empty.response
    assert r["n_open_deals"] == 0 and r["expected"] == 0.0 and r["deals"] == []
    assert r["total"]["expected"] == pytest.approx(r["won_to_date"] + r["expected_new"])
    buffer = io.StringIO()
    render_forecast(r, Console(file=buffer, width=120))
    assert "0 open deals" in buffer.getvalue()


def test_the_request_body_refuses_bad_fields() -> None:
    from pydantic import ValidationError

    from serving.forecast_schema import ForecastRequest

    ok = ForecastRequest(period="2026-Q3", quota=1e6, group_by="owner_id")
    assert ok.commit_threshold == 0.7 and ok.best_case_threshold == 0.4
    for bad in ({"quota": -1.0}, {"commit_threshold": 1.5}, {"neglect_days": 0}):
        with pytest.raises(ValidationError):
            ForecastRequest(period="2026-Q3", **bad)  # type: ignore[arg-type]


def test_the_range_carries_the_model_uncertainty_the_backtest_measures(
    small_export: Export, model: HistoricalCloseModel
) -> None:
    """The served forecast widens its range by the σ that ``estimate_model_uncertainty`` finds
    on the export as known at as_of (as the backtest does), estimated once per forecast."""
    from features.periods import parse_period
    from features.snapshots import cut_export
    from models.forecast import estimate_model_uncertainty, model_predictor
    from serving import forecasting

    day = pd.Timestamp(AS_OF)
    period = parse_period(PERIOD, small_export.config.fiscal_year_start_month)
    known = cut_export(small_export.replace(leads=None), day)
    direct = estimate_model_uncertainty(known, model_predictor(model), as_of=day, period=period)
    served = forecasting.model_uncertainty(small_export, known, model, day=day, period=period)
    assert served.sigma == direct.sigma and served.windows == direct.windows
    # the fallback model on the small export strays far from what was booked
    assert served.sigma > 0.1, served.describe()
    # asked again for the same export, model, day and period: the very same estimate
    again = forecasting.model_uncertainty(small_export, known, model, day=day, period=period)
    assert again is served
    # another day is another estimate
    other = forecasting.model_uncertainty(
        small_export, known, model, day=day - pd.Timedelta(days=7), period=period
    )
    assert other is not served
    widened = [
        n
        for n in forecast_export(
            small_export, model, model_version="7", period=PERIOD, as_of=AS_OF
        ).response["notes"]
        if "model's own uncertainty" in n
    ]
    assert len(widened) == 1 and f"±{served.sigma:.1%}" in widened[0]
