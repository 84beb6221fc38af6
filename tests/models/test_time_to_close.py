"""The competing-risks close model: hazards → incidence, risk sets, coherence, acceptance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.time_to_close import (
    LOST,
    OPEN,
    PATTERN_SHAP_MIN_ROWS,
    WON,
    CompetingRisksCloseModel,
    fit_on_time_split,
    incidence_from_hazards,
    interval_ends,
    interval_frame,
)


def _day(text: str) -> int:
    return int(np.datetime64(text, "D").astype(np.int64))


def test_incidence_from_hazards_by_hand() -> None:
    hw = np.array([[0.1, 0.2, 0.5]])
    hl = np.array([[0.3, 0.1, 0.5]])
    cif, surv = incidence_from_hazards(hw, hl)
    # S = 0.6, 0.6·0.7 = 0.42, 0; CIF = 0.1, 0.1 + 0.6·0.2 = 0.22, 0.22 + 0.42·0.5 = 0.43
    np.testing.assert_allclose(surv[0], [0.6, 0.42, 0.0])
    np.testing.assert_allclose(cif[0], [0.1, 0.22, 0.43])


def test_intervals_end_on_sundays_month_ends_and_the_horizon() -> None:
    # Wednesday 2026-01-28: Sat 31 Jan (month end), Sun 1 Feb, Sun 8 Feb, and Sun 15 Feb
    # covers the horizon (11 Feb); a longer horizon extends the same grid
    ends = interval_ends(_day("2026-01-28"), 14)
    assert ends.tolist() == [3, 4, 11, 18]
    assert interval_ends(_day("2026-01-28"), 30).tolist()[:4] == [3, 4, 11, 18]
    assert interval_ends(_day("2026-01-28"), 11).tolist() == [3, 4, 11]
    cal = interval_frame(_day("2026-01-28"), ends, fiscal_year_start_month=2)
    # fiscal year from February: 31 Jan closes Q4, and the month
    assert cal["closes_quarter"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert cal["closes_month"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert cal["days_to_quarter_end"].tolist() == [0.0, 88.0, 81.0, 74.0]
    # 1 Nov..31 Jan is 92 days: its last day falls in a short 14th week
    assert cal["week_of_quarter"].tolist() == [14.0, 1.0, 2.0, 3.0]
    assert cal["in_last_month_of_quarter"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert cal["days_ahead"].tolist() == [0.0, 3.0, 4.0, 11.0]
    assert cal["interval_days"].tolist() == [3.0, 1.0, 7.0, 7.0]


def test_risk_sets_hold_every_open_week_and_censor_at_the_label_date() -> None:
    # landmark Sunday 2026-03-01; next Sundays 8, 15, 22 Mar; month end 31 Mar
    X = pd.DataFrame({"age_days": [10.0, 20.0, 30.0, 40.0]})
    as_of = pd.Series(pd.to_datetime(["2026-03-01"] * 4))
    closed = pd.Series(pd.to_datetime(["2026-03-10", "2026-03-08", None, "2026-03-30"]))
    won = np.array([1.0, 0.0, np.nan, 1.0])
    model = CompetingRisksCloseModel(fiscal_year_start_month=1, max_horizon_days=60)
    Xs, y, rows = model.risk_set_rows(
        X, as_of=as_of, closed_at=closed, won=won, censor_at=pd.Timestamp("2026-03-22")
    )
    got = {
        r: list(zip(Xs["days_ahead"].to_numpy()[rows == r], y[rows == r], strict=True))
        for r in range(4)
    }
    # deal 0: open in week 1, won in week 2 (10 Mar)
    assert got[0] == [(0.0, OPEN), (7.0, WON)]
    # deal 1: lost on 8 Mar, the last day of week 1
    assert got[1] == [(0.0, LOST)]
    # deal 2: still open: every week seen up to the censoring day, nothing after
    assert got[2] == [(0.0, OPEN), (7.0, OPEN), (14.0, OPEN)]
    # deal 3: won after the censoring day: as far as the slice knows, open
    assert got[3] == [(0.0, OPEN), (7.0, OPEN), (14.0, OPEN)]
    # age advances with the interval
    assert Xs["age_at_interval_end"].to_numpy()[rows == 2].tolist() == [37.0, 44.0, 51.0]


def test_thinning_keeps_about_the_share_asked() -> None:
    n = 400
    X = pd.DataFrame({"age_days": np.zeros(n)})
    as_of = pd.Series(pd.to_datetime(["2026-03-01"] * n))
    model = CompetingRisksCloseModel(max_horizon_days=120)
    full = model.risk_set_rows(
        X,
        as_of=as_of,
        closed_at=pd.Series([pd.NaT] * n),
        won=np.full(n, np.nan),
        censor_at=pd.Timestamp("2026-06-30"),
    )[1]
    thin = model.risk_set_rows(
        X,
        as_of=as_of,
        closed_at=pd.Series([pd.NaT] * n),
        won=np.full(n, np.nan),
        censor_at=pd.Timestamp("2026-06-30"),
        max_rows=len(full) // 4,
        rng=np.random.default_rng(0),
    )[1]
    assert abs(len(thin) - len(full) / 4) < 0.1 * len(full) / 4


# ----------------------------------------------------------------------------------------
# fitted on a simulated export
# ----------------------------------------------------------------------------------------


def _fit_on(sim_export, *, train_end: str, calibration_end: str | None = None, **kw):
    from features import labels as feature_labels
    from features import opportunity as opportunity_features
    from features.snapshots import snapshot_dates

    table = opportunity_features.build_training_set(sim_export, dates=snapshot_dates(sim_export))
    lab = feature_labels.opportunity_labels(sim_export, table[["opportunity_id", "as_of"]])
    X = table.drop(columns=["opportunity_id", "as_of", "has_next_step"], errors="ignore")
    model = fit_on_time_split(
        X,
        as_of=table["as_of"],
        closed_at=lab["closed_at"],
        won=lab["won"],
        train_end=pd.Timestamp(train_end),
        # the later slice, its outcomes read at the export date (as training does)
        calibration_end=None if calibration_end is None else pd.Timestamp(calibration_end),
        label_date=sim_export.exported_at.normalize(),
        fiscal_year_start_month=sim_export.config.fiscal_year_start_month,
        categorical=opportunity_features.categorical_columns(X),
        n_estimators=80,
        learning_rate=0.1,
        max_training_rows=60_000,
        **kw,
    )
    return model, table, X, lab


@pytest.fixture(scope="module")
def stale_fit():
    from features import synthetic

    sim = synthetic.simulate(seed=5, n_opportunities=700, n_leads=3000, stale_share=0.15)
    return _fit_on(sim.export, train_end="2026-05-31", calibration_end="2026-08-31")


def test_calibration_conditions_on_age_and_keeps_the_order(stale_fit) -> None:
    model, table, X, _ = stale_fit
    assert model.calibration_method_ == "logistic_age"
    assert model.calibration_pairs_ >= 1000
    p = np.linspace(1e-4, 0.99, 200)
    by_age = {}
    for age in (0.0, 45.0, 200.0, 5000.0, np.nan):
        rows = pd.DataFrame({"age_days": np.full(len(p), age)})
        g = model._calibrated(p, rows)
        # increasing in the probability at every age: the period's end can only add wins
        assert np.all(np.diff(g) > 0)
        assert np.all((g > 0) & (g < 1))
        by_age[age] = g
    # the map differs by age (otherwise it would be one map for all), and near zero stays
    # near zero at every age: the tiny probabilities of stale deals are not pooled and lifted
    assert np.abs(by_age[0.0] - by_age[200.0]).max() > 1e-3
    assert all(g[0] < 0.01 for g in by_age.values())


def test_fitted_model_is_coherent(stale_fit) -> None:
    model, table, X, _ = stale_fit
    sample = X.iloc[::40].reset_index(drop=True)
    as_of = pd.to_datetime(table["as_of"]).iloc[::40].to_numpy()
    p_win = model.predict_p_win(sample, as_of=as_of)
    previous = np.zeros(len(sample))
    for h in (3, 10, 30, 60, 91, 180, 365):
        now = model.predict_won_by(sample, h, as_of=as_of)
        assert np.all(now >= previous - 1e-12)
        assert np.all(now <= p_win + 1e-12)
        previous = now
    later = model.predict_in_period(sample, start_days=30, end_days=120, as_of=as_of)
    assert np.all((later >= 0) & (later <= p_win + 1e-12))
    # without as_of, the calendar comes from days_left_in_quarter: the same quarter-end answer
    q = X["days_left_in_quarter"].iloc[::40].to_numpy()
    with_as_of = model.predict_won_by(sample, q, as_of=as_of)
    without = model.predict_won_by(sample, q)
    assert np.abs(with_as_of - without).mean() < 0.02


def test_a_deal_lingering_without_activity_gets_less_than_a_fresh_one(stale_fit) -> None:
    model, table, X, _ = stale_fit
    fresh = X.loc[(X["stage"] == "Proposal") & (X["age_days"] <= 14)].iloc[[0]].copy()
    old = fresh.copy()
    old["age_days"] = 200.0
    old["days_in_stage"] = 190.0
    old["days_since_last_activity"] = 190.0
    for c in ("activities_7d", "activities_30d", "inbound_30d", "outbound_30d", "meetings_30d"):
        if c in old.columns:
            old[c] = 0.0
    both = pd.concat([fresh, old], ignore_index=True)
    p = model.predict_in_period(both, start_days=0, end_days=42, as_of=pd.Timestamp("2026-07-05"))
    assert p[1] < 0.5 * p[0]


def test_top_factors_are_those_of_won_rather_than_lost(stale_fit) -> None:
    from models.explain import explain
    from models.time_to_close import INTERVAL_COLUMNS

    model, table, X, _ = stale_fit
    fresh = X.loc[(X["stage"] == "Proposal") & (X["age_days"] <= 14)].iloc[[0]].copy()
    old = fresh.copy()
    old["age_days"] = 200.0
    old["days_in_stage"] = 190.0
    old["days_since_last_activity"] = 190.0
    both = pd.concat([fresh, old], ignore_index=True)
    day = pd.Timestamp("2026-07-05")
    contrib, encoded = model.win_contributions(both, as_of=day)
    assert list(contrib.index) == list(both.index) and len(encoded) == 2
    assert not set(contrib.columns) & set(INTERVAL_COLUMNS)
    assert np.isfinite(contrib.to_numpy()).all()
    # a deal gone quiet for months is pushed towards lost by exactly those features
    stale = ["age_days", "days_in_stage", "days_since_last_activity"]
    assert contrib.loc[1, stale].sum() < contrib.loc[0, stale].sum()
    assert contrib.loc[1, stale].sum() < 0
    # the same direction as the model's p_win
    p = model.predict_p_win(both, as_of=day)
    assert p[1] < p[0]
    found = explain(model, both, as_of=day)
    assert all(len(row) > 0 for row in found.factors)
    names = {f.feature for row in found.factors for f in row}
    assert not names & set(INTERVAL_COLUMNS)
    assert all(isinstance(t, str) and t for t in found.texts())


# ----------------------------------------------------------------------------------------
# serving speed: the same numbers from fewer, cheaper booster calls
# ----------------------------------------------------------------------------------------


def _pipeline(X: pd.DataFrame) -> pd.DataFrame:
    """Deals as a served pipeline has them: a stage the model never saw, ages unknown."""
    sample = X.iloc[::9].reset_index(drop=True).copy()
    sample.loc[[0, 5], "stage"] = "Legal review"
    sample.loc[[1, 6], "age_days"] = np.nan
    sample.loc[[2], "segment"] = None
    return sample


def _frame_rows(model: CompetingRisksCloseModel, X: pd.DataFrame, intervals: pd.DataFrame):  # type: ignore[no-untyped-def]
    """Every deal in every interval as the definition stacks them: a frame, then encoded."""
    n, m = len(X), len(intervals)
    stacked = model._with_intervals(
        X.iloc[np.repeat(np.arange(n), m)], intervals.iloc[np.tile(np.arange(m), n)]
    )
    return model.encoder_.transform(stacked)


@pytest.mark.parametrize("tabulated", [True, False])
def test_hazards_stacked_in_numpy_are_those_of_the_stacked_frame(
    stale_fit, monkeypatch, tabulated: bool
) -> None:
    import models.interval_trees as interval_trees
    import models.time_to_close as ttc

    model, _, X, _ = stale_fit
    sample = _pipeline(X)
    day = _day("2026-07-05")
    ends = interval_ends(day, model.long_horizon_days_)
    # small blocks: the deals cross several booster calls (or blocks of pairs)
    monkeypatch.setattr(ttc, "HAZARD_BLOCK_ROWS", 7 * len(ends) + 3)
    monkeypatch.setattr(interval_trees, "BLOCK_PAIRS", 7 * len(ends) + 3)
    model.__dict__.pop("_forest_of", None)
    if not tabulated:
        # trees too large to tabulate: the stacked rows go through LightGBM
        monkeypatch.setattr(interval_trees, "MAX_SPLITS", 2)
    h_won, h_lost = model._hazards(sample, day, ends)
    assert (model._interval_forest() is not None) == tabulated
    model.__dict__.pop("_forest_of", None)
    rows = _frame_rows(model, sample, interval_frame(day, ends, model.fiscal_year_start_month))
    expected = model.booster_.predict(rows, num_iteration=model.n_iter_).reshape(
        len(sample), len(ends), 3
    )
    assert h_won.shape == (len(sample), len(ends)) > (100, 50)
    np.testing.assert_array_equal(h_won, expected[:, :, WON])
    np.testing.assert_array_equal(h_lost, expected[:, :, LOST])


@pytest.mark.parametrize(("start", "end"), [(0, 27), (30, 120), (-40, 5), (10, 2000)])
def test_one_pass_gives_the_p_win_and_in_period_of_two(stale_fit, start: int, end: int) -> None:
    model, _, X, _ = stale_fit
    sample = _pipeline(X)
    day = pd.Timestamp("2026-07-05")
    p_win, in_period = model.predict_close(sample, start_days=start, end_days=end, as_of=day)
    p_two = model.predict_p_win(sample, as_of=day)
    in_two = model.predict_in_period(sample, start_days=start, end_days=end, p_win=p_two, as_of=day)
    np.testing.assert_array_equal(p_win, p_two)
    np.testing.assert_array_equal(in_period, in_two)
    assert (in_period > 0).any() and (in_period <= p_win).all()


def test_contributions_of_the_won_and_lost_trees_are_the_full_boosters(stale_fit) -> None:
    import pickle

    from models.time_to_close import INTERVAL_COLUMNS

    model, _, X, _ = stale_fit
    sample = _pipeline(X)
    day = _day("2026-07-05")
    contrib, encoded = model.win_contributions(sample, as_of=pd.Timestamp("2026-07-05"))
    # the definition: the full three-class booster's TreeSHAP on the stacked frame
    first = interval_frame(day, interval_ends(day, 1)[:1], model.fiscal_year_start_month)
    rows = _frame_rows(model, sample, first)
    columns = list(model.encoder_.columns_)
    width = len(columns) + 1
    raw = model.booster_.predict(rows, num_iteration=model.n_iter_, pred_contrib=True)
    raw = np.asarray(raw).reshape(len(sample), 3, width)
    full = pd.DataFrame(raw[:, WON, :-1] - raw[:, LOST, :-1], columns=columns)
    full["age_days"] = full["age_days"] + full["age_at_interval_end"]
    deal = [c for c in columns if c not in INTERVAL_COLUMNS]
    # worked out per distinct way through each tree (models.treeshap): LightGBM's numbers,
    # summed in another order
    assert len(sample) >= PATTERN_SHAP_MIN_ROWS
    np.testing.assert_allclose(contrib.to_numpy(), full[deal].to_numpy(), rtol=0, atol=1e-12)
    assert encoded["stage"].isna().iloc[[0, 5]].all()  # the unseen stage, as the factors read it
    # the won/lost booster and its tables are built on demand and never stored with the model
    assert "_won_lost" in model.__dict__ and "_pattern_shap_of" in model.__dict__
    again = pickle.loads(pickle.dumps(model))
    assert "_won_lost" not in again.__dict__ and "_pattern_shap_of" not in again.__dict__
    # a server builds them when it loads the model, before the first request
    again.prepare_for_serving()
    assert again.__dict__["_pattern_shap_of"][1] is not None
    assert again.__dict__["_forest_of"][1] is not None
    np.testing.assert_array_equal(
        again.win_contributions(sample, as_of=pd.Timestamp("2026-07-05"))[0].to_numpy(),
        contrib.to_numpy(),
    )


def test_top_factors_of_tabulated_trees_are_lightgbms(stale_fit, monkeypatch) -> None:
    import models.time_to_close as ttc
    from models.explain import explain

    model, _, X, _ = stale_fit
    sample = _pipeline(X)
    as_of = pd.Timestamp("2026-07-05")
    assert len(sample) >= ttc.PATTERN_SHAP_MIN_ROWS
    tabulated = explain(model, sample, as_of=as_of)
    # LightGBM's own TreeSHAP, row by row: the same factors, in the same order
    monkeypatch.setattr(ttc, "PATTERN_SHAP_MIN_ROWS", 10**9)
    plain = explain(model, sample, as_of=as_of)
    assert tabulated.texts().tolist() == plain.texts().tolist()
    assert [[f.feature for f in row] for row in tabulated.factors] == [
        [f.feature for f in row] for row in plain.factors
    ]
    assert sum(len(row) for row in plain.factors) > 2 * len(sample)


def test_class_trees_keep_each_class_score_and_refuse_a_binary_booster(stale_fit) -> None:
    import lightgbm as lgb

    from models.time_to_close import class_trees

    model, _, X, _ = stale_fit
    sample = _pipeline(X)
    day = _day("2026-07-05")
    ends = interval_ends(day, 60)
    matrix = model._interval_rows(
        model._booster_matrix(model.encoder_.transform(sample)),
        sample["age_days"].to_numpy(dtype="float64"),
        interval_frame(day, ends, model.fiscal_year_start_month),
    )
    part = class_trees(model.booster_, [LOST, WON], num_iteration=model.n_iter_)
    assert part.num_model_per_iteration() == 2 and part.current_iteration() == model.n_iter_
    full = model.booster_.predict(matrix, num_iteration=model.n_iter_, raw_score=True)
    np.testing.assert_array_equal(part.predict(matrix, raw_score=True), full[:, [LOST, WON]])
    rng = np.random.default_rng(0)
    binary = lgb.train(
        {"objective": "binary", "verbosity": -1, "num_leaves": 4},
        lgb.Dataset(rng.normal(size=(200, 3)), label=rng.integers(0, 2, 200)),
        num_boost_round=3,
    )
    with pytest.raises(ValueError, match="multiclass"):
        class_trees(binary, [0], num_iteration=3)


# ----------------------------------------------------------------------------------------
# acceptance on the simulated exports (slow: the full default simulation)
# ----------------------------------------------------------------------------------------


def _days_between(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    delta = pd.to_datetime(later).dt.normalize() - pd.to_datetime(earlier).dt.normalize()
    return delta.dt.days.to_numpy(dtype="float64", na_value=np.nan)


@pytest.fixture(scope="module")
def default_in_quarter() -> pd.DataFrame:
    """Fit on the time split training uses, with training's settings, on the DEFAULT simulated
    export (15% of its deals never close); the quarter's in-period table on the test window."""
    from features import labels as feature_labels
    from features import opportunity as opportunity_features
    from features import synthetic
    from features.snapshots import snapshot_dates
    from training import splits
    from training.evaluate_time import by_time

    export = synthetic.simulate().export
    opps = export.opportunities
    assert opps is not None
    assert (opps["status"] == "open").mean() > 0.15  # the never-closing deals are in it
    table = opportunity_features.build_training_set(export, dates=snapshot_dates(export))
    snaps = table[["opportunity_id", "as_of"]]
    lab = feature_labels.opportunity_labels(export, snaps)
    gap = splits.cycle_gap_days(opps["created_at"], opps["closed_at"])
    split = splits.plan_opportunity_split(
        table["as_of"], label_date=export.exported_at.normalize(), gap_days=gap
    )
    X = table.drop(columns=["opportunity_id", "as_of", "has_next_step"], errors="ignore")
    as_of = pd.to_datetime(table["as_of"])
    tr = (as_of <= split.train_end).to_numpy()
    cal = ((as_of > split.train_end) & (as_of <= split.calibration_end)).to_numpy()
    model = CompetingRisksCloseModel(
        categorical=opportunity_features.categorical_columns(X),
        fiscal_year_start_month=export.config.fiscal_year_start_month,
        n_estimators=300,
        learning_rate=0.1,
        max_training_rows=200_000,
    ).fit(
        X[tr],
        as_of=as_of[tr],
        closed_at=lab["closed_at"][tr],
        won=lab["won"][tr],
        censor_at=split.train_end,
        X_cal=X[cal],
        as_of_cal=as_of[cal],
        closed_at_cal=lab["closed_at"][cal],
        won_cal=lab["won"][cal],
        censor_at_cal=split.label_date,
    )
    assert model.calibration_method_ == "logistic_age"
    window = splits.holdout_window(snaps, lab["closed_at"], split)
    y = lab["won_by_quarter_end"].to_numpy(dtype="float64")
    rows = window & np.isfinite(y)
    Xt = X[rows].reset_index(drop=True)
    p = model.predict_in_period(
        Xt,
        start_days=0,
        end_days=_days_between(lab["quarter_end"][rows], table["as_of"][rows]),
        as_of=as_of[rows].to_numpy(),
    )
    frame = pd.DataFrame(
        {
            "as_of": as_of[rows].to_numpy(),
            "period": "quarter",
            "age_days": Xt["age_days"].to_numpy(),
            "won_in_period": y[rows],
        }
    )
    return by_time(
        frame,
        {"competing_risks": p},
        fiscal_year_start_month=export.config.fiscal_year_start_month,
    )


@pytest.mark.slow
def test_in_period_is_calibrated_in_every_third_of_the_quarter(
    default_in_quarter: pd.DataFrame,
) -> None:
    table = default_in_quarter
    thirds = table.loc[table["cut"] == "quarter third"].set_index("group")
    assert set(thirds.index) == {"weeks 1-4", "weeks 5-9", "weeks 10-13"}
    for group, row in thirds.iterrows():
        assert row["ece"] <= 0.03, f"{group}: ECE {row['ece']:.3f}"


@pytest.mark.slow
def test_in_period_wins_match_by_deal_age_with_never_closing_deals(
    default_in_quarter: pd.DataFrame,
) -> None:
    table = default_in_quarter
    bands = table.loc[table["cut"] == "deal age"].set_index("group")
    assert {"0-30 days", "31-90 days", "over 90 days"} <= set(bands.index)
    for group, row in bands.iterrows():
        if group == "unknown":
            continue
        ratio = row["predicted_wins"] / row["actual_wins"]
        assert 0.9 <= ratio <= 1.1, (
            f"{group}: predicted {row['predicted_wins']:.0f}, won {row['actual_wins']:.0f}"
        )
