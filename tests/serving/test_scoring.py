"""Per-deal scores for a period: past periods score zero, later periods only count later wins."""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.periods import Period
from models.baselines import HistoricalCloseModel
from serving.scoring import period_days, score_leads, score_opportunities, simple_flags


def _model_and_features() -> tuple[HistoricalCloseModel, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "stage": pd.array(rng.choice(["A", "B"], 300), dtype="string"),
            "amount": rng.uniform(1000, 5000, 300),
            "days_to_expected_close": rng.integers(-10, 60, 300).astype(float),
            "activities_30d": rng.integers(0, 5, 300).astype(float),
        },
        index=pd.Index([f"O{i}" for i in range(300)], name="opportunity_id"),
    )
    y = (rng.uniform(size=300) < 0.4).astype(int)
    return HistoricalCloseModel().fit(X, y, days_to_close=rng.integers(1, 200, 300)), X


def test_periods_relative_to_as_of() -> None:
    as_of = pd.Timestamp("2026-05-10")
    q = Period(pd.Timestamp("2026-05-01"), pd.Timestamp("2026-07-31"), "2026-Q2")
    assert period_days(q, as_of) == (-9, 82)
    model, X = _model_and_features()
    now = score_opportunities(model, X, as_of=as_of, period=q, model_version="3")
    assert list(now.columns) == [
        "opportunity_id",
        "p_win",
        "p_win_in_period",
        "expected_value",
        "flags",
        "top_factors",
        "model_version",
    ]
    assert (now["p_win_in_period"] <= now["p_win"] + 1e-12).all()
    np.testing.assert_allclose(
        now["expected_value"],
        X.loc[now["opportunity_id"], "amount"].to_numpy() * now["p_win_in_period"],
    )
    past = Period(pd.Timestamp("2026-02-01"), pd.Timestamp("2026-04-30"), "2026-Q1")
    assert (
        score_opportunities(model, X, as_of=as_of, period=past, model_version="3")[
            "p_win_in_period"
        ]
        == 0
    ).all()
    whole = Period(pd.Timestamp("2026-05-01"), pd.Timestamp("2026-10-31"), "h2")
    later = Period(pd.Timestamp("2026-08-01"), pd.Timestamp("2026-10-31"), "next")
    a = score_opportunities(model, X, as_of=as_of, period=whole, model_version="3")[
        "p_win_in_period"
    ]
    b = score_opportunities(model, X, as_of=as_of, period=later, model_version="3")[
        "p_win_in_period"
    ]
    np.testing.assert_allclose(a, now["p_win_in_period"] + b, atol=1e-12)


def test_flags_and_lead_ranking() -> None:
    _, X = _model_and_features()
    flags = simple_flags(X)
    assert flags[X["days_to_expected_close"] < 0].str.contains("expected close date passed").all()
    assert (flags[(X["days_to_expected_close"] >= 0) & (X["activities_30d"] > 0)] == "").all()

    class Flat:
        def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
            p = np.linspace(0.1, 0.5, len(X))
            return np.column_stack([1 - p, p])

    feats = pd.DataFrame(index=pd.Index(["a", "b", "c"], name="lead_id"))
    excluded = pd.Series([pd.NA, pd.NA, "do not contact"], index=["a", "b", "c"], dtype="string")
    ranked = score_leads(Flat(), feats, model_version="1", excluded=excluded)
    assert list(ranked["lead_id"]) == ["b", "a", "c"]
    assert list(ranked["rank"].astype("Float64").fillna(-1)) == [1, 2, -1]


def test_a_calendar_aware_model_scores_from_the_scoring_day(small_export) -> None:
    """The competing-risks close model gets the scoring day: its weeks ahead fall in the
    right part of the fiscal quarter (the quarter-end rush); older kinds are called as before."""
    from features import labels as feature_labels
    from features import opportunity as opportunity_features
    from features.periods import fiscal_quarter
    from features.snapshots import snapshot_dates
    from models.time_to_close import CompetingRisksCloseModel
    from serving.scoring import close_probabilities, takes_as_of

    export = small_export
    table = opportunity_features.build_training_set(export, dates=snapshot_dates(export))
    lab = feature_labels.opportunity_labels(export, table[["opportunity_id", "as_of"]])
    X = table.drop(columns=["opportunity_id", "as_of"])
    day = export.exported_at.normalize()
    end = day - pd.Timedelta(days=120)
    tr = (table["as_of"] <= end).to_numpy(dtype=bool)
    model = CompetingRisksCloseModel(
        categorical=opportunity_features.categorical_columns(X),
        fiscal_year_start_month=export.config.fiscal_year_start_month,
        n_estimators=40,
        learning_rate=0.1,
        max_training_rows=30_000,
    ).fit(
        X[tr],
        as_of=table["as_of"][tr],
        closed_at=lab["closed_at"][tr],
        won=lab["won"][tr],
        censor_at=end,
    )
    assert takes_as_of(model) and not takes_as_of(_model_and_features()[0])

    feats = opportunity_features.build(export, as_of=day)
    period = fiscal_quarter(day, export.config.fiscal_year_start_month)
    out = score_opportunities(model, feats, as_of=day, period=period, model_version="7")
    start, stop = period_days(period, day)
    p_win = model.predict_p_win(feats, as_of=day)
    expected = model.predict_in_period(
        feats, start_days=start, end_days=stop, p_win=p_win, as_of=day
    )
    np.testing.assert_allclose(out["p_win"].to_numpy(), p_win)
    np.testing.assert_allclose(out["p_win_in_period"].to_numpy(), expected)
    assert (out["p_win_in_period"] <= out["p_win"] + 1e-12).all()
    # the top factors are the model's own (won rather than lost), not empty
    assert (out["top_factors"].fillna("").str.len() > 0).mean() > 0.9
    # a period already over gives 0, whatever the model
    _, over = close_probabilities(model, feats, as_of=day, start_days=-90, end_days=-1)
    assert not over.any()


def test_a_listed_leads_own_columns_follow_it_whatever_the_rules_do(small_export) -> None:
    from features import labels, lead
    from models.sqo_likelihood import SQOLikelihoodModel
    from serving.lead_list import ListRules
    from serving.scoring import LEAD_COLUMNS, score_lead_list

    X = lead.build_training_set(small_export)
    lab = labels.lead_labels(small_export)
    decided = lab["decided"].reindex(X.index).to_numpy(dtype=bool, na_value=False)
    y = lab.loc[X.index[decided], "is_sqo"].to_numpy(dtype=int)
    model = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X), n_estimators=40, min_child_samples=50
    ).fit(X.loc[decided].drop(columns=["as_of"]), y)
    listed = small_export.leads.tail(40).drop(columns=["sqo_at", "meeting_at"])
    listed = listed.sample(frac=1.0, random_state=3).reset_index(drop=True)
    ids = listed["lead_id"].astype("string")
    # the list's own columns: one named as an output column, one of its own per lead
    listed["tier"] = pd.array("own-" + ids, dtype="string")
    listed["note"] = pd.array("note-" + ids, dtype="string")
    rules = ListRules(max_per_account=1, top=8)
    day = small_export.exported_at
    out, _ = score_lead_list(model, listed, model_version="7", as_of=day, rules=rules)
    own = [c if c not in LEAD_COLUMNS else f"list_{c}" for c in listed.columns if c != "lead_id"]
    assert list(out.columns) == [*LEAD_COLUMNS, *own]
    assert sorted(out["lead_id"]) == sorted(ids)
    kept = out["excluded_reason"].isna().to_numpy()
    assert 0 < kept.sum() <= 8 and not kept[int(kept.sum()) :].any()
    assert (out["note"] == "note-" + out["lead_id"]).all()
    assert (out["list_tier"] == "own-" + out["lead_id"]).all()
    by_id = listed.set_index(ids)
    for name in ("account_id", "created_at", "employees"):
        expected = by_id[name].reindex(out["lead_id"].to_numpy())
        pd.testing.assert_series_equal(
            out[name], expected.reset_index(drop=True), check_names=False, check_index=False
        )
    # a list that already has the prefixed name too: both columns are kept, each with its lead
    listed["list_tier"] = pd.array("mine-" + ids, dtype="string")
    twice, _ = score_lead_list(model, listed, model_version="7", as_of=day, rules=rules)
    assert list(twice.columns).count("list_tier") == 2
    pair = twice["list_tier"]
    assert set(pair.iloc[:, 0] + "|" + pair.iloc[:, 1]) == {
        f"own-{i}|mine-{i}" for i in twice["lead_id"]
    }
