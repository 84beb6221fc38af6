"""The SQO-likelihood model scores from one encoded matrix exactly as scikit-learn's path does;
its served trees are grown again on the earlier and the later leads, under the calibration map
fitted on the later leads' out-of-sample scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import labels, lead
from features.io import Export
from models.explain import fit_reason_tables, lead_reasons
from models.sqo_likelihood import (
    REFIT_MIN_AGREEMENT,
    SMALL_BATCH,
    SQOLikelihoodModel,
    encoded_matrix,
)


@pytest.fixture(scope="module")
def table(small_export: Export) -> tuple[pd.DataFrame, np.ndarray]:
    X = lead.build_training_set(small_export)
    lab = labels.lead_labels(small_export)
    decided = lab["decided"].reindex(X.index).to_numpy(dtype=bool, na_value=False)
    y = lab.loc[X.index[decided], "is_sqo"].to_numpy(dtype=int)
    return X.loc[decided].drop(columns=["as_of"]), y


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic", "none"])
def test_encoded_scores_equal_the_calibrated_classifiers_own(
    table: tuple[pd.DataFrame, np.ndarray], calibration: str
) -> None:
    X, y = table
    late = np.arange(len(X)) >= int(0.7 * len(X))
    model = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X),
        n_estimators=60,
        learning_rate=0.1,
        min_child_samples=50,
        calibration=calibration,
    ).fit(X[~late], y[~late], X_cal=X[late], y_cal=y[late])
    # a list as it comes: a category never seen in training, missing values, a column absent
    listed = X.copy()
    listed.loc[listed.index[:40], "industry"] = "Space Mining"
    listed.loc[listed.index[40:80], "sdr_id"] = pd.NA
    listed.loc[listed.index[80:120], "employees"] = np.nan
    listed = listed.drop(columns=["sequence"])
    reference = (
        model.calibrator_.predict_proba(listed)[:, 1]
        if model.calibrator_ is not None
        else model.clf_.predict_proba(listed)[:, 1]
    )
    for rows in (listed, listed.head(1), listed.head(SMALL_BATCH + 1)):
        got = model.predict_proba(rows)
        assert got.shape == (len(rows), 2)
        np.testing.assert_allclose(got[:, 1], reference[: len(rows)], rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.sum(axis=1), 1.0)


def test_the_matrix_holds_the_encoders_codes(table: tuple[pd.DataFrame, np.ndarray]) -> None:
    X, y = table
    model = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X), n_estimators=20, calibration="none"
    ).fit(X, y)
    listed = X.head(300).copy()
    listed.loc[listed.index[:5], "industry"] = "Space Mining"
    frame = model.clf_.encoder_.transform(listed)
    for small in (listed.head(3), listed):  # dict look-ups and the vectorised path
        matrix = encoded_matrix(model.clf_.encoder_, small)
        expected = frame.loc[small.index]
        for j, name in enumerate(model.clf_.encoder_.columns_):
            column = expected[name]
            if isinstance(column.dtype, pd.CategoricalDtype):
                want = column.cat.codes.to_numpy(dtype=np.float64)
                want[want < 0] = np.nan
            else:
                want = column.to_numpy(dtype=np.float64)
            np.testing.assert_array_equal(matrix[:, j], want, err_msg=name)
    industry = list(model.clf_.encoder_.columns_).index("industry")
    # a category never seen in training is missing to the model, never an error
    assert np.isnan(encoded_matrix(model.clf_.encoder_, listed.head(5))[:, industry]).all()


def test_reasons_from_the_scoring_matrix_equal_reasons_encoded_again(
    table: tuple[pd.DataFrame, np.ndarray],
) -> None:
    X, y = table
    model = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X), n_estimators=40, calibration="none"
    ).fit(X, y)
    listed = X.tail(400)
    matrix = model.encode(listed)
    tables = fit_reason_tables(model, X.head(1000))
    exact = np.arange(len(listed)) < 50
    again = lead_reasons(model, listed, tables=tables, exact=exact)
    reused = lead_reasons(model, listed, tables=tables, exact=exact, encoded=matrix)
    pd.testing.assert_series_equal(again, reused)
    assert (reused != "").all()


def _split_features(tree: dict) -> set[int]:
    """The feature indices a LightGBM tree (``dump_model`` form) splits on."""
    found: set[int] = set()
    stack = [tree["tree_structure"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            found.add(int(node["split_feature"]))
            stack.extend((node["left_child"], node["right_child"]))
    return found


@pytest.mark.parametrize("additive", [True, False])
def test_each_tree_splits_on_one_feature_unless_told_otherwise(
    table: tuple[pd.DataFrame, np.ndarray], additive: bool
) -> None:
    X, y = table
    model = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X),
        additive=additive,
        num_leaves=7,
        n_estimators=60,
        learning_rate=0.1,
        min_child_samples=20,
        calibration="none",
    ).fit(X, y)
    trees = model.clf_.booster_.dump_model()["tree_info"]
    widths = [len(_split_features(t)) for t in trees]
    assert max(widths) >= 1  # the model learned something
    if additive:
        assert max(widths) == 1
    else:
        assert max(widths) > 1  # free trees do combine features on the same table


def test_the_additive_models_log_odds_are_a_sum_of_one_curve_per_feature(
    table: tuple[pd.DataFrame, np.ndarray],
) -> None:
    """Changing one feature moves a lead's log-odds by the same amount whatever the others."""
    X, y = table
    model = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X),
        n_estimators=80,
        learning_rate=0.1,
        min_child_samples=20,
        calibration="none",
    ).fit(X, y)
    booster, n_iter = model.clf_.booster_, model.clf_.n_iter_
    top = model.feature_importances_.index[:2].tolist()
    a, b = top
    rows = X.head(200).reset_index(drop=True)

    def margin(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            booster.predict(model.encode(frame), num_iteration=n_iter, raw_score=True)
        )

    a_values = X[a].dropna().unique()
    b_values = X[b].dropna().unique()
    moved_a = rows.assign(**{a: a_values[0]})
    moved_a2 = rows.assign(**{a: a_values[-1]})
    effect_a = margin(moved_a2) - margin(moved_a)
    # the same change of a on leads whose b is set to another value
    effect_a_other_b = margin(moved_a2.assign(**{b: b_values[-1]})) - margin(
        moved_a.assign(**{b: b_values[-1]})
    )
    assert np.ptp(effect_a) < 1e-9  # the same for every lead
    np.testing.assert_allclose(effect_a, effect_a_other_b, rtol=0, atol=1e-9)


def test_a_champion_saved_before_the_additive_option_loads_as_it_was_grown() -> None:
    import pickle

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = (X["a"] + rng.normal(size=400) > 0).astype(int).to_numpy()
    model = SQOLikelihoodModel(additive=False, n_estimators=20, min_child_samples=20).fit(X, y)
    state = dict(model.__dict__)
    # as pickled before the options existed
    for name in ("additive", "refit", "early_stopped_rounds_", "refit_rounds_", "refit_shift_"):
        del state[name]
    del state["refit_agreement_"]
    old = SQOLikelihoodModel.__new__(SQOLikelihoodModel)
    old.__setstate__(state)
    assert old.get_params()["additive"] is False
    assert old.get_params()["refit"] is False
    again = pickle.loads(pickle.dumps(old))
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic"])
def test_the_served_trees_are_grown_again_on_every_lead_under_the_same_map(
    table: tuple[pd.DataFrame, np.ndarray], calibration: str
) -> None:
    X, y = table
    late = np.arange(len(X)) >= int(0.7 * len(X))
    Xe, ye = X[~late].reset_index(drop=True), y[~late]
    Xc, yc = X[late].reset_index(drop=True), y[late]
    settings: dict[str, Any] = dict(
        categorical=lead.categorical_columns(X),
        n_estimators=300,
        learning_rate=0.1,
        min_child_samples=50,
        calibration=calibration,
    )
    refit = SQOLikelihoodModel(**settings).fit(Xe, ye, X_cal=Xc, y_cal=yc)
    early = SQOLikelihoodModel(**settings, refit=False).fit(Xe, ye, X_cal=Xc, y_cal=yc)
    rounds = early.clf_.n_iter_
    assert 1 < rounds < 300  # early stopping did stop
    assert refit.early_stopped_rounds_ == early.early_stopped_rounds_ == rounds
    assert refit.refit_rounds_ == refit.clf_.n_iter_ == rounds and early.refit_rounds_ is None
    assert refit.refit_agreement_ is not None and refit.refit_agreement_ >= REFIT_MIN_AGREEMENT
    # the served trees are those grown on every lead with the early-stopped number of rounds
    again = refit._classifier(rounds).fit(pd.concat([Xe, Xc], ignore_index=True), [*ye, *yc])
    r2 = refit.clf_.decision_function(X)
    np.testing.assert_allclose(r2, again.decision_function(X), rtol=0, atol=1e-12)
    assert np.abs(r2 - early.clf_.decision_function(X)).max() > 1e-3
    # the map is the one fitted on the earlier trees' scores of the later leads, moved by the
    # mean change of those leads' margins
    r1_late, r2_late = early.clf_.decision_function(Xc), refit.clf_.decision_function(Xc)
    assert refit.refit_shift_ == pytest.approx(float(np.mean(r2_late - r1_late)), abs=1e-12)
    assert refit.refit_shift_ != 0.0
    (part,) = early.calibrator_.calibrated_classifiers_
    (fitted_map,) = part.calibrators
    want = fitted_map.predict(r2 - refit.refit_shift_)
    np.testing.assert_allclose(refit.predict_proba(X)[:, 1], want, rtol=0, atol=1e-12)
    # the later leads' planned SQOs stay those of the calibrated earlier trees (within 2%)
    planned = refit.predict_proba(Xc)[:, 1].sum() / early.predict_proba(Xc)[:, 1].sum()
    assert abs(planned - 1.0) <= 0.02
    # saved and loaded, it scores the same
    import pickle

    loaded = pickle.loads(pickle.dumps(refit))
    np.testing.assert_allclose(loaded.predict_proba(X), refit.predict_proba(X), atol=1e-12)


def test_trees_that_order_the_later_leads_otherwise_are_not_served() -> None:
    """When what drove the earlier leads reverses later, the trees grown on every lead rank the
    later leads unlike the early-stopped ones, whose calibration map would not describe them:
    the early-stopped trees are served, as without the refit."""
    rng = np.random.default_rng(0)

    def leads(n: int, weight: float) -> tuple[pd.DataFrame, np.ndarray]:
        X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
        p = 1.0 / (1.0 + np.exp(-(-1.5 + weight * X["a"].to_numpy())))
        return X, (rng.random(n) < p).astype(int)

    X, y = leads(3000, 1.0)
    Xc, yc = leads(3000, -2.0)
    settings: dict[str, Any] = dict(n_estimators=300, learning_rate=0.1, min_child_samples=20)
    model = SQOLikelihoodModel(**settings).fit(X, y, X_cal=Xc, y_cal=yc)
    early = SQOLikelihoodModel(**settings, refit=False).fit(X, y, X_cal=Xc, y_cal=yc)
    assert model.refit_agreement_ is not None and model.refit_agreement_ < REFIT_MIN_AGREEMENT
    assert model.refit_rounds_ is None and model.refit_shift_ == 0.0
    both = pd.concat([X, Xc], ignore_index=True)
    np.testing.assert_allclose(model.predict_proba(both), early.predict_proba(both), atol=1e-12)
