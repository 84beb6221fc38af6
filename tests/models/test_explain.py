"""Top factors: SHAP contributions add up to the margin, the right feature comes first, and the
texts read in sales terms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from models.baselines import HistoricalCloseModel, HistoricalLeadModel
from models.close_probability import CloseProbabilityModel
from models.explain import contributions, explain, factor_text, lightgbm_classifier
from models.lgbm import LGBMProbability

MINUS = "\u2212"


def _only_a(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """y depends on ``a`` only; ``b`` and ``segment`` are noise."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    X = pd.DataFrame(
        {
            "a": a,
            "b": rng.normal(size=n),
            "segment": pd.array(rng.choice(["SMB", "Mid-Market", "Enterprise"], n), dtype="string"),
        }
    )
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-3 * a))).astype(int)
    return X, y


@pytest.fixture(scope="module")
def only_a() -> LGBMProbability:
    X, y = _only_a(3000, 0)
    return LGBMProbability(
        categorical=["segment"], n_estimators=80, num_leaves=7, min_child_samples=40
    ).fit(X, y)


def test_contributions_add_up_to_the_raw_margin(only_a: LGBMProbability) -> None:
    X, _ = _only_a(200, 1)
    contrib, bias = contributions(only_a, X)
    assert list(contrib.columns) == ["a", "b", "segment"]
    np.testing.assert_allclose(
        contrib.sum(axis=1).to_numpy() + bias, only_a.decision_function(X), atol=1e-9
    )


def test_the_feature_that_drives_the_outcome_comes_first_with_its_sign(
    only_a: LGBMProbability,
) -> None:
    X = pd.DataFrame(
        {
            "a": [3.0, -3.0],
            "b": [0.0, 0.0],
            "segment": pd.array(["SMB", "Enterprise"], dtype="string"),
        },
        index=pd.Index(["high", "low"], name="opportunity_id"),
    )
    ex = explain(only_a, X, k=2)
    assert [row[0].feature for row in ex.factors] == ["a", "a"]
    assert ex.factors[0][0].contribution > 0 > ex.factors[1][0].contribution
    texts = ex.texts()
    assert list(texts.index) == ["high", "low"]
    assert texts["high"].startswith("a = 3 (+)")
    assert texts["low"].startswith(f"a = -3 ({MINUS})")
    records = ex.records()
    assert set(records[0][0]) == {"feature", "value", "contribution"}
    assert records[0][0]["value"] == 3.0 and len(records[0]) <= 2


def test_close_model_is_explained_by_its_uncalibrated_p_win_classifier() -> None:
    X, y = _only_a(3000, 2)
    Xc, yc = _only_a(1500, 3)
    model = CloseProbabilityModel(
        categorical=["segment"], n_estimators=60, num_leaves=5, min_child_samples=40
    ).fit(
        X,
        y,
        days_to_close=np.full(len(X), 30.0),
        X_cal=Xc,
        y_cal=yc,
        days_to_close_cal=np.full(len(Xc), 30.0),
    )
    assert lightgbm_classifier(model) is model.win_
    ex = explain(model, Xc.head(50))
    assert all(1 <= len(row) <= 3 for row in ex.factors)
    assert "horizon_days" not in {f.feature for row in ex.factors for f in row}
    extreme = Xc.assign(a=4.0).head(1)
    assert explain(model, extreme).factors[0][0].feature == "a"


def test_unseen_category_is_said_to_be_new(only_a: LGBMProbability) -> None:
    X = pd.DataFrame(
        {"a": [0.0], "b": [0.0], "segment": pd.array(["Public sector"], dtype="string")}
    )
    texts = [f.text for f in explain(only_a, X, k=3).factors[0]]
    seg = [t for t in texts if t.startswith("segment")]
    assert len(seg) == 1 and seg[0].startswith("segment Public sector (new to the model)")


@pytest.mark.parametrize(
    ("feature", "value", "contribution", "expected"),
    [
        ("close_date_pushes", 3.0, -0.2, f"close date pushed 3 times ({MINUS})"),
        ("close_date_pushes", 0.0, 0.1, "close date never pushed (+)"),
        ("days_since_last_activity", 41.0, -0.3, f"no activity for 41 days ({MINUS})"),
        ("days_since_last_activity", np.nan, -0.3, f"no activity recorded ({MINUS})"),
        ("stage", "Negotiation", 0.5, "stage Negotiation (+)"),
        ("forecast_category", "best_case", 0.2, "forecast category best case (+)"),
        ("owner_win_rate", 0.48, 0.2, "AE win rate 48% (+)"),
        ("segment", "Enterprise", -0.1, f"segment Enterprise ({MINUS})"),
        ("segment", None, -0.1, f"no segment recorded ({MINUS})"),
        (
            "days_to_expected_close",
            -12.0,
            -0.1,
            f"expected close date passed 12 days ago ({MINUS})",
        ),
        ("amount", 48200.0, 0.1, "amount 48k (+)"),
        ("activities_30d", 0.0, -0.1, f"no activity in the last 30 days ({MINUS})"),
        ("has_next_step", 0.0, -0.1, f"no next step ({MINUS})"),
        ("title_vp", 1.0, 0.4, "VP title (+)"),
        ("account_won_opportunities", 2.0, 0.4, "2 won deals at the account (+)"),
        ("source_signal_sqo_rate", 0.12, 0.4, "SQO rate of this source \u00d7 signal 12% (+)"),
        ("budget_band", "high", 0.1, "budget_band = high (+)"),
        ("budget_score", np.nan, -0.1, f"budget_score = missing ({MINUS})"),
    ],
)
def test_factor_texts(feature: str, value: object, contribution: float, expected: str) -> None:
    assert factor_text(feature, value, contribution) == expected


def test_fallback_models_explain_the_rate_they_use() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(
        {
            "stage": pd.array(rng.choice(["Discovery", "Proposal"], 400), dtype="string"),
            "segment": pd.array(rng.choice(["SMB", "Enterprise"], 400), dtype="string"),
        }
    )
    y = (rng.uniform(size=400) < 0.3).astype(int)
    close = HistoricalCloseModel().fit(X, y, days_to_close=np.full(400, 20.0))
    row = X.head(1)
    text = explain(close, row).texts().iloc[0]
    assert text.startswith(f"historical win rate of stage {row['stage'].iloc[0]} \u00d7 segment")
    assert text.endswith("%")
    unknown = pd.DataFrame({"stage": pd.array(["Legal"], dtype="string")})
    assert explain(close, unknown).texts().iloc[0].startswith("historical win rate overall")

    leads = pd.DataFrame(
        {
            "source": pd.array(rng.choice(["webinar", "outbound"], 400), dtype="string"),
            "signal_type": pd.array(rng.choice(["funding", "hiring"], 400), dtype="string"),
        }
    )
    lead_model = HistoricalLeadModel().fit(leads, y)
    assert (
        explain(lead_model, leads.head(3))
        .texts()
        .str.startswith("historical SQO rate of source ")
        .all()
    )


def test_other_models_get_no_explanation() -> None:
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    ex = explain(model, X)
    assert ex.factors == [[], [], [], []] and (ex.texts() == "").all()
