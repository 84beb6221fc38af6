"""The SQO-likelihood model scores from one encoded matrix exactly as scikit-learn's path does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import labels, lead
from features.io import Export
from models.explain import fit_reason_tables, lead_reasons
from models.sqo_likelihood import SMALL_BATCH, SQOLikelihoodModel, encoded_matrix


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
