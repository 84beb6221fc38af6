"""Backtest of the forecast: forecasts made during past quarters against what was actually won.

For each of the last ``periods`` fiscal quarters that ended by the export date, and for each week
``w`` of ``weeks``, the forecast is made as of the end of day ``start + 7·w − 1`` (the last day of
that week of the quarter) exactly as it would have been made then:

* the export is cut at that day (:func:`features.training_table.as_known_at`: rows recorded later
  are dropped, deals closed later show open);
* a close-probability model is trained on the cut alone — weekly snapshots, the time split with
  its gap, the training and calibration slices of ``pipecast train`` (no MLflow registry); the
  win incidence by deal age (Aalen–Johansen) when the cut holds too few closed deals, as
  ``pipecast train`` would;
* the quarter's bookings are forecast (:func:`models.forecast.forecast_bookings`): won to date
  (certain) + the deals open at the cut (Σ amount × p_win_in_period; P10–P90 over independent
  deals times one factor they share, the model's own uncertainty, read from how far the cut's
  model strayed in comparable past quarters at the same week:
  :func:`models.forecast.estimate_model_uncertainty`) + new business (deals not yet created that
  will be won in the quarter).

Beside it, the CRM's stage-weighted number: won to date + Σ amount × stage probability of the
deals open at the cut whose expected close date falls in the quarter (the declared stage
probabilities, else each stage's historical win rate as known at the cut) — what ``pipecast
forecast`` reports as ``stage_weighted``. Both are compared with what was actually won, read from
the full export: the quarter's bookings for the totals, and the bookings of the deals open at the
cut for the open-pipeline part (like with like).

Trained models are cached on disk per cut, keyed by the export's fingerprint, the cut day, the
seed and the code that builds and fits them, so a rerun on the same export fits nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import logging
import math
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import features
from features import labels as feature_labels
from features import opportunity as opportunity_features
from features.errors import InputError
from features.io import Export
from features.periods import Period, fiscal_quarter
from features.snapshots import snapshot_dates, state_as_of
from features.training_table import as_known_at
from models import baselines as baselines_module
from models import close_probability as close_module
from models import lgbm as lgbm_module
from models import survival as survival_module
from models import time_to_close as time_module
from models.baselines import HistoricalCloseModel
from models.forecast import (
    estimate_model_uncertainty,
    estimate_new_business,
    forecast_bookings,
    in_period,
    model_predictor,
    stage_probabilities,
    won_in_period,
)
from models.survival import CumulativeIncidenceCloseModel, incidence_on_snapshots
from models.time_to_close import CompetingRisksCloseModel, fit_on_time_split
from training import splits

log = logging.getLogger(__name__)

DEFAULT_PERIODS = 4
DEFAULT_WEEKS = (1, 4, 8, 12)
#: below these counts of closed deals / wins in a cut's training slice, the win incidence by
#: deal age is fitted instead (the defaults of ``Settings.min_closed_deals`` / ``min_wins``)
MIN_CLOSED_DEALS, MIN_WINS = 200, 50
#: columns known only for the live pipeline (current values with no history): never trained on
#: (as in ``pipecast train``)
CURRENT_ONLY_FEATURES = ("has_next_step", "days_since_last_contacted")
#: above this many training snapshots, every other week is used (as ``pipecast train`` does)
MAX_TRAIN_SNAPSHOTS = 80_000
#: bump when the cached model files change meaning (their content or their key)
CACHE_FORMAT = 1
#: the columns of a backtest table, in order
COLUMNS = [
    "period",
    "week",
    "as_of",
    "model",
    "model_from_cache",
    "open_deals",
    "won_to_date",
    "open_expected",
    "open_p10",
    "open_p90",
    "model_uncertainty",
    "expected_new",
    "forecast",
    "p10",
    "p90",
    "stage_pipeline",
    "stage_weighted",
    "actual_open",
    "actual",
    "error",
    "pct_error",
    "stage_error",
    "stage_pct_error",
    "inside_p10_p90",
    "open_error",
    "open_pct_error",
    "stage_open_error",
    "stage_open_pct_error",
    "open_inside_p10_p90",
]


@dataclass(frozen=True)
class Cut:
    """One forecast to replay: ``period`` forecast at the end of ``day``, week ``week`` of it."""

    period: Period
    week: int
    day: pd.Timestamp


@dataclass
class BacktestResult:
    """What :func:`run_backtest` returns.

    Attributes
    ----------
    table
        One row per forecast (:data:`COLUMNS`), oldest first.
    summary
        The headline figures (:func:`summarize_backtest`).
    by_week
        The figures per week of the quarter (:func:`errors_by_week`).
    notes
        Cuts left out and why.
    fitted, cached
        How many cut models were trained, and how many read from the cache.
    seconds
        Wall time of the run.
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    by_week: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    fitted: int = 0
    cached: int = 0
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------
# the cuts
# ----------------------------------------------------------------------------------------


def parse_weeks(text: str) -> tuple[int, ...]:
    """``"1,4,8,12"`` → ``(1, 4, 8, 12)``: weeks of a quarter, 1 … 13, sorted, no repeats."""
    parts = [w.strip() for w in str(text).split(",")]
    try:
        weeks = tuple(sorted({int(w) for w in parts if w}))
    except ValueError:
        weeks = ()
    if not weeks or min(weeks) < 1 or max(weeks) > 13:
        raise InputError(
            f"--weeks {text!r}: give weeks of the quarter between 1 and 13, comma-separated, "
            "e.g. --weeks 1,4,8,12."
        )
    return weeks


def check_periods(periods: int) -> int:
    """The number of past quarters to test, refused when below 1."""
    if isinstance(periods, bool) or not isinstance(periods, (int, np.integer)) or periods < 1:
        raise InputError(
            f"--periods {periods}: give how many past fiscal quarters to test, a whole number "
            "≥ 1, e.g. --periods 4."
        )
    return int(periods)


def backtest_cuts(
    export: Export, *, periods: int, weeks: Sequence[int]
) -> tuple[list[Cut], list[str]]:
    """The forecasts to replay, oldest first, and notes on the ones left out.

    The quarters are the last ``periods`` fiscal quarters (``fiscal_year_start_month`` of the
    export) that ended on or before the export date. The forecast of week ``w`` is made at the
    end of day ``start + 7·w − 1``; a week that ends after the quarter (week 13 of a 90-day
    quarter) or on or before the first opportunity was created is left out with a note.
    """
    periods = check_periods(periods)
    weeks = parse_weeks(",".join(str(w) for w in weeks))
    opps = export.opportunities
    if opps is None or not len(opps):
        raise InputError("the export has no opportunities: there is no forecast to backtest.")
    if "closed_at" not in opps.columns or not opps["closed_at"].notna().any():
        raise InputError(
            "the opportunities have no closed_at dates: the backtest needs to know when past "
            "deals were won."
        )
    fy = export.config.fiscal_year_start_month
    exported = export.exported_at.normalize()
    current = fiscal_quarter(exported, fy)
    last = (
        current
        if current.end <= exported
        else fiscal_quarter(current.start - pd.Timedelta(days=1), fy)
    )
    quarters = [last]
    while len(quarters) < periods:
        quarters.append(fiscal_quarter(quarters[-1].start - pd.Timedelta(days=1), fy))
    first = pd.Timestamp(opps["created_at"].min()).normalize()
    cuts: list[Cut] = []
    notes: list[str] = []
    for q in reversed(quarters):
        for w in weeks:
            day = q.start + pd.Timedelta(days=7 * w - 1)
            if day > q.end:
                notes.append(f"{q.label} week {w}: the quarter ends before that week does")
            elif day <= first:
                notes.append(
                    f"{q.label} week {w}: no opportunity existed yet on {day.date()} "
                    f"(the first was created {first.date()})"
                )
            else:
                cuts.append(Cut(q, int(w), day))
    if not cuts:
        raise InputError(
            f"the export ({first.date()} to {exported.date()}) holds no past quarter to "
            f"backtest at weeks {','.join(map(str, weeks))}: give fewer --periods or a longer "
            "export."
        )
    return cuts, notes


# ----------------------------------------------------------------------------------------
# the model of a cut
# ----------------------------------------------------------------------------------------


class TooLittleHistory(InputError):
    """The export cut at a backtest day holds no closed deal to learn from."""


def fit_close_model(
    known: Export,
    *,
    seed: int = 0,
    min_closed_deals: int = MIN_CLOSED_DEALS,
    min_wins: int = MIN_WINS,
) -> Any:
    """A close-probability model trained on the export as known at its export date only.

    The same snapshots, time split (with its gap), training and calibration slices and
    calibration as ``pipecast train``, without evaluation or MLflow. The test slice is left
    unused, as it is by the model ``pipecast train`` registers. When the training slice has
    fewer than ``min_closed_deals`` closed deals or ``min_wins`` wins, or no calibration slice
    follows it, the cumulative incidence of winning by deal age (by stage × segment where they
    hold enough deals; Aalen–Johansen) is fitted instead, as ``pipecast train`` does.

    Raises
    ------
    TooLittleHistory
        No deal had closed by the export date of ``known``.
    """
    opps = known.opportunities
    assert opps is not None
    label_date = known.exported_at.normalize()
    table = opportunity_features.build_training_set(known, dates=snapshot_dates(known))
    snaps = table[["opportunity_id", "as_of"]]
    lab = feature_labels.opportunity_labels(known, snaps)
    known_outcome = ~lab["censored"].to_numpy(dtype=bool)
    X = table.drop(
        columns=[c for c in ("opportunity_id", "as_of", *CURRENT_ONLY_FEATURES) if c in table]
    )
    y = lab["won"].to_numpy(dtype="float64")
    gap = splits.cycle_gap_days(opps["created_at"], opps["closed_at"])
    split: splits.TimeSplit | None = None
    try:
        split = splits.plan_opportunity_split(table["as_of"], label_date=label_date, gap_days=gap)
        s = splits.assign_opportunity_slices(snaps, lab["closed_at"], split).to_numpy(
            dtype=object, na_value=""
        )
    except ValueError:
        # too short a history for a split: only the baseline below can be fitted
        s = np.full(len(table), "", dtype=object)
    train, cal = s == splits.TRAIN, s == splits.CALIBRATION
    deals = pd.DataFrame({"id": snaps["opportunity_id"].to_numpy()[train], "won": y[train]})
    deals = deals.drop_duplicates("id")
    if (
        split is not None
        and len(deals) >= min_closed_deals
        and deals["won"].sum() >= min_wins
        and cal.any()
    ):
        # as pipecast train: every snapshot up to train_end, open deals included (censored
        # there), calibrated on the snapshots up to calibration_end with outcomes at label_date
        return fit_on_time_split(
            X,
            as_of=table["as_of"],
            closed_at=lab["closed_at"],
            won=lab["won"],
            train_end=split.train_end,
            calibration_end=split.calibration_end,
            label_date=split.label_date,
            fiscal_year_start_month=known.config.fiscal_year_start_month,
            categorical=opportunity_features.categorical_columns(X),
            n_estimators=300,
            learning_rate=0.1,
            max_training_rows=200_000,
            random_state=seed,
        )
    nothing = f"no deal had been won by {label_date.date()}: nothing to learn from"
    if not (known_outcome & (y == 1)).any():
        raise TooLittleHistory(nothing)
    # the training slice when there is one (censored at its end), else every snapshot with what
    # the export date knows; deals still open, stale ones included, stay in the risk sets
    for censor_at in ([split.train_end] if split is not None else []) + [label_date]:
        fallback = incidence_on_snapshots(X, snaps, lab, censor_at)
        if fallback is not None:
            return fallback
        # no win by the end of the training slice: use all that is known
    raise TooLittleHistory(nothing)


#: how the backtest table names the fallback models (a learned model is "LightGBM")
_MODEL_LABELS = {
    HistoricalCloseModel.kind: "historical rates",
    CumulativeIncidenceCloseModel.kind: "incidence by age",
}

#: the fitting code as defined here (its source is part of the cache key)
_FIT_CODE = fit_close_model


def _days(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    delta = pd.to_datetime(later).dt.normalize() - pd.to_datetime(earlier).dt.normalize()
    return delta.dt.days.to_numpy(dtype="float64", na_value=np.nan)


def export_fingerprint(export: Export) -> str:
    """A short hash of what a cut model is learned from: the opportunity tables and the config."""
    h = hashlib.sha256()
    for name in ("opportunities", "stage_history", "activities"):
        table = export.table(name)
        h.update(name.encode())
        if table is not None:
            h.update(",".join(map(str, table.columns)).encode())
            h.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    h.update(repr(export.config).encode())
    return h.hexdigest()[:16]


def code_fingerprint() -> str:
    """A short hash of the code that builds a cut's training table and fits its model.

    The sources of ``features/`` (top level), the model modules, the time split and
    :func:`fit_close_model`, with the LightGBM and scikit-learn versions: a cached model is
    reused only when none of them changed.
    """
    h = hashlib.sha256(f"cache format {CACHE_FORMAT}".encode())
    folder = Path(features.__file__).resolve().parent
    for path in sorted(folder.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    for module in (
        close_module,
        lgbm_module,
        baselines_module,
        survival_module,
        time_module,
        splits,
    ):
        h.update(inspect.getsource(module).encode())
    h.update(inspect.getsource(_FIT_CODE).encode())
    for dist in ("lightgbm", "scikit-learn", "numpy", "pandas"):
        try:
            h.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
        except importlib.metadata.PackageNotFoundError:
            continue
    return h.hexdigest()[:16]


def model_cache_path(
    folder: Path, *, data: str, code: str, day: pd.Timestamp, seed: int, minimums: tuple[int, int]
) -> Path:
    """Where the model of the cut at ``day`` is cached (one folder per export and code)."""
    lo_deals, lo_wins = minimums
    return Path(folder) / f"{data}-{code}" / f"close-{day.date()}-s{seed}-m{lo_deals}-{lo_wins}.pkl"


def _cached_model(
    known: Export,
    day: pd.Timestamp,
    path: Path | None,
    *,
    seed: int,
    minimums: tuple[int, int],
) -> tuple[Any, bool]:
    """The model of a cut and whether it came from the cache (an unreadable file is refitted)."""
    if path is not None and path.exists():
        try:
            with path.open("rb") as fh:
                return pickle.load(fh), True  # noqa: S301 — our own cache, written below
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            log.warning("backtest cache %s is unreadable (%s): training again", path, exc)
    model = fit_close_model(known, seed=seed, min_closed_deals=minimums[0], min_wins=minimums[1])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # written aside then renamed, so an interrupted run never leaves half a model behind
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return model, False


# ----------------------------------------------------------------------------------------
# one forecast and its actual
# ----------------------------------------------------------------------------------------


def forecast_at(
    known: Export, model: Any, *, day: pd.Timestamp, period: Period, seed: int = 0
) -> dict[str, Any]:
    """The forecast of ``period`` made at the end of ``day`` with ``model`` (numbers only).

    ``known`` is the export cut at ``day``: features, won deals, the new-business rate and the
    stage-weighted pipeline all come from it. The ``open_ids`` entry lists the deals open at
    ``day`` (to read their actual outcome with :func:`actual_bookings`).
    """
    X = opportunity_features.build(known, as_of=day)
    state = state_as_of(known, day).reindex(X.index)
    # the amount in force at day, as ``pipecast forecast`` uses it
    amounts = pd.to_numeric(state["amount"], errors="coerce").fillna(0.0).to_numpy(dtype=float)

    p = in_period_probabilities(model, X, day=day, period=period)
    won = won_in_period(known.opportunities, period)
    new = estimate_new_business(known.opportunities, as_of=day, period=period)
    uncertainty = estimate_model_uncertainty(
        known, model_predictor(model), as_of=day, period=period
    )
    numbers = forecast_bookings(
        amounts,
        p,
        won_amounts=won["amount"].to_numpy(dtype=float),
        new_business=new,
        model_uncertainty=uncertainty.sigma,
        seed=seed,
    )
    probability = state["stage"].astype("string").map(stage_probabilities(known)).astype(float)
    closing = in_period(state["expected_close_date"], period)
    stage_pipeline = float(np.nansum(amounts * probability.fillna(0.0).to_numpy() * closing))
    return {
        "open_ids": X.index.astype("string"),
        "open_deals": len(X),
        "won_to_date": numbers.won_to_date,
        "open_expected": numbers.open_expected,
        "open_p10": numbers.open.quantile(0.1),
        "open_p90": numbers.open.quantile(0.9),
        "model_uncertainty": uncertainty.sigma,
        "expected_new": numbers.expected_new,
        "forecast": numbers.expected,
        "p10": numbers.total.quantile(0.1),
        "p90": numbers.total.quantile(0.9),
        "stage_pipeline": stage_pipeline,
        "stage_weighted": numbers.won_to_date + stage_pipeline,
    }


def in_period_probabilities(
    model: Any, X: pd.DataFrame, *, day: pd.Timestamp, period: Period
) -> np.ndarray:
    """``p_win_in_period`` of the deals of ``X`` (features at the end of ``day``) for ``period``."""
    if not len(X):
        return np.zeros(0)
    start, end = (period.start - day).days, (period.end - day).days
    if getattr(model, "kind", None) == CompetingRisksCloseModel.kind:
        # the calendar of the weeks ahead comes from the forecast day
        p_win = np.asarray(model.predict_p_win(X, as_of=day), dtype="float64")
        return np.asarray(
            model.predict_in_period(X, start_days=start, end_days=end, p_win=p_win, as_of=day),
            dtype="float64",
        )
    p_win = np.asarray(model.predict_proba(X)[:, 1], dtype="float64")
    return np.asarray(
        model.predict_in_period(X, start_days=start, end_days=end, p_win=p_win),
        dtype="float64",
    )


def actual_bookings(export: Export, period: Period, open_ids: Any = None) -> tuple[float, float]:
    """What was won in ``period`` according to the full export: (all deals, the given deals).

    The first number is the quarter's bookings (amounts of deals won with ``closed_at`` inside
    the period); the second counts only the deals in ``open_ids`` (those open at a cut).
    """
    won = won_in_period(export.opportunities, period)
    total = float(won["amount"].sum())
    if open_ids is None or not len(won):
        return total, 0.0
    ids = pd.Index(pd.Series(open_ids, dtype="string"))
    mine = won["opportunity_id"].astype("string").isin(ids).to_numpy(dtype=bool)
    return total, float(won.loc[mine, "amount"].sum())


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def _row(cut: Cut, model: Any, cached: bool, numbers: dict[str, Any], export: Export) -> dict:
    actual, actual_open = actual_bookings(export, cut.period, numbers.pop("open_ids"))
    error = numbers["forecast"] - actual
    stage_error = numbers["stage_weighted"] - actual
    open_error = numbers["open_expected"] - actual_open
    stage_open_error = numbers["stage_pipeline"] - actual_open
    return {
        "period": cut.period.label,
        "week": cut.week,
        "as_of": cut.day.date().isoformat(),
        "model": getattr(model, "kind", type(model).__name__),
        "model_from_cache": cached,
        **numbers,
        "actual_open": actual_open,
        "actual": actual,
        "error": error,
        "pct_error": _ratio(error, actual),
        "stage_error": stage_error,
        "stage_pct_error": _ratio(stage_error, actual),
        "inside_p10_p90": bool(numbers["p10"] <= actual <= numbers["p90"]),
        "open_error": open_error,
        "open_pct_error": _ratio(open_error, actual_open),
        "stage_open_error": stage_open_error,
        "stage_open_pct_error": _ratio(stage_open_error, actual_open),
        "open_inside_p10_p90": bool(numbers["open_p10"] <= actual_open <= numbers["open_p90"]),
    }


# ----------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------


def run_backtest(
    export: Export,
    *,
    periods: int = DEFAULT_PERIODS,
    weeks: Sequence[int] = DEFAULT_WEEKS,
    cache_dir: Path | None = None,
    progress: Any = None,
    seed: int = 0,
    min_closed_deals: int = MIN_CLOSED_DEALS,
    min_wins: int = MIN_WINS,
) -> BacktestResult:
    """Replay the forecast at each week of each past quarter and compare it with the actual.

    Parameters
    ----------
    export
        The full CRM export; every forecast sees it only as known at its own day.
    periods, weeks
        The last ``periods`` complete fiscal quarters before the export date, each forecast at
        the end of each week in ``weeks`` (1 … 13).
    cache_dir
        Folder of the cached cut models (None: no cache).
    progress
        A rich ``Progress`` to advance once per forecast, or None.
    seed
        Seed of the models and of the Monte Carlo simulation.
    min_closed_deals, min_wins
        Below these, a cut's model is the historical baseline (``pipecast train``'s rule).

    Returns
    -------
    BacktestResult
        The table (``error`` = forecast − actual, ``pct_error`` = error / actual, the same for
        the stage-weighted number and for the open-pipeline part), its summary and the cuts
        left out.
    """
    started = time.perf_counter()
    cuts, notes = backtest_cuts(export, periods=periods, weeks=weeks)
    folder = None
    data_key = code_key = ""
    if cache_dir is not None:
        data_key, code_key = export_fingerprint(export), code_fingerprint()
        folder = Path(cache_dir)
    task = progress.add_task("backtest", total=len(cuts)) if progress is not None else None
    rows = []
    fitted = cached = 0
    for cut in cuts:
        if progress is not None:
            progress.update(task, description=f"backtest {cut.period.label} week {cut.week}")
        known = as_known_at(export, cut.day)
        path = (
            None
            if folder is None
            else model_cache_path(
                folder,
                data=data_key,
                code=code_key,
                day=cut.day,
                seed=seed,
                minimums=(min_closed_deals, min_wins),
            )
        )
        try:
            model, from_cache = _cached_model(
                known, cut.day, path, seed=seed, minimums=(min_closed_deals, min_wins)
            )
        except TooLittleHistory as exc:
            notes.append(f"{cut.period.label} week {cut.week} ({cut.day.date()}): {exc}")
            if progress is not None:
                progress.advance(task)
            continue
        cached += from_cache
        fitted += not from_cache
        numbers = forecast_at(known, model, day=cut.day, period=cut.period, seed=seed)
        rows.append(_row(cut, model, from_cache, numbers, export))
        if progress is not None:
            progress.advance(task)
    if not rows:
        raise InputError(
            "no backtest forecast could be made: " + "; ".join(notes) + ". Give fewer --periods "
            "or later --weeks, or an export with a longer history."
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    for note in notes:
        log.info("backtest: left out %s", note)
    return BacktestResult(
        table=table,
        summary=summarize_backtest(table),
        by_week=errors_by_week(table),
        notes=notes,
        fitted=fitted,
        cached=cached,
        seconds=time.perf_counter() - started,
    )


# ----------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------


def _mean(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def errors_by_week(table: pd.DataFrame) -> pd.DataFrame:
    """Per week of the quarter: mean absolute % error (MAPE) and mean % error (bias) of pipecast
    and of the stage-weighted number, for the totals and the open pipeline, and the share of
    forecasts whose P10–P90 range held the actual."""
    out = []
    for week, t in table.groupby("week", sort=True):
        out.append(
            {
                "week": int(week),
                "forecasts": len(t),
                "pipecast_mape": _mean(t["pct_error"].abs()),
                "pipecast_bias": _mean(t["pct_error"]),
                "stage_weighted_mape": _mean(t["stage_pct_error"].abs()),
                "stage_weighted_bias": _mean(t["stage_pct_error"]),
                "inside_p10_p90": _mean(t["inside_p10_p90"].astype(float)),
                "open_mape": _mean(t["open_pct_error"].abs()),
                "open_bias": _mean(t["open_pct_error"]),
                "stage_open_mape": _mean(t["stage_open_pct_error"].abs()),
                "open_inside_p10_p90": _mean(t["open_inside_p10_p90"].astype(float)),
            }
        )
    return pd.DataFrame(out)


def summarize_backtest(table: pd.DataFrame) -> dict[str, Any]:
    """The headline figures of a backtest table.

    ``pipecast_mape`` / ``stage_weighted_mape``: mean absolute percentage error of the total
    forecast against the quarter's bookings (``mape_ratio`` = pipecast ÷ stage-weighted);
    ``*_mae``: mean absolute error in currency; ``inside_p10_p90``: share of forecasts whose
    range held the actual; ``max_abs_week_bias``: the largest mean % error of any week of the
    quarter; ``open_*``: the same for the open pipeline against what those deals brought in;
    ``model_uncertainty``: the mean σ of the shared factor on the open deals' bookings.
    """
    weeks = errors_by_week(table)
    pipecast = _mean(table["pct_error"].abs())
    stage = _mean(table["stage_pct_error"].abs())
    return {
        "forecasts": len(table),
        "quarters": int(table["period"].nunique()),
        "weeks": [int(w) for w in sorted(table["week"].unique())],
        "pipecast_mape": pipecast,
        "stage_weighted_mape": stage,
        "mape_ratio": _ratio(pipecast, stage),
        "pipecast_mae": _mean(table["error"].abs()),
        "stage_weighted_mae": _mean(table["stage_error"].abs()),
        "pipecast_bias": _mean(table["pct_error"]),
        "stage_weighted_bias": _mean(table["stage_pct_error"]),
        "inside_p10_p90": _mean(table["inside_p10_p90"].astype(float)),
        "max_abs_week_bias": float(weeks["pipecast_bias"].abs().max()) if len(weeks) else math.nan,
        "open_mape": _mean(table["open_pct_error"].abs()),
        "stage_open_mape": _mean(table["stage_open_pct_error"].abs()),
        "open_mae": _mean(table["open_error"].abs()),
        "stage_open_mae": _mean(table["stage_open_error"].abs()),
        "open_inside_p10_p90": _mean(table["open_inside_p10_p90"].astype(float)),
        "model_uncertainty": _mean(table["model_uncertainty"]),
        "models": {str(k): int(v) for k, v in table["model"].value_counts().items()},
    }


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars unwrapped, NaN/inf → None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def backtest_document(result: BacktestResult) -> dict[str, Any]:
    """The backtest as a JSON-ready document: ``summary``, ``by_week``, ``forecasts``, ``notes``."""
    return {
        "summary": _plain(result.summary),
        "by_week": _plain(result.by_week.to_dict(orient="records")),
        "forecasts": _plain(result.table.to_dict(orient="records")),
        "notes": list(result.notes),
        "models_trained": result.fitted,
        "models_from_cache": result.cached,
        "seconds": round(result.seconds, 2),
    }


# ----------------------------------------------------------------------------------------
# MLflow
# ----------------------------------------------------------------------------------------


def log_backtest(
    result: BacktestResult,
    *,
    tracking_uri: str,
    artifact_location: str | None,
    data_dir: Path | None = None,
    chart: Path | None = None,
) -> str:
    """Log the backtest as its own MLflow run (summary metrics, per-week metrics, the table,
    the chart); returns the run id."""
    from training import tracking

    client = tracking.configure(tracking_uri)
    s = result.summary
    first, last = result.table["period"].iloc[0], result.table["period"].iloc[-1]
    tags = {"run_kind": "backtest", **tracking.code_version()}
    with tracking.training_run(
        client, artifact_location, run_name=f"backtest {first}…{last}", tags=tags
    ) as run_id:
        tracking.log_params(
            {
                "quarters": f"{first}…{last}",
                "n_quarters": s["quarters"],
                "weeks": ",".join(map(str, s["weeks"])),
                "data_dir": str(data_dir or ""),
                "data_fingerprint": (
                    tracking.data_fingerprint(data_dir) if data_dir is not None else ""
                ),
                "models_fitted": result.fitted,
                "models_cached": result.cached,
            }
        )
        tracking.log_metrics({k: v for k, v in s.items() if not isinstance(v, (list, dict))})
        tracking.log_metrics({"seconds": result.seconds})
        for row in result.by_week.itertuples(index=False):
            tracking.log_metrics(
                {k: v for k, v in row._asdict().items() if k != "week"},
                prefix=f"week{row.week}_",
            )
        tracking.log_table(result.table, "backtest/forecasts.csv")
        tracking.log_table(result.by_week, "backtest/by_week.csv")
        tracking.log_json({"summary": s, "notes": result.notes}, "backtest/summary.json")
        if chart is not None and Path(chart).exists():
            tracking.log_file(Path(chart), "backtest")
    return run_id


# ----------------------------------------------------------------------------------------
# the console
# ----------------------------------------------------------------------------------------


def _money(v: float) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v / 1e6:,.2f}M" if abs(v) >= 1e6 else f"{v / 1e3:,.0f}k"


def _pct(v: float, sign: bool = True) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v:+.0%}" if sign else f"{v:.0%}"


def render_backtest(result: BacktestResult, console: Any) -> None:
    """The backtest as rich tables: every forecast, then the figures per week and overall."""
    from rich.table import Table

    table = result.table
    rows = Table(
        title="Forecasts made during past quarters vs the bookings actually won",
        title_justify="left",
    )
    for name in (
        "quarter",
        "week",
        "as of",
        "model",
        "won to date",
        "forecast",
        "P10–P90",
        "stage-wtd",
        "actual",
        "error",
        "stage err",
        "in range",
    ):
        rows.add_column(name, justify="left" if name in ("quarter", "as of", "model") else "right")
    for r in table.itertuples(index=False):
        rows.add_row(
            r.period,
            str(r.week),
            r.as_of,
            _MODEL_LABELS.get(r.model, "LightGBM"),
            _money(r.won_to_date),
            _money(r.forecast),
            f"{_money(r.p10)}–{_money(r.p90)}",
            _money(r.stage_weighted),
            _money(r.actual),
            _pct(r.pct_error),
            _pct(r.stage_pct_error),
            "yes" if r.inside_p10_p90 else "no",
        )
    console.print(rows)
    weekly = Table(title="By week of the quarter (totals; open pipeline)", title_justify="left")
    for name in (
        "week",
        "forecasts",
        "pipecast |% err|",
        "bias",
        "stage-wtd |% err|",
        "stage bias",
        "in P10–P90",
        "open |% err|",
        "stage open |% err|",
    ):
        weekly.add_column(name, justify="right")
    for w in result.by_week.itertuples(index=False):
        weekly.add_row(
            str(w.week),
            str(w.forecasts),
            _pct(w.pipecast_mape, sign=False),
            _pct(w.pipecast_bias),
            _pct(w.stage_weighted_mape, sign=False),
            _pct(w.stage_weighted_bias),
            _pct(w.inside_p10_p90, sign=False),
            _pct(w.open_mape, sign=False),
            _pct(w.stage_open_mape, sign=False),
        )
    console.print(weekly)
    s = result.summary
    console.print(
        f"pipecast mean |% error| {_pct(s['pipecast_mape'], sign=False)} vs stage-weighted "
        f"{_pct(s['stage_weighted_mape'], sign=False)} (ratio {s['mape_ratio']:.2f}); "
        f"actual inside P10–P90 in {_pct(s['inside_p10_p90'], sign=False)} of "
        f"{s['forecasts']} forecasts; open pipeline {_pct(s['open_mape'], sign=False)} vs "
        f"{_pct(s['stage_open_mape'], sign=False)}; model uncertainty (σ of the factor the "
        f"open deals share) {_pct(s['model_uncertainty'], sign=False)} on average. "
        f"Models trained {result.fitted}, "
        f"from cache {result.cached}; {result.seconds:.0f} s.",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"[dim]left out: {note}[/]", highlight=False)
