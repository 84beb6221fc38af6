"""Leakage audit: no single feature may predict the outcome almost perfectly.

On a simulated export, a small LightGBM model is trained on each feature alone, on the earlier
snapshots, and scored on the later ones (a time split, as the models are). A label hiding in a
feature (a close date, a final stage, a post-list meeting) shows up as an AUC near 1; honest
features of a noisy sales process stay far below. A planted leaky column checks that the audit
itself can see one.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from features import labels, lead, opportunity, snapshots
from features.io import Export

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)
MAX_AUC = 0.95


@pytest.fixture(scope="module")
def simulated() -> Export:
    """A mid-sized simulated export: bigger than the shared small one, so AUCs are stable."""
    synthetic = pytest.importorskip("features.synthetic")
    return synthetic.simulate(seed=11, n_opportunities=4000, n_leads=8000).export  # type: ignore[no-any-return]


def single_feature_aucs(
    table: pd.DataFrame, y: pd.Series, when: pd.Series, *, skip: tuple[str, ...]
) -> pd.Series:
    """AUC on the latest 30% (by ``when``) of a model trained on one column, for each column."""
    lgb = pytest.importorskip("lightgbm")
    from sklearn.metrics import roc_auc_score

    cut = when.quantile(0.7)
    train = (when < cut).to_numpy()
    test = ~train
    rng = np.random.default_rng(0)
    # a sample of the training rows is plenty for one feature and keeps the audit quick
    train_rows = np.flatnonzero(train)
    if len(train_rows) > 15000:
        train_rows = np.sort(rng.choice(train_rows, 15000, replace=False))
    aucs = {}
    for name in table.columns:
        if name in skip:
            continue
        x = table[[name]]
        if pd.api.types.is_string_dtype(x[name]):
            x = x.astype("category")
        if x[name].notna().sum() == 0:
            continue
        model = lgb.LGBMClassifier(n_estimators=40, num_leaves=15, n_jobs=1, verbose=-1)
        model.fit(x.iloc[train_rows], y.iloc[train_rows])
        aucs[name] = roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])
    return pd.Series(aucs).sort_values(ascending=False)


def test_no_opportunity_feature_predicts_winning_alone(simulated: Export) -> None:
    dates = snapshots.snapshot_dates(simulated)
    table = opportunity.build_training_set(simulated, dates=dates)
    outcome = labels.opportunity_labels(simulated, table[["opportunity_id", "as_of"]])
    known = outcome["won"].notna().to_numpy()
    table, y = table[known].reset_index(drop=True), outcome.loc[known, "won"].reset_index(drop=True)
    # the audit must be able to see a leak: the label with a little noise
    rng = np.random.default_rng(1)
    table["planted_leak"] = np.where(rng.random(len(y)) < 0.03, 1 - y, y)
    aucs = single_feature_aucs(table, y, table["as_of"], skip=("opportunity_id", "as_of"))
    log.info("single-feature AUC for won (%d snapshots):\n%s", len(y), aucs.round(3).to_string())
    assert aucs["planted_leak"] > MAX_AUC
    honest = aucs.drop("planted_leak")
    assert (honest <= MAX_AUC).all(), honest[honest > MAX_AUC]


def test_no_lead_feature_predicts_sqo_alone(simulated: Export) -> None:
    table = lead.build_training_set(simulated)
    outcome = labels.lead_labels(simulated)
    known = outcome["decided"].to_numpy()
    table, y = (
        table[known].reset_index(drop=True),
        outcome.loc[known, "is_sqo"].reset_index(drop=True),
    )
    aucs = single_feature_aucs(table, y, table["as_of"], skip=("as_of",))
    log.info("single-feature AUC for is_sqo (%d leads):\n%s", len(y), aucs.round(3).to_string())
    assert (aucs <= MAX_AUC).all(), aucs[aucs > MAX_AUC]
