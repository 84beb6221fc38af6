"""The SQO-likelihood model on real leads, against the source × signal baseline.

UCI bank marketing (outbound calls to a bank's clients; "subscribed" plays the SQO), imported by
``features.adapters.bank_marketing`` — ``duration`` dropped, since it is only known once the
call is over — and split by date as training splits leads (``training.splits.split_leads``:
the earliest leads train the model, the next early-stop and calibrate it, the latest judge
it). The baseline is the historical rate by source × signal fitted on the training and
calibration leads. The campaigns drift heavily over the 2.5 years (the subscription rate of the
last months is several times the first months'), so no model fitted on the past is well
calibrated on the last slice; what ``pipecast train`` serves should at least rank as well as the
baseline without being worse on Brier. The engineered model alone does not (its figures are
logged beside the baseline's); the training gate, judging it against the same baseline, then
serves the baseline. The figures are logged (``-o log_cli=true`` shows them).

The Maven CRM import has deals only, no leads: its test says so and skips.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import labels, lead
from features.adapters import bank_marketing, maven_crm
from features.io import Export, write_export
from models import SQO_MODEL_NAME
from models.baselines import HistoricalLeadModel
from models.calibration import summarize
from models.explain import fit_reason_tables, top_reason_agreement
from models.registry import load_champion
from models.sqo_likelihood import REFIT_MIN_AGREEMENT, SQOLikelihoodModel
from pipecast.config import Settings
from training import splits
from training.train import run_training

pytestmark = pytest.mark.real_data
log = logging.getLogger(__name__)

#: how much worse (Brier) than the baseline the model may be on the latest slice
BRIER_TOLERANCE = 0.002


def _date_split(export: Export) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """Settled leads as of their creation, split by creation date as training splits them."""
    table = lead.build_training_set(export)
    lab = labels.lead_labels(export)
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False)
    table = table.loc[decided]
    y = lab.loc[table.index, "is_sqo"].to_numpy(dtype=int)
    slices, info = splits.split_leads(
        table["as_of"], window_days=export.config.sqo_window_days, n_rows=len(table), y=y
    )
    assert info.get("split", "time") == "time"  # by date, not at random
    s = slices.to_numpy(dtype=object, na_value="")
    X = table.drop(columns=["as_of"]).reset_index(drop=True)
    return {
        name: (X.loc[s == key].reset_index(drop=True), y[s == key])
        for name, key in (
            ("train", splits.TRAIN),
            ("calibrate", splits.CALIBRATION),
            ("test", splits.TEST),
        )
    }


@pytest.fixture(scope="module")
def bank_figures(real_data_dir: Path) -> dict[str, Any]:
    """The model and the baseline judged on the latest slice of the bank leads."""
    src = real_data_dir / "uci_bank_marketing"
    if not src.is_dir():
        pytest.skip("uci_bank_marketing is not in the real data folder")
    export = bank_marketing.convert(src)
    assert export.leads is not None
    split = _date_split(export)
    X, y = split["train"]
    Xc, yc = split["calibrate"]
    Xt, yt = split["test"]
    model = SQOLikelihoodModel(categorical=lead.categorical_columns(X)).fit(
        X, y, X_cal=Xc, y_cal=yc
    )
    # trees that combine features: their reasons depend on where a lead sits in the others
    combining = SQOLikelihoodModel(
        categorical=lead.categorical_columns(X), additive=False, num_leaves=7
    ).fit(X, y, X_cal=Xc, y_cal=yc)
    baseline = HistoricalLeadModel().fit(pd.concat([X, Xc], ignore_index=True), [*y, *yc])
    got = summarize(yt, model.predict_proba(Xt)[:, 1])
    base = summarize(yt, baseline.predict_proba(Xt)[:, 1])
    for name, m in (("model", got), ("source x signal", base)):
        log.warning(
            "bank leads %-16s n %d  base rate %.3f  mean predicted %.3f  AUC %.3f  "
            "top-decile lift %.2f  Brier %.4f  ECE %.3f",
            name,
            m["n"],
            m["base_rate"],
            m["mean_predicted"],
            m["auc"],
            m["top_decile_lift"],
            m["brier"],
            m["ece"],
        )
    return {
        "export": export,
        "split": split,
        "model": model,
        "combining": combining,
        "got": got,
        "base": base,
    }


def test_bank_marketing_leads_are_judged_out_of_time_without_duration(
    bank_figures: dict[str, Any],
) -> None:
    export, split = bank_figures["export"], bank_figures["split"]
    # the call's length is only known after the call: it must not reach the features
    assert not any("duration" in c for c in export.leads.columns)
    assert not any("duration" in c for c in split["train"][0].columns)
    # the drift the figures must be read against: the SQO rate climbs slice after slice
    rates = [float(np.mean(split[k][1])) for k in ("train", "calibrate", "test")]
    log.warning("bank leads SQO rate train / calibrate / test: %s", rates)
    assert rates[0] < rates[1] < rates[2]
    got, base = bank_figures["got"], bank_figures["base"]
    for m in (got, base):
        assert np.isfinite([m["auc"], m["brier"], m["ece"], m["top_decile_lift"]]).all()
    # the baseline ranks: earlier campaigns' outcomes carry over (it is the bar to clear)
    assert base["auc"] > 0.55 and base["top_decile_lift"] > 1.5


@pytest.fixture(scope="module")
def bank_served(
    real_data_dir: Path, tmp_path_factory: pytest.TempPathFactory, bank_figures: dict[str, Any]
) -> dict[str, Any]:
    """What ``pipecast train`` serves for the bank leads, read back from a fresh registry and
    scored on the latest slice."""
    root = tmp_path_factory.mktemp("bank-train")
    write_export(bank_figures["export"], root / "export")
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    summary = run_training(settings, data_dir=root / "export")
    report = summary.model(SQO_MODEL_NAME)
    served, info = load_champion(settings, SQO_MODEL_NAME)
    Xt, yt = bank_figures["split"]["test"]
    got = summarize(yt, served.predict_proba(Xt)[:, 1])
    assert info["version"] == report.champion_version
    log.warning(
        "bank leads served (%s, v%s): AUC %.3f  Brier %.4f  ECE %.3f; gate: %s; feature groups: %s",
        report.baseline_champion or report.registered,
        report.champion_version,
        got["auc"],
        got["brier"],
        got["ece"],
        report.gate.reason if report.gate is not None else "-",
        report.feature_groups.as_dict() if report.feature_groups is not None else "-",
    )
    return {"report": report, "served": served, "got": got}


def test_bank_marketing_served_model_is_not_worse_than_the_baseline(
    bank_figures: dict[str, Any], bank_served: dict[str, Any]
) -> None:
    """Training serves, on the latest bank leads, nothing worse than the source x signal rates
    of the earlier leads.

    The engineered model alone is worse there (logged by :func:`bank_figures`: AUC 0.52, Brier
    0.231 against the baseline's AUC 0.63, Brier 0.217): the earliest slice is the first
    campaign, where no client had been contacted before, so the prior campaign's outcome (the
    baseline's signal) never varies in the training rows, and the model splits on the contact
    channel alone. Its trees grown again on the training and calibration leads are not kept
    (see the next test). So the gate, whose baselines learn from the training and calibration
    leads as the model does, refuses the model and a fresh registry serves the fitted
    baseline.
    """
    base, report = bank_figures["base"], bank_served["report"]
    got = bank_served["got"]
    metrics = report.metrics["sqo"]
    # the gate's bar is the baseline of the training and calibration leads: the model's own
    # figures on training's test slice, beside it
    assert metrics["source_signal_rate"]["auc"] > 0.55
    assert report.gate is not None
    assert report.gate.passed == (
        metrics["model"]["brier"] < metrics["source_signal_rate"]["brier"]
    )
    if not report.gate.passed:  # a fresh registry: the best baseline serves
        assert report.champion_version == report.baseline_version is not None
    assert got["brier"] <= base["brier"] + BRIER_TOLERANCE
    assert got["auc"] >= base["auc"]


def test_bank_marketing_trees_are_not_grown_again_when_they_would_rank_otherwise(
    bank_figures: dict[str, Any],
) -> None:
    """The earliest bank leads are one campaign: the trees early-stopped on the next leads and
    the same rounds grown on every lead order those next leads differently, so the calibration
    map fitted for the first would not describe the second; the early-stopped trees are
    served."""
    model = bank_figures["model"]
    assert model.refit_agreement_ is not None and model.refit_agreement_ < REFIT_MIN_AGREEMENT
    assert model.refit_rounds_ is None
    assert model.clf_.n_iter_ == model.early_stopped_rounds_


def test_bank_marketing_reason_tables_agree_with_exact_reasons(
    bank_figures: dict[str, Any],
) -> None:
    """Tables fitted on part of a list (as scoring fits them) explain the rest of it as exact
    TreeSHAP does. With trees that combine features, tables fitted on the training leads do
    not, on a list that has drifted; the served model's trees each split on one feature, so a
    feature's contribution does not depend on the others and any tables covering its values
    are exact."""
    split = bank_figures["split"]
    latest = split["test"][0]
    half = len(latest) // 2
    found = {}
    for name in ("model", "combining"):
        model = bank_figures[name]
        tables = fit_reason_tables(model, latest.iloc[:half])
        from_training = fit_reason_tables(model, split["train"][0])
        assert tables is not None and from_training is not None
        found[name] = (
            top_reason_agreement(model, latest.iloc[half:], tables),
            top_reason_agreement(model, latest.iloc[half:], from_training),
        )
        log.warning(
            "bank leads (%s): top reason of the tables = exact TreeSHAP's on %.1f%% (tables "
            "fitted on the list), %.1f%% (tables fitted on the training leads)",
            name,
            100 * found[name][0],
            100 * found[name][1],
        )
    agreement, stale = found["combining"]
    assert agreement >= 0.9
    assert agreement > stale
    assert min(found["model"]) >= 0.99


def test_maven_crm_has_no_leads_to_score(real_data_dir: Path) -> None:
    src = real_data_dir / "maven_crm"
    if not src.is_dir():
        pytest.skip("maven_crm is not in the real data folder")
    export = maven_crm.convert(src)
    if export.leads is not None and len(export.leads):
        pytest.fail("the Maven import now has leads: judge the SQO model on them here")
    pytest.skip("the Maven CRM import has deals only, no leads: no lead-scoring figures")
