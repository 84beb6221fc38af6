"""Lead reasons in a BDR's words: the phrases, strongest first, and what holds a lead back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import labels, lead
from features.io import Export
from models.explain import (
    _LEAD_PHRASES,
    LEAD_REASON_GROUPS,
    MIN_REASON,
    _reason_groups,
    contributions,
    lead_reasons,
    lightgbm_classifier,
)
from models.sqo_likelihood import SQOLikelihoodModel


@pytest.fixture(scope="module")
def sqo_model(small_export: Export) -> SQOLikelihoodModel:
    table = lead.build_training_set(small_export)
    lab = labels.lead_labels(small_export)
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False)
    X = table.loc[decided].drop(columns=["as_of"]).reset_index(drop=True)
    y = lab.loc[table.index[decided], "is_sqo"].to_numpy(dtype=int)
    return SQOLikelihoodModel(
        categorical=lead.categorical_columns(X),
        n_estimators=120,
        learning_rate=0.1,
        min_child_samples=50,
        calibration="none",
    ).fit(X, y)


def test_phrases_read_like_a_bdr_talks() -> None:
    X = pd.DataFrame(
        {
            "seniority": pd.array(["VP", None, "Individual Contributor", None], dtype="string"),
            "title_vp": [1.0, 0.0, 0.0, np.nan],
            "title_director": [0.0, 1.0, 0.0, np.nan],
            "title_sales": [1.0, 1.0, 0.0, np.nan],
            "title_operations": [0.0, 1.0, 0.0, np.nan],
            "title_finance": [0.0, 0.0, 1.0, np.nan],
            "employees": [948.0, 44692.0, 45.0, np.nan],
            "signal_type": pd.array(["hiring", None, "intent_surge", None], dtype="string"),
            "sequence": pd.array(["signal-personal", "cold-6-touch", None, None], dtype="string"),
            "source": pd.array(["inbound", "outbound", "webinar", "trade show"], dtype="string"),
            "account_open_opportunities": [1.0, 0.0, 3.0, np.nan],
            "account_won_opportunities": [2.0, 0.0, 1.0, np.nan],
            "account_leads_before": [3.0, 4.0, 0.0, np.nan],
            "account_sqos_before": [0.0, 2.0, 0.0, np.nan],
            "days_since_last_contacted": [45.0, np.nan, 1.0, 0.0],
        }
    )
    said = {name: list(fn(X)) for name, fn in _LEAD_PHRASES.items()}
    assert said["persona"] == [
        "VP in sales at a 950-person company",
        "Director in RevOps at a 45,000-person company",
        "individual contributor in finance at a 45-person company",
        "no title or company size on record",
    ]
    assert said["signal"] == [
        "buying signal: hiring",
        "no buying signal (sequence cold-6-touch)",
        "buying signal: intent surge",
        "no buying signal",
    ]
    assert said["source"] == [
        "inbound request",
        "cold outbound",
        "webinar attendee",
        "source: trade show",
    ]
    assert said["open_deal"] == [
        "account already has an open deal",
        "no open deal at the account",
        "account already has 3 open deals",
        "account not in the CRM yet",
    ]
    assert said["customer"][:3] == [
        "existing customer (2 won deals)",
        "not a customer yet",
        "existing customer (1 won deal)",
    ]
    assert said["account_history"][:3] == [
        "3 earlier leads at the account, none an SQO",
        "2 earlier SQOs at the account",
        "first lead at the account",
    ]
    assert said["contact"] == [
        "last contacted 45 days ago",
        "never contacted before",
        "last contacted yesterday",
        "contacted today",
    ]


def test_reasons_come_strongest_first_with_what_holds_the_lead_back(
    small_export: Export, sqo_model: SQOLikelihoodModel
) -> None:
    assert small_export.leads is not None
    X = lead.build(small_export, as_of=small_export.exported_at, leads=small_export.leads.head(300))
    reasons = lead_reasons(sqo_model, X)
    assert len(reasons) == 300 and (reasons.str.len() > 0).all()
    # recompute each lead's reason weights from the SHAP values, independently of the texts
    contrib, _ = contributions(lightgbm_classifier(sqo_model), X)
    names, members = _reason_groups(list(contrib.columns))
    weights = np.column_stack([contrib[m].sum(axis=1).to_numpy() for m in members])
    checked_up = checked_down = 0
    for i in range(len(X)):
        parts = reasons.iloc[i].split("; ")
        ups = [p for p in parts if not p.startswith(("but ", "held back: "))]
        downs = [
            p.split(": ", 1)[-1] if p.startswith("held") else p[4:] for p in parts if p not in ups
        ]
        order = np.argsort(-weights[i], kind="stable")
        expected_up = [
            _phrase(names[g], X.iloc[[i]]) for g in order[:3] if weights[i, g] >= MIN_REASON
        ]
        if expected_up:
            assert ups == expected_up
            checked_up += 1
        worst = int(np.argmin(weights[i]))
        if weights[i, worst] <= -MIN_REASON:
            assert downs == [_phrase(names[worst], X.iloc[[i]])]
            checked_down += 1
        else:
            assert downs == []
    assert checked_up > 250 and checked_down > 100


def _phrase(name: str, row: pd.DataFrame) -> str:
    return str(_LEAD_PHRASES[name](row)[0]) if name in _LEAD_PHRASES else "?"


def test_every_grouped_feature_is_a_lead_feature() -> None:
    from features.lead import ACCOUNT_FEATURES, CATEGORICAL, RATE_FEATURES, TITLE_FLAGS

    known = {
        *ACCOUNT_FEATURES,
        *CATEGORICAL,
        *RATE_FEATURES,
        *TITLE_FLAGS,
        "employees",
        "log_annual_revenue",
        "days_since_last_contacted",
    }
    grouped = [f for feats in LEAD_REASON_GROUPS.values() for f in feats]
    assert set(grouped) <= known and len(grouped) == len(set(grouped))


def test_reason_codes_name_each_distinct_text_once(
    small_export: Export, sqo_model: SQOLikelihoodModel
) -> None:
    from models.explain import lead_reason_codes

    assert small_export.leads is not None
    X = lead.build(small_export, as_of=small_export.exported_at, leads=small_export.leads.head(400))
    expected = lead_reasons(sqo_model, X)
    twice = pd.concat([X, X])  # every lead listed twice: its text is made once
    codes, texts = lead_reason_codes(sqo_model, twice)
    assert codes.shape == (800,) and len(texts) <= 400
    assert (codes[:400] == codes[400:]).all()
    assert texts[codes].tolist() == expected.tolist() * 2
    # one lead at a time (no repeated values to share) gives each lead the same text
    for i in range(0, 400, 37):
        assert lead_reasons(sqo_model, X.iloc[[i]]).iloc[0] == expected.iloc[i]


def test_a_few_leads_are_phrased_as_a_whole_list_phrases_them(
    small_export: Export, sqo_model: SQOLikelihoodModel
) -> None:
    # a request's handful of leads is phrased from plain arrays, a list's distinct values
    # from its frame: every lead must read the same either way, odd cells included
    assert small_export.leads is not None
    X = lead.build(small_export, as_of=small_export.exported_at, leads=small_export.leads.head(300))
    rng = np.random.default_rng(5)
    X = X.copy()
    for name in X.columns:
        blank = rng.random(len(X)) < 0.15
        if isinstance(X[name].dtype, pd.StringDtype):
            odd = rng.random(len(X)) < 0.1
            X[name] = X[name].mask(odd, " Brand_New Value ").mask(blank, pd.NA)
        else:
            X[name] = X[name].mask(blank, np.nan)
    whole = lead_reasons(sqo_model, X).tolist()
    assert len(set(whole)) > 50 and "" not in whole
    few = [t for i in range(0, 300, 3) for t in lead_reasons(sqo_model, X.iloc[i : i + 3])]
    assert few == whole
