"""``pipecast train``: one entry point that fits, evaluates, logs, registers and gates both models.

For each model (close probability from the opportunities, SQO likelihood from the leads):

1. point-in-time features and labels from the export as known at ``as_of`` (default: the export
   date; an earlier ``--as-of`` first cuts the export there, so nothing later is seen);
2. a time split (``training.splits``): train on the earlier slice, calibrate (and stop boosting)
   on the next, test on the last;
3. the baselines fitted on the training slice (for leads, on the training and calibration
   slices, which the SQO model learns from too) and scored on the same test rows
   (``models.baselines``); with too little history a baseline *is* the model (flagged);
4. the plain challenger (``models.plain``): the same model on the raw declared columns only,
   fitted and calibrated on the same slices; when its test Brier is lower it is the model
   registered, and the summary says so;
5. evaluation overall, by segment and by stage (by source for leads) and by calendar month,
   charts, and the current champion re-scored on the same test rows;
6. MLflow: one parent run, one child run per model, the model registered, its version tagged,
   and the ``champion`` alias moved only when the gate (``training.gates``) passes. When it does
   not and there is no champion yet, the baseline with the best test Brier is registered as
   champion (``kind=baseline``), so that scoring works after every train.

Leads with an outcome but no dates get a stratified random split instead of a time split, and
every report of such a model says so (``training.splits.RANDOM_SPLIT_NOTE``).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from features import labels as feature_labels
from features import lead as lead_features
from features import opportunity as opportunity_features
from features.errors import InputError
from features.io import Export, read_export
from features.periods import parse_date
from features.report import earliest_date
from features.snapshots import snapshot_dates
from features.training_table import as_known_at
from models import CLOSE_MODEL_NAME, SQO_MODEL_NAME
from models.baselines import (
    HistoricalCloseModel,
    HistoricalLeadModel,
    HistoricalRateBaseline,
    InPeriodShareBaseline,
    StageProbabilityBaseline,
)
from models.feature_selection import GroupSelection
from models.plain import PlainCloseModel, PlainSQOModel, raw_lead_columns, raw_opportunity_columns
from models.sqo_likelihood import SQOLikelihoodModel
from models.survival import CumulativeIncidenceCloseModel, incidence_on_snapshots
from models.time_to_close import CompetingRisksCloseModel, fit_on_time_split
from pipecast.config import Settings
from training import evaluate, evaluate_time, gates, plots, splits, tracking

log = logging.getLogger(__name__)

#: columns known only for the live pipeline (current values with no history): never trained on
CURRENT_ONLY_FEATURES = ("has_next_step", "days_since_last_contacted")
#: above this many training snapshots, every other week is used (speed; the test slice is whole)
MAX_TRAIN_SNAPSHOTS = 80_000
#: the CRM stage baseline: what the gate compares with
STAGE_BASELINE = "stage_probability"
#: the time-aware baseline: cumulative incidence of winning by deal age, stage and segment
AGE_BASELINE = "incidence_by_age"
LEAD_BASELINE = "source_signal_rate"
#: how the summary table names each model and baseline (narrow terminals truncate long names)
DISPLAY_NAMES = {
    "model": "model",
    "plain": "plain LightGBM",
    "champion": "champion",
    "truth": "truth",
    STAGE_BASELINE: "CRM stage %",
    "historical_stage": "hist. stage",
    "historical_stage_segment": "hist. stage×seg",
    AGE_BASELINE: "hist. by age",
    LEAD_BASELINE: "hist. source×signal",
    "overall_rate": "overall rate",
}


@dataclass
class ModelReport:
    """What happened to one model in one ``pipecast train``."""

    name: str
    label: str
    kind: str = "lightgbm"
    version: str | None = None
    gate: gates.GateDecision | None = None
    previous_champion: str | None = None
    fallback_reason: str | None = None
    skipped_reason: str | None = None
    run_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    #: {target: {model name: {metric: value}}} on the test slice
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    calibration: dict[str, str] = field(default_factory=dict)
    evaluation: pd.DataFrame | None = None
    #: which prediction of ``metrics`` was registered: "model" (engineered) or "plain"
    registered: str = "model"
    #: the sentence saying how the plain challenger compared (never hidden)
    challenger_note: str | None = None
    #: "time" or "random" (an export without dates), and what that means for the figures
    split: str = "time"
    split_note: str | None = None
    #: the baseline registered as champion when no learned model passed and none existed
    baseline_champion: str | None = None
    baseline_version: str | None = None
    #: the test slice by calendar month (snapshot month / lead creation month)
    by_month: pd.DataFrame | None = None
    #: in-period predictions against outcomes by third of quarter, period and deal age
    #: (``training.evaluate_time.by_time``; close probability only)
    by_time: pd.DataFrame | None = None
    #: which optional feature groups the model left out, and why (SQO likelihood only)
    feature_groups: GroupSelection | None = None

    @property
    def promoted(self) -> bool:
        return bool(self.gate and self.gate.passed)

    @property
    def champion_version(self) -> str | None:
        """The version this run made champion (the model, or a baseline in its place)."""
        if self.promoted:
            return self.version
        return self.baseline_version


@dataclass
class TrainingSummary:
    """Everything ``render_summary`` prints, also returned to tests and scripts."""

    data_dir: Path
    #: the day the labels were read at; None for an export without dates (a random split)
    as_of: pd.Timestamp | None
    run_id: str | None
    fingerprint: str
    models: list[ModelReport]
    seconds: float
    tracking_uri: str
    #: rows left out of training per table because they contradict themselves (quarantine)
    quarantined: dict[str, int] = field(default_factory=dict)

    def model(self, name: str) -> ModelReport:
        return next(m for m in self.models if m.name == name)


# ----------------------------------------------------------------------------------------
# progress
# ----------------------------------------------------------------------------------------


class _Steps:
    """A rich progress task that tolerates ``progress=None``."""

    def __init__(self, progress: Any, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("training", total=total) if progress is not None else None

    def __call__(self, description: str) -> None:
        log.info(description)
        if self.progress is not None:
            self.progress.update(self.task, description=description)

    def done(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)


# ----------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------


def run_training(
    settings: Settings,
    *,
    data_dir: Path,
    as_of: str | pd.Timestamp | None = None,
    progress: Any = None,
) -> TrainingSummary:
    """Train, evaluate, log and gate both models on the export in ``data_dir``.

    Parameters
    ----------
    settings
        MLflow URI, gate tolerance and the minimum data counts.
    data_dir
        The CRM export folder.
    as_of
        Train on what was known at the end of this day (default: the export date).
    progress
        A rich ``Progress`` to report steps on, or None.
    """
    started = time.perf_counter()
    steps = _Steps(progress, total=9)
    if (
        settings.demo_data_is_default
        and Path(data_dir) == settings.data_dir
        and not Path(data_dir).exists()
    ):
        # a fresh clone trains on the demo export, generated on first use (interface.md)
        from features import synthetic
        from pipecast.config import DEMO_SEED

        steps("generating the demo export")
        synthetic.write_simulation(
            synthetic.simulate(seed=DEMO_SEED, progress=progress), Path(data_dir)
        )
    steps("reading the export")
    export = read_export(data_dir)
    quarantined = export.quarantined_rows(by="table")
    if export.opportunities is None and export.leads is None:
        raise InputError(f"{data_dir}: there are neither opportunities nor leads to train on.")
    # an export without any date (leads with a converted flag only) trains on a random split
    label_date = export.export_date
    if label_date is None and as_of is not None:
        raise InputError(
            f"{data_dir}: the export holds no dates (no created_at or other date in any file), "
            "so --as-of cannot cut it. Leave --as-of out: it trains on a random split."
        )
    if as_of is not None:
        day = parse_date(str(as_of)) if not isinstance(as_of, pd.Timestamp) else as_of.normalize()
        export.check_as_of(day)
        first = earliest_date(export)
        if first is not None and day < first:
            raise InputError(
                f"--as-of {day.date()} is before the export's first record ({first.date()}): "
                "there is nothing to train on yet. Give a later day, or leave --as-of out to "
                "train on everything up to the export date."
            )
        export = as_known_at(export, day)
        label_date = day
    fingerprint = tracking.data_fingerprint(data_dir)
    truth = _read_truth(data_dir)
    steps.done()

    client = tracking.configure(settings.mlflow_tracking_uri)
    code = tracking.code_version()
    data_start = _data_start(export)
    data_end = label_date.date().isoformat() if label_date is not None else ""
    common_tags = {
        "trained_at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        "data_start": data_start,
        "data_end": data_end,
        "data_fingerprint": fingerprint,
        "data_dir": str(data_dir),
        **code,
    }
    reports: list[ModelReport] = []
    with tracking.training_run(
        client,
        tracking.artifact_location(settings),
        run_name=f"train {data_end or '(no dates)'}",
        tags=common_tags,
    ) as run_id:
        tracking.log_params(
            {
                "as_of": data_end,
                "data_start": data_start,
                "data_fingerprint": fingerprint,
                "gate_tolerance": settings.gate_tolerance,
                **{f"n_{k}": len(v) for k, v in export.tables().items()},
                **code,
            }
        )
        # rows left out as inconsistent, so that a run can be compared with its data's health
        tracking.log_metrics(
            {f"quarantined_rows_{t}": quarantined.get(t, 0) for t in export.tables()}
        )
        if export.opportunities is not None:
            reports.append(
                _train_close(export, label_date, settings, client, truth, common_tags, steps)
            )
        else:
            reports.append(
                ModelReport(
                    CLOSE_MODEL_NAME,
                    "close probability",
                    skipped_reason="the export has no opportunities",
                )
            )
            for _ in range(4):
                steps.done()
        if export.leads is not None:
            reports.append(
                _train_sqo(export, label_date, settings, client, truth, common_tags, steps)
            )
        else:
            reports.append(
                ModelReport(
                    SQO_MODEL_NAME, "SQO likelihood", skipped_reason="the export has no leads"
                )
            )
            steps.done()
            steps.done()
            steps.done()
        tracking.set_tags(
            {f"gate_{r.name}": r.gate.tag if r.gate else (r.skipped_reason or "") for r in reports}
        )
        steps.done()
    return TrainingSummary(
        data_dir=Path(data_dir),
        as_of=label_date,
        run_id=run_id,
        fingerprint=fingerprint,
        models=reports,
        seconds=time.perf_counter() - started,
        tracking_uri=settings.mlflow_tracking_uri,
        quarantined=quarantined,
    )


def _data_start(export: Export) -> str:
    starts = [
        t["created_at"].min()
        for t in (export.opportunities, export.leads)
        if t is not None and "created_at" in t.columns and t["created_at"].notna().any()
    ]
    return min(starts).date().isoformat() if starts else ""


def _read_truth(data_dir: Path) -> dict[str, pd.DataFrame]:
    """The simulator's true probabilities, when the export is a simulation (``truth/``)."""
    out: dict[str, pd.DataFrame] = {}
    folder = Path(data_dir) / "truth"
    for name in ("opportunity_snapshots", "leads"):
        for suffix in (".parquet", ".csv"):
            path = folder / f"{name}{suffix}"
            if path.exists():
                out[name] = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
                break
    return out


def _features_only(table: pd.DataFrame, drop: tuple[str, ...]) -> pd.DataFrame:
    return table.drop(columns=[c for c in (*drop, *CURRENT_ONLY_FEATURES) if c in table.columns])


def _days(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    delta = pd.to_datetime(later).dt.normalize() - pd.to_datetime(earlier).dt.normalize()
    return delta.dt.days.to_numpy(dtype="float64", na_value=np.nan)


# ----------------------------------------------------------------------------------------
# close probability
# ----------------------------------------------------------------------------------------


def _train_close(
    export: Export,
    label_date: pd.Timestamp | None,
    settings: Settings,
    client: Any,
    truth: dict[str, pd.DataFrame],
    common_tags: dict[str, str],
    steps: _Steps,
) -> ModelReport:
    report = ModelReport(CLOSE_MODEL_NAME, "close probability")
    if label_date is None:
        report.skipped_reason = "the opportunities have no dates: weekly snapshots need them"
        for _ in range(4):
            steps.done()
        return report
    steps("close probability: weekly snapshots and features")
    opps = export.opportunities
    assert opps is not None
    dates = snapshot_dates(export)
    table = opportunity_features.build_training_set(export, dates=dates)
    snaps = table[["opportunity_id", "as_of"]]
    lab = feature_labels.opportunity_labels(export, snaps)
    known = ~lab["censored"].to_numpy(dtype=bool)
    gap = splits.cycle_gap_days(
        opps["created_at"], opps.get("closed_at", pd.Series(pd.NaT, index=opps.index))
    )
    steps.done()

    steps("close probability: time split and fitting")
    try:
        split = splits.plan_opportunity_split(table["as_of"], label_date=label_date, gap_days=gap)
        slices = splits.assign_opportunity_slices(snaps, lab["closed_at"], split)
    except ValueError:
        split, slices = None, pd.Series(pd.NA, index=table.index, dtype="string")
    s = slices.to_numpy(dtype=object, na_value="")
    train, cal, test = (s == splits.TRAIN), (s == splits.CALIBRATION), (s == splits.TEST)
    full_train = train.copy()
    if train.sum() > MAX_TRAIN_SNAPSHOTS:
        train &= splits.thin_weeks(table["as_of"], every=2)
    X = _features_only(table, ("opportunity_id", "as_of"))
    y = lab["won"].to_numpy(dtype="float64")
    days_to_close = _days(lab["closed_at"], table["as_of"])
    h_q = _days(lab["quarter_end"], table["as_of"])
    h_nq = _days(lab["next_quarter_end"], table["as_of"])
    horizons = np.column_stack([h_q, h_nq])
    ids = table["opportunity_id"].to_numpy(dtype=object)

    train_deals = pd.DataFrame({"id": ids[full_train], "won": y[full_train]}).drop_duplicates("id")
    closed_deals, wins = len(train_deals), int(train_deals["won"].sum())
    report.counts = {
        "snapshots": len(table),
        "snapshots_known_outcome": int(known.sum()),
        "train_rows": int(train.sum()),
        "calibration_rows": int(cal.sum()),
        "test_rows": int(test.sum()),
        "train_closed_deals": closed_deals,
        "train_wins": wins,
        "gap_days": gap,
    }
    too_little = None
    if closed_deals < settings.min_closed_deals or wins < settings.min_wins:
        too_little = (
            f"only {closed_deals} closed deals and {wins} wins in the training slice "
            f"(need {settings.min_closed_deals} and {settings.min_wins})"
        )
    elif cal.sum() == 0 or test.sum() == 0:
        too_little = (
            "the history is too short for a calibration and a test slice after the training slice"
        )

    categorical = opportunity_features.categorical_columns(X)
    model: Any
    plain: Any = None
    if too_little is None:
        fit_args: dict[str, Any] = {
            "days_to_close": days_to_close[train],
            "horizons": horizons[train],
            "X_cal": X[cal],
            "y_cal": y[cal].astype(int),
            "days_to_close_cal": days_to_close[cal],
            "horizons_cal": horizons[cal],
            "groups_cal": ids[cal],
        }
        # the competing-risks model learns from every snapshot up to the end of the training
        # slice, deals still open then included (censored at train_end, nothing later is read):
        # closed deals alone over-represent quick closes and miss the quarter-end rush
        assert split is not None
        model = fit_on_time_split(
            X,
            as_of=table["as_of"],
            closed_at=lab["closed_at"],
            won=lab["won"],
            train_end=split.train_end,
            calibration_end=split.calibration_end,
            label_date=split.label_date,
            fiscal_year_start_month=export.config.fiscal_year_start_month,
            categorical=categorical,
            n_estimators=300,
            learning_rate=0.1,
            max_training_rows=200_000,
        )
        report.kind = CompetingRisksCloseModel.kind
        report.calibration = {
            "p_win": model.calibration_method_,
            "pairs": str(model.calibration_pairs_),
        }
        # the plain challenger: same class, same slices, same calibration, raw columns only
        raw = raw_opportunity_columns(X, export.config.features.get("opportunities", []))
        if raw:
            plain = PlainCloseModel(
                categorical=[c for c in categorical if c in raw], columns=raw, n_jobs=2
            ).fit(X[train], y[train].astype(int), **fit_args)
    else:
        report.fallback_reason = too_little
        report.kind = CumulativeIncidenceCloseModel.kind
        log.warning(
            "close probability: %s; using the win incidence by deal age instead", too_little
        )
        if not (known & (y == 1)).any():
            report.skipped_reason = "no deal won at all: nothing to learn from"
            steps.done()
            steps.done()
            return report
        # the training slice when there is one, else every snapshot with what the label date
        # knows; deals still open (stale ones included) stay in the risk sets, censored
        model = incidence_on_snapshots(
            X, table, lab, split.train_end if split is not None else label_date
        )
        if model is None:
            model = incidence_on_snapshots(X, table, lab, label_date)
        assert model is not None
    steps.done()

    steps("close probability: evaluation against the baselines")
    base_rows = train if train.any() else known
    stage = StageProbabilityBaseline(probabilities=export.stage_probabilities()).fit(
        X[base_rows], y[base_rows]
    )
    hist_stage = HistoricalRateBaseline(by=("stage",)).fit(X[base_rows], y[base_rows])
    hist_seg = HistoricalRateBaseline(by=("stage", "segment")).fit(X[base_rows], y[base_rows])
    won_rows = base_rows & (y == 1)
    share = InPeriodShareBaseline().fit(X[won_rows], days_to_close[won_rows])
    # the time-aware baseline sees what the model sees: every snapshot up to the end of the
    # training slice, open deals censored there
    by_age = (
        model
        if isinstance(model, CumulativeIncidenceCloseModel)
        else incidence_on_snapshots(
            X, table, lab, split.train_end if split is not None else label_date
        )
    )

    # Test rows: the test slice (outcome known at the label date) for p_win; for the in-period
    # targets, every snapshot of the test window whose "won by the period end" is known, open
    # deals included once their period has ended (see splits.holdout_window)
    q_label = lab["won_by_quarter_end"].to_numpy(dtype="float64")
    nq_label = lab["won_by_next_quarter_end"].to_numpy(dtype="float64")
    window = (
        splits.holdout_window(snaps, lab["closed_at"], split)
        if split is not None
        else np.zeros(len(table), dtype=bool)
    )
    rows = test | (window & np.isfinite(q_label))
    on_p, on_nq = test[rows], np.isfinite(nq_label[rows])
    Xt = X[rows]
    as_of_t = table.loc[rows, "as_of"].to_numpy()
    if getattr(model, "kind", None) == CompetingRisksCloseModel.kind:
        # the calendar places each future week of the deal in its fiscal quarter
        p_model = model.predict_p_win(Xt, as_of=as_of_t)
        q_model = model.predict_won_by(Xt, h_q[rows], as_of=as_of_t)
        nq_model = model.predict_won_by(Xt, h_nq[rows], as_of=as_of_t)
    else:
        p_model = model.predict_proba(Xt)[:, 1]
        q_model = model.predict_won_by(Xt, h_q[rows])
        nq_model = model.predict_won_by(Xt, h_nq[rows])
    p_stage = stage.predict_rate(Xt)
    share_q = share.share(Xt, h_q[rows])
    share_nq = share.share(Xt, h_nq[rows])
    preds = {
        "model": p_model,
        STAGE_BASELINE: p_stage,
        "historical_stage": hist_stage.predict_rate(Xt),
        "historical_stage_segment": hist_seg.predict_rate(Xt),
    }
    preds_q = {
        "model": q_model,
        STAGE_BASELINE: p_stage * share_q,
        "historical_stage": preds["historical_stage"] * share_q,
    }
    preds_nq = {"model": nq_model, STAGE_BASELINE: p_stage * share_nq}
    if by_age is not None:
        preds[AGE_BASELINE] = by_age.predict_p_win(Xt)
        preds_q[AGE_BASELINE] = by_age.predict_won_by(Xt, h_q[rows])
        preds_nq[AGE_BASELINE] = by_age.predict_won_by(Xt, h_nq[rows])
    if plain is not None:
        preds["plain"] = plain.predict_proba(Xt)[:, 1]
        preds_q["plain"] = plain.predict_won_by(Xt, h_q[rows], p_win=preds["plain"])
        preds_nq["plain"] = plain.predict_won_by(Xt, h_nq[rows], p_win=preds["plain"])
    champion_preds = _champion_predictions(
        settings, client, CLOSE_MODEL_NAME, Xt, close=(h_q[rows], h_nq[rows]), as_of=as_of_t
    )
    report.previous_champion = champion_preds.get("version")
    if champion_preds:
        preds["champion"], preds_q["champion"], preds_nq["champion"] = champion_preds["p"]
    true_snap = truth.get("opportunity_snapshots")
    if true_snap is not None:
        joined = _join_truth(table.loc[rows, ["opportunity_id", "as_of"]], true_snap)
        if joined is not None:
            preds["truth"] = joined["p_win"].to_numpy(dtype="float64")
            preds_q["truth"] = joined["p_win_by_quarter_end"].to_numpy(dtype="float64")
            preds_nq["truth"] = joined["p_win_by_next_quarter_end"].to_numpy(dtype="float64")
    groups = {c: Xt[c] for c in ("segment", "stage") if c in Xt.columns}
    # the test slice by the calendar month of the snapshot: a slice can look fine on average
    # while its last months, the ones most like the next, are drifting away
    groups["month"] = _months(table.loc[rows, "as_of"])

    def on(mask: np.ndarray, p: dict[str, Any]) -> dict[str, Any]:
        return {k: np.asarray(v)[mask] for k, v in p.items()}

    report.counts["test_rows_in_period"] = int(rows.sum())
    baselines = [STAGE_BASELINE, "historical_stage", "historical_stage_segment"]
    if by_age is not None:
        baselines.append(AGE_BASELINE)
    table_eval = pd.concat(
        [
            evaluate.evaluation_table(
                "p_win", y[test], on(on_p, preds), baselines=baselines, groups=on(on_p, groups)
            ),
            evaluate.evaluation_table(
                "p_win_in_period_quarter",
                q_label[rows],
                preds_q,
                baselines=[
                    b for b in (STAGE_BASELINE, "historical_stage", AGE_BASELINE) if b in preds_q
                ],
                groups=groups,
            ),
            evaluate.evaluation_table(
                "p_win_in_period_next_quarter",
                nq_label[rows][on_nq],
                on(on_nq, preds_nq),
                baselines=[b for b in (STAGE_BASELINE, AGE_BASELINE) if b in preds_nq],
                groups=on(on_nq, groups),
            ),
        ],
        ignore_index=True,
    )
    report.evaluation = table_eval
    for target in table_eval["target"].unique():
        report.metrics[target] = {
            m: evaluate.headline(table_eval, target, m)
            for m in table_eval.loc[table_eval["target"] == target, "model"].unique()
        }
    # the forecast reads p_win_in_period: the plain challenger must beat the model there too
    # (p_win is judged only on deals closed by the label date, which leaves out the deals that
    # never close; the in-period outcome is known for every deal once its quarter is over)
    chosen = _choose_challenger(report, "p_win", also="p_win_in_period_quarter")
    if chosen == "plain":
        model = plain
        p_model, q_model, nq_model = preds["plain"], preds_q["plain"], preds_nq["plain"]
    coherence = evaluate.in_period_coherence(p_model, q_model, nq_model)
    report.by_month = evaluate.by_month(table_eval, "p_win")
    report.by_time = _in_period_by_time(
        table.loc[rows, "as_of"],
        Xt,
        q_label[rows],
        nq_label[rows],
        {"model": preds_q, "next": preds_nq},
        fiscal_year_start_month=export.config.fiscal_year_start_month,
    )
    steps.done()

    steps("close probability: logging to MLflow and gating")
    report.gate = _gate(report, "p_win", STAGE_BASELINE, settings, bool(champion_preds))
    baseline_champion = None
    if not report.gate.passed and not champion_preds and report.fallback_reason is None:
        baseline_champion = _best_baseline(report, "p_win", baselines)
        report.baseline_champion = baseline_champion
    fit_baseline = (
        None
        if baseline_champion is None
        else by_age
        if baseline_champion == AGE_BASELINE
        else _close_baseline_model(
            baseline_champion,
            export.stage_probabilities(),
            X[base_rows],
            y[base_rows],
            days_to_close[base_rows],
        )
    )
    reliability = {
        name: evaluate.reliability(y[test], p)
        for name, p in on(on_p, preds).items()
        if name in ("model", "plain", STAGE_BASELINE, "truth", "champion")
    }
    reliability_q = {
        name: evaluate.reliability(q_label[rows], p)
        for name, p in preds_q.items()
        if name in ("model", STAGE_BASELINE, "truth")
    }
    _log_model_run(
        report,
        model=model,
        client=client,
        params=_model_params(
            report, model, X, categorical, split.as_params() if split is not None else {}
        ),
        extra_metrics={f"coherence_{k}": v for k, v in coherence.items()},
        reliability={"p_win": reliability, "p_win_in_period_quarter": reliability_q},
        input_example=Xt.head(5) if len(Xt) else X.head(5),
        common_tags=common_tags,
        baseline_model=fit_baseline,
    )
    steps.done()
    return report


def _in_period_by_time(
    as_of: pd.Series,
    Xt: pd.DataFrame,
    q_label: np.ndarray,
    nq_label: np.ndarray,
    preds: dict[str, dict[str, Any]],
    *,
    fiscal_year_start_month: int,
) -> pd.DataFrame | None:
    """In-period wins predicted against won, by third of quarter, period and deal age.

    One row per (snapshot, period) whose outcome is known: this quarter and next quarter. Only
    the predictions made for both periods are compared (the model, the plain challenger, the
    stage-weighted baseline, the champion, the simulator's truth).
    """
    preds_q, preds_nq = preds["model"], preds["next"]
    names = [n for n in preds_q if n in preds_nq]
    age = (
        Xt["age_days"].to_numpy(dtype="float64", na_value=np.nan)
        if "age_days" in Xt.columns
        else np.full(len(Xt), np.nan)
    )
    day = as_of.to_numpy()
    parts = []
    for period, label, p in (("quarter", q_label, preds_q), ("next quarter", nq_label, preds_nq)):
        ok = np.isfinite(label)
        if not ok.any():
            continue
        parts.append(
            (
                pd.DataFrame(
                    {
                        "as_of": day[ok],
                        "period": period,
                        "age_days": age[ok],
                        "won_in_period": label[ok],
                    }
                ),
                {n: np.asarray(p[n], dtype="float64")[ok] for n in names},
            )
        )
    if not parts or not names:
        return None
    rows = pd.concat([r for r, _ in parts], ignore_index=True)
    joined = {n: np.concatenate([p[n] for _, p in parts]) for n in names}
    return evaluate_time.by_time(rows, joined, fiscal_year_start_month=fiscal_year_start_month)


def _join_truth(keys: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame | None:
    t = truth.copy()
    t["as_of"] = pd.to_datetime(t["as_of"]).astype("datetime64[ns]")
    t["opportunity_id"] = t["opportunity_id"].astype("string")
    k = keys.reset_index(drop=True).copy()
    k["opportunity_id"] = k["opportunity_id"].astype("string")
    k["as_of"] = pd.to_datetime(k["as_of"]).astype("datetime64[ns]")
    joined = k.merge(t, on=["opportunity_id", "as_of"], how="left")
    if joined["p_win"].isna().mean() > 0.01:
        log.info("truth covers only part of the test slice: not compared")
        return None
    return joined


# ----------------------------------------------------------------------------------------
# SQO likelihood
# ----------------------------------------------------------------------------------------


def _train_sqo(
    export: Export,
    label_date: pd.Timestamp | None,
    settings: Settings,
    client: Any,
    truth: dict[str, pd.DataFrame],
    common_tags: dict[str, str],
    steps: _Steps,
) -> ModelReport:
    report = ModelReport(SQO_MODEL_NAME, "SQO likelihood")
    steps("SQO likelihood: lead features and labels")
    table = lead_features.build_training_set(export)
    lab = _lead_labels(export, label_date)
    # a lead is a training row once its whole window has passed: an early SQO is "decided"
    # sooner, and keeping those alone from the last window would over-count SQOs
    decided = lab["decided"].reindex(table.index).to_numpy(dtype=bool, na_value=False).copy()
    if "as_of" in table.columns and label_date is not None:
        window_end = table["as_of"] + pd.Timedelta(days=export.config.sqo_window_days)
        passed = (window_end <= label_date).to_numpy(dtype=bool, na_value=False)
        undated = table["as_of"].isna().to_numpy(dtype=bool)
        decided &= passed | undated
    # do-not-contact leads are never put on a list: they are neither trained on nor scored
    if export.leads is not None and "do_not_contact" in export.leads.columns:
        dnc = export.leads.set_index(export.leads["lead_id"].astype("string"))["do_not_contact"]
        decided &= ~dnc.reindex(table.index).fillna(False).to_numpy(dtype=bool)
    table = table.loc[decided]
    y = lab.loc[table.index, "is_sqo"].to_numpy(dtype="float64")
    created = table["as_of"] if "as_of" in table.columns else None
    slices, split_info = splits.split_leads(
        created, window_days=export.config.sqo_window_days, n_rows=len(table), y=y
    )
    report.split = str(split_info.get("split", "time"))
    report.split_note = split_info.get("split_note")
    s = slices.to_numpy(dtype=object, na_value="")
    train, cal, test = (s == splits.TRAIN), (s == splits.CALIBRATION), (s == splits.TEST)
    X = _features_only(table.reset_index(drop=True), ("lead_id", "as_of"))
    report.counts = {
        "decided_leads": len(table),
        "sqos": int(np.nansum(y)),
        "train_rows": int(train.sum()),
        "calibration_rows": int(cal.sum()),
        "test_rows": int(test.sum()),
        "train_sqos": int(np.nansum(y[train])),
        "calibration_sqos": int(np.nansum(y[cal])),
    }
    steps.done()

    steps("SQO likelihood: fitting")
    too_little = None
    if len(table) < settings.min_decided_leads or np.nansum(y) < settings.min_sqos:
        too_little = (
            f"only {len(table)} decided leads and {int(np.nansum(y))} SQOs "
            f"(need {settings.min_decided_leads} and {settings.min_sqos})"
        )
    elif cal.sum() == 0 or test.sum() == 0 or len(np.unique(y[train])) < 2:
        too_little = "the lead history is too short for a calibration and a test slice"
    categorical = lead_features.categorical_columns(X)
    model: Any
    plain: Any = None
    if too_little is None:
        # the account history, similar-lead rates … are kept only where they help the trees
        # predict later leads (time folds of the training and calibration leads)
        days = None if created is None else created.to_numpy(dtype="datetime64[ns]")
        model = SQOLikelihoodModel(
            categorical=categorical, optional_groups=lead_features.OPTIONAL_GROUPS, n_jobs=2
        ).fit(
            X[train],
            y[train].astype(int),
            X_cal=X[cal],
            y_cal=y[cal].astype(int),
            days=None if days is None or report.split != "time" else days[train],
            days_cal=None if days is None or report.split != "time" else days[cal],
        )
        report.calibration = dict(model.calibration_method_)
        report.feature_groups = model.feature_selection_
        # the engineered model's trees: early-stopped on the calibration leads, then grown again
        # on the training and calibration leads together (0 refit rounds: the early-stopped ones)
        report.counts["early_stopped_rounds"] = int(model.early_stopped_rounds_)
        report.counts["refit_rounds"] = int(model.refit_rounds_ or 0)
        raw = raw_lead_columns(X, export.config.features.get("leads", []))
        if raw:  # a lead list with no column of its own (only a title) has no plain model
            plain = PlainSQOModel(
                categorical=[c for c in categorical if c in raw], columns=raw, n_jobs=2
            ).fit(X[train], y[train].astype(int), X_cal=X[cal], y_cal=y[cal].astype(int))
    else:
        report.fallback_reason = too_little
        report.kind = HistoricalLeadModel.kind
        log.warning("SQO likelihood: %s; using the historical baseline instead", too_little)
        if len(table) == 0:
            report.skipped_reason = "no decided leads: nothing to learn from"
            steps.done()
            steps.done()
            return report
        rows = _seen_rows(train, cal)
        model = HistoricalLeadModel().fit(X[rows], y[rows])
        if test.sum() == 0:
            test = rows
    steps.done()

    steps("SQO likelihood: evaluation, MLflow and gate")
    # the baselines (the bar of the gate, and what is served when the model is refused) learn
    # from the leads the model learned from: its trees are fitted on the training leads,
    # early-stopped and calibrated on the calibration leads (the latest before the test slice)
    # and grown again on both; rates of the training leads alone would be a lower bar and a
    # staler fallback
    base_rows = _seen_rows(train, cal)
    base = HistoricalRateBaseline(by=("source", "signal_type")).fit(X[base_rows], y[base_rows])
    overall = HistoricalRateBaseline(by=()).fit(X[base_rows], y[base_rows])
    Xt, yt = X[test], y[test]
    preds = {
        "model": model.predict_proba(Xt)[:, 1],
        LEAD_BASELINE: base.predict_rate(Xt),
        "overall_rate": overall.predict_rate(Xt),
    }
    if plain is not None:
        preds["plain"] = plain.predict_proba(Xt)[:, 1]
    champion_preds = _champion_predictions(settings, client, SQO_MODEL_NAME, Xt)
    report.previous_champion = champion_preds.get("version")
    if champion_preds:
        preds["champion"] = champion_preds["p"][0]
    true_leads = truth.get("leads")
    if true_leads is not None:
        ids = table.index[test].astype(str)
        p_true = true_leads.assign(lead_id=true_leads["lead_id"].astype(str)).set_index("lead_id")[
            "p_sqo"
        ]
        mapped = pd.Series(ids).map(p_true)
        if mapped.notna().all():
            preds["truth"] = mapped.to_numpy(dtype="float64")
    groups: dict[str, Any] = {
        c: Xt[c] for c in ("source", "signal_type", "industry") if c in Xt.columns
    }
    if created is not None and report.split == "time":
        groups["month"] = _months(created.reset_index(drop=True)[test])
    lead_baselines = [LEAD_BASELINE, "overall_rate"]
    table_eval = evaluate.evaluation_table(
        "sqo", yt, preds, baselines=lead_baselines, groups=groups
    )
    report.evaluation = table_eval
    report.metrics["sqo"] = {m: evaluate.headline(table_eval, "sqo", m) for m in preds}
    if _choose_challenger(report, "sqo") == "plain":
        model = plain
    report.by_month = evaluate.by_month(table_eval, "sqo")
    report.gate = _gate(report, "sqo", LEAD_BASELINE, settings, bool(champion_preds))
    fit_baseline = None
    if not report.gate.passed and not champion_preds and report.fallback_reason is None:
        report.baseline_champion = _best_baseline(report, "sqo", lead_baselines)
        by = ("source", "signal_type") if report.baseline_champion == LEAD_BASELINE else ()
        fit_baseline = HistoricalLeadModel(by=by).fit(X[base_rows], y[base_rows])
    reliability = {
        name: evaluate.reliability(yt, p)
        for name, p in preds.items()
        if name in ("model", "plain", LEAD_BASELINE, "truth", "champion")
    }
    _log_model_run(
        report,
        model=model,
        client=client,
        params=_model_params(report, model, X, categorical, split_info),
        extra_metrics={},
        reliability={"sqo": reliability},
        input_example=Xt.head(5) if len(Xt) else X.head(5),
        common_tags=common_tags,
        baseline_model=fit_baseline,
    )
    steps.done()
    return report


def _seen_rows(train: np.ndarray, cal: np.ndarray) -> np.ndarray:
    """The training and calibration leads (every lead when there are none): what the SQO
    model and its baselines learn from, all settled before the test slice's leads."""
    seen = train | cal
    return seen if seen.sum() > 0 else np.ones(len(seen), dtype=bool)


def _lead_labels(export: Export, label_date: pd.Timestamp | None) -> pd.DataFrame:
    """Lead labels as known at ``label_date``; for an export without dates, its ``is_sqo``."""
    if label_date is not None:
        return feature_labels.lead_labels(export)
    leads = export.leads
    assert leads is not None
    label = feature_labels.lead_label_values(leads, export.config.sqo_window_days)
    return pd.DataFrame(
        {"is_sqo": label.to_numpy(), "decided": label.notna().to_numpy()},
        index=pd.Index(leads["lead_id"].astype("string").to_numpy(), name="lead_id"),
    )


def _months(days: pd.Series) -> np.ndarray:
    """Calendar month (``2026-03``) of each day, "(no date)" where there is none."""
    d = pd.to_datetime(days).reset_index(drop=True)
    text = d.dt.strftime("%Y-%m").astype("string").fillna("(no date)")
    return text.to_numpy(dtype=object)


def _choose_challenger(report: ModelReport, target: str, *, also: str | None = None) -> str:
    """Register the plain challenger instead when its test Brier beats the engineered model's.

    ``also``: a second target the plain model must beat the engineered one on as well (when
    both were measured on it). A tie goes to the engineered model. Whatever the outcome, the
    comparison is written to ``report.challenger_note`` so that the summary always shows it.
    """
    metrics = report.metrics.get(target, {})
    if "model" in metrics and "plain" not in metrics and report.fallback_reason is None:
        report.challenger_note = (
            "No plain challenger: the export has none of the raw declared columns to fit it on."
        )
    if "plain" not in metrics or "model" not in metrics:
        return "model"
    engineered = metrics["model"].get("brier", math.nan)
    plain = metrics["plain"].get("brier", math.nan)
    if not (math.isfinite(engineered) and math.isfinite(plain)):
        return "model"
    second = report.metrics.get(also, {}) if also else {}
    e2 = second.get("model", {}).get("brier", math.nan)
    p2 = second.get("plain", {}).get("brier", math.nan)
    judged_twice = math.isfinite(e2) and math.isfinite(p2)
    also_text = f"; {also} Brier {p2:.4f} against {e2:.4f}" if judged_twice else ""
    if plain < engineered and (not judged_twice or p2 < e2):
        report.registered = "plain"
        report.kind = PlainCloseModel.kind
        report.challenger_note = (
            f"The plain LightGBM on the raw columns beat the engineered model on the test slice "
            f"(Brier {plain:.4f} against {engineered:.4f}{also_text}): the plain model is the "
            "one registered."
        )
    elif plain < engineered:
        report.challenger_note = (
            f"The plain LightGBM on the raw columns beat the engineered model on {target} "
            f"(Brier {plain:.4f} against {engineered:.4f}) but not on {also} (Brier {p2:.4f} "
            f"against {e2:.4f}), which the forecast reads: the engineered model is registered."
        )
    else:
        report.challenger_note = (
            f"The engineered model beat the plain LightGBM on the raw columns on the test slice "
            f"(Brier {engineered:.4f} against {plain:.4f}{also_text})."
        )
    return report.registered


def _best_baseline(report: ModelReport, target: str, names: Sequence[str]) -> str:
    """The baseline with the lowest Brier score on the test slice (the first one on ties)."""
    metrics = report.metrics[target]
    scored = [n for n in names if math.isfinite(metrics.get(n, {}).get("brier", math.nan))]
    if not scored:
        return names[0]
    return min(scored, key=lambda n: metrics[n]["brier"])


def _close_baseline_model(
    name: str,
    declared: Mapping[str, float],
    X: pd.DataFrame,
    y: np.ndarray,
    days_to_close: np.ndarray,
) -> HistoricalCloseModel:
    """The baseline ``name`` as a servable close model (``p_win`` and in-period timing)."""
    by = ("stage", "segment") if name == "historical_stage_segment" else ("stage",)
    probabilities = dict(declared) if name == STAGE_BASELINE else None
    return HistoricalCloseModel(by=by, probabilities=probabilities).fit(
        X, y, days_to_close=days_to_close
    )


# ----------------------------------------------------------------------------------------
# the champion, MLflow
# ----------------------------------------------------------------------------------------


def _champion_predictions(
    settings: Settings,
    client: Any,
    name: str,
    X: pd.DataFrame,
    *,
    close: tuple[np.ndarray, np.ndarray] | None = None,
    as_of: np.ndarray | None = None,
) -> dict[str, Any]:
    """The current champion re-scored on the new test rows ({} when there is none)."""
    version = tracking.champion_version(client, name)
    if version is None or len(X) == 0:
        return {}
    from models.registry import load_champion

    try:
        champion, info = load_champion(settings, name)
    except Exception as exc:  # noqa: BLE001 — an unloadable champion must not stop training
        log.warning("the champion of %s (v%s) cannot be loaded: %s", name, version, exc)
        return {}
    p = np.asarray(champion.predict_proba(X)[:, 1], dtype="float64")
    if close is None:
        return {"version": str(info.get("version", version)), "p": (p,)}
    if getattr(champion, "kind", None) == CompetingRisksCloseModel.kind and as_of is not None:
        p = np.asarray(champion.predict_p_win(X, as_of=as_of), dtype="float64")
        q = champion.predict_won_by(X, close[0], as_of=as_of)
        nq = champion.predict_won_by(X, close[1], as_of=as_of)
    else:
        q = champion.predict_won_by(X, close[0])
        nq = champion.predict_won_by(X, close[1])
    return {"version": str(info.get("version", version)), "p": (p, q, nq)}


def _model_params(
    report: ModelReport,
    model: Any,
    X: pd.DataFrame,
    categorical: Sequence[str],
    split_params: Mapping[str, Any],
) -> dict[str, Any]:
    """The parameters of a model's run: kind, features, counts, split, calibration, settings."""
    features = getattr(model, "feature_names_", None) or list(X.columns)
    params = {
        "model_kind": report.kind,
        "registered": report.registered,
        "categorical": ",".join(c for c in categorical if c in features),
        "features": ",".join(features),
        **report.counts,
        **split_params,
        **{f"calibration_{k}": v for k, v in report.calibration.items()},
        **{k: v for k, v in model.get_params().items() if not isinstance(v, (list, tuple, dict))},
    }
    if report.fallback_reason:
        params["fallback_reason"] = report.fallback_reason
    return params


def _log_model_run(
    report: ModelReport,
    *,
    model: Any,
    client: Any,
    params: dict[str, Any],
    extra_metrics: dict[str, float],
    reliability: dict[str, dict[str, pd.DataFrame]],
    input_example: pd.DataFrame,
    common_tags: dict[str, str],
    baseline_model: Any = None,
) -> None:
    assert report.gate is not None and report.evaluation is not None
    with tracking.model_run(report.name) as run_id:
        report.run_id = run_id
        tracking.log_params(params)
        flat: dict[str, float] = {}
        for target, by_model in report.metrics.items():
            for m, values in by_model.items():
                for k, v in values.items():
                    flat[f"{target}.{m}.{k}"] = v
        # the headline numbers of the registered model under short names, for /models; the
        # plain challenger's beside them, whichever of the two was registered
        main_target = "p_win" if "p_win" in report.metrics else "sqo"
        for k in ("auc", "brier", "log_loss", "ece", "top_decile_lift"):
            if k in report.metrics[main_target].get(report.registered, {}):
                flat[f"test_{k}"] = report.metrics[main_target][report.registered][k]
            if k in report.metrics[main_target].get("plain", {}):
                flat[f"plain_{k}"] = report.metrics[main_target]["plain"][k]
        tracking.log_metrics({**flat, **extra_metrics})
        tracking.set_tags(
            {
                "model_kind": report.kind,
                "kind": _kind_tag(report),
                "fallback": "yes" if report.fallback_reason else "no",
                "gate": report.gate.tag,
                "split": report.split,
                **({"split_note": report.split_note} if report.split_note else {}),
                **({"challenger": report.challenger_note} if report.challenger_note else {}),
                **(
                    {"feature_groups_left_out": ", ".join(report.feature_groups.dropped) or "none"}
                    if report.feature_groups is not None and report.feature_groups.skipped is None
                    else {}
                ),
            }
        )
        tracking.log_table(report.evaluation, "evaluation/evaluation.csv")
        if report.by_month is not None and len(report.by_month):
            tracking.log_table(report.by_month, "evaluation/test_by_month.csv")
        if report.by_time is not None and len(report.by_time):
            tracking.log_table(report.by_time, "evaluation/in_period_by_time.csv")
        tracking.log_json(
            {
                "metrics": report.metrics,
                "counts": report.counts,
                "gate": report.gate.tag,
                "calibration": report.calibration,
                "registered": report.registered,
                "challenger": report.challenger_note,
                "split": report.split,
                "split_note": report.split_note,
                **(
                    {"feature_groups": report.feature_groups.as_dict()}
                    if report.feature_groups is not None
                    else {}
                ),
            },
            "evaluation/metrics.json",
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            for target, tables in reliability.items():
                for name, t in tables.items():
                    tracking.log_table(
                        t.assign(model=name), f"evaluation/reliability_{target}_{name}.csv"
                    )
                png = plots.reliability_diagram(
                    tables,
                    folder / f"reliability_{target}.png",
                    title=f"{report.label}: {target} (test slice)",
                )
                tracking.log_file(png, "charts")
            importance = getattr(model, "feature_importances_", None)
            if isinstance(importance, pd.Series) and len(importance):
                tracking.log_table(
                    importance.rename_axis("feature").reset_index(),
                    "evaluation/feature_importance.csv",
                )
                png = plots.feature_importance_chart(
                    importance,
                    folder / "feature_importance.png",
                    title=f"{report.label}: feature importance",
                )
                tracking.log_file(png, "charts")
        version_tags = {
            **{
                k: common_tags[k]
                for k in ("trained_at", "data_start", "data_end", "data_fingerprint")
            },
            "gate": report.gate.tag,
            "model_kind": report.kind,
            "kind": _kind_tag(report),
            "fallback": report.fallback_reason or "no",
            "split": report.split,
            **({"split_note": report.split_note} if report.split_note else {}),
            "git_commit": common_tags.get("git_commit", ""),
            "package_version": common_tags.get("package_version", ""),
        }
        report.version = tracking.log_and_register(
            model,
            registered_name=report.name,
            input_example=input_example,
            version_tags=version_tags,
            client=client,
        )
        if report.gate.passed:
            tracking.set_champion(client, report.name, report.version)
        elif baseline_model is not None and report.baseline_champion is not None:
            # no learned model passed and there is no champion: serve the best baseline so
            # that scoring works after every train, flagged as what it is
            name = DISPLAY_NAMES.get(report.baseline_champion, report.baseline_champion)
            report.baseline_version = tracking.log_and_register(
                baseline_model,
                registered_name=report.name,
                input_example=input_example,
                version_tags={
                    **version_tags,
                    "gate": (
                        f"passed: the learned model was refused and there is no champion; "
                        f"the {name} baseline (best test Brier of the baselines) serves instead"
                    ),
                    "model_kind": baseline_model.kind,
                    "kind": "baseline",
                    "baseline": report.baseline_champion,
                    "fallback": f"no learned model passed the gate ({report.gate.reason})",
                },
                client=client,
                artifact_name="baseline_model",
            )
            tracking.set_tags({"baseline_champion": report.baseline_champion})
            tracking.set_champion(client, report.name, report.baseline_version)


def _kind_tag(report: ModelReport) -> str:
    """``kind`` of a registered version: lightgbm (engineered), plain, or baseline."""
    if report.fallback_reason:
        return "baseline"
    return "plain" if report.registered == "plain" else "lightgbm"


# ----------------------------------------------------------------------------------------
# the summary table
# ----------------------------------------------------------------------------------------

_METRICS = (
    ("auc", "AUC"),
    ("brier", "Brier"),
    ("log_loss", "log loss"),
    ("ece", "ECE"),
    ("top_decile_lift", "top-decile lift"),
)


def render_summary(summary: TrainingSummary, console: Console) -> None:
    """Metrics side by side with the baselines and the previous champion, and the gate decision."""
    when = f"as of {summary.as_of.date()}" if summary.as_of is not None else "(no dates)"
    console.print(
        f"[bold]pipecast train[/] — {summary.data_dir} {when} "
        f"({summary.seconds:.0f} s, MLflow run {summary.run_id})",
        highlight=False,
    )
    for report in summary.models:
        if report.skipped_reason and report.version is None:
            console.print(
                f"[yellow]{report.label}: not trained[/] — {report.skipped_reason}", highlight=False
            )
            continue
        if report.fallback_reason:
            console.print(
                f"[bold yellow]{report.label}: too little data[/] — {report.fallback_reason}. "
                "The historical baseline was registered instead of a learned model.",
                highlight=False,
            )
        if report.split_note:
            console.print(
                f"[bold yellow]{report.label}: {report.split_note}[/] (train / calibrate / test "
                "drawn at random, stratified by outcome).",
                highlight=False,
            )
        if report.feature_groups is not None and report.feature_groups.dropped:
            console.print(
                f"{report.label}: left out {', '.join(report.feature_groups.dropped)} — the "
                "trees predicted later leads no worse without them (time folds of the "
                "training leads).",
                highlight=False,
            )
        for target, by_model in report.metrics.items():
            table = Table(
                title=f"{report.label} — {target} (test slice, n={int(by_model.get('model', {}).get('n', 0))})",
                title_justify="left",
            )
            table.add_column("metric")
            names = list(by_model)
            for name in names:
                table.add_column(DISPLAY_NAMES.get(name, name), justify="right")
            for key, label in _METRICS:
                table.add_row(label, *[_fmt(by_model[n].get(key)) for n in names])
            skill_keys = sorted(
                {k for v in by_model.values() for k in v if k.startswith("brier_skill_vs_")}
            )
            for key in skill_keys:
                baseline = key.removeprefix("brier_skill_vs_")
                table.add_row(
                    f"Brier skill vs {DISPLAY_NAMES.get(baseline, baseline)}",
                    *[_fmt(by_model[n].get(key)) for n in names],
                )
            console.print(table)
        if report.by_month is not None and len(report.by_month):
            _print_by_month(report, console)
        if report.by_time is not None and len(report.by_time):
            _print_by_time(report, console)
        if report.challenger_note:
            colour = "bold yellow" if report.registered == "plain" else "green"
            console.print(f"[{colour}]{report.challenger_note}[/]", highlight=False)
        gate = report.gate
        if gate is not None:
            colour = "green" if gate.passed else "red"
            verdict = "promoted to champion" if gate.passed else "registered, NOT promoted"
            what = " (plain LightGBM)" if report.registered == "plain" else ""
            console.print(
                f"[{colour}]{report.name} v{report.version}{what}: {verdict}[/] — {gate.reason}",
                highlight=False,
            )
        if report.baseline_version is not None and report.baseline_champion is not None:
            name = DISPLAY_NAMES.get(report.baseline_champion, report.baseline_champion)
            console.print(
                f"[bold yellow]{report.name} v{report.baseline_version}: the {name} baseline is "
                "champion[/] — no learned model passed the gate and there was no champion yet; "
                "the baseline with the best test Brier serves (flagged kind=baseline) so that "
                "scoring works. A later train whose model passes the gate replaces it.",
                highlight=False,
            )


def _print_by_month(report: ModelReport, console: Console) -> None:
    """The test slice by calendar month: rows, outcome rate and Brier of each model, compactly."""
    frame = report.by_month
    assert frame is not None
    models = [
        m
        for m in ("model", "plain", STAGE_BASELINE, LEAD_BASELINE, "champion")
        if f"{m}_brier" in frame.columns
    ]
    table = Table(
        title=f"{report.label} — test slice by month (Brier; AUC of the registered model)",
        title_justify="left",
    )
    for column in ("month", "n", "rate", *(DISPLAY_NAMES.get(m, m) for m in models), "AUC"):
        table.add_column(column, justify="left" if column == "month" else "right")
    auc_of = f"{report.registered}_auc"
    for row in frame.itertuples(index=False):
        values = row._asdict()
        table.add_row(
            str(values["month"]),
            f"{int(values['n'])}",
            f"{values['base_rate']:.3f}",
            *(_fmt(values.get(f"{m}_brier")) for m in models),
            _fmt(values.get(auc_of)),
        )
    console.print(table)


def _print_by_time(report: ModelReport, console: Console) -> None:
    """This quarter's in-period wins by third of the quarter: predicted / won and ECE per model."""
    frame = report.by_time
    assert frame is not None
    cut = frame[frame["cut"] == "period × quarter third"]
    present = set(cut["group"])
    groups = [
        f"quarter / {name}"
        for name, _, _ in evaluate_time.QUARTER_THIRDS
        if f"quarter / {name}" in present
    ]
    if not groups:
        return
    models = [m for m in ("model", "plain", STAGE_BASELINE, "champion") if m in set(cut["model"])]
    table = Table(
        title=f"{report.label} — won this quarter, by third of the quarter "
        "(test slice: predicted / won, ECE)",
        title_justify="left",
    )
    for column in ("snapshot in", "n", *(DISPLAY_NAMES.get(m, m) for m in models)):
        table.add_column(column, justify="left" if column == "snapshot in" else "right")
    for group in groups:
        part = cut[cut["group"] == group].set_index("model")
        cells = []
        for m in models:
            r = part.loc[m]
            cells.append(
                f"{r['predicted_wins']:.0f} / {r['actual_wins']:.0f}  {_fmt(float(r['ece']))}"
            )
        table.add_row(str(group).removeprefix("quarter / "), f"{int(part['rows'].iloc[0])}", *cells)
    console.print(table)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.4f}"


def _gate(
    report: ModelReport, target: str, baseline: str, settings: Settings, has_champion: bool
) -> gates.GateDecision:
    """The promotion decision for ``target``: beat ``baseline``, don't fall behind the champion."""
    metrics = report.metrics[target]
    return gates.decide(
        challenger_brier=metrics[report.registered].get("brier", math.nan),
        baseline_brier=metrics[baseline].get("brier", math.nan),
        champion_brier=metrics.get("champion", {}).get("brier") if has_champion else None,
        tolerance=settings.gate_tolerance,
        fallback=report.fallback_reason is not None,
        champion_version=report.previous_champion,
        baseline_label=f"the {DISPLAY_NAMES.get(baseline, baseline)} baseline",
    )
