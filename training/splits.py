"""Time-based splits: train on earlier snapshots, calibrate on the next slice, test on the last.

Never random rows: snapshots of one deal are strongly correlated, and a model is always used on
deals from after it was trained. The rules, for opportunity snapshots:

* **train** — snapshots dated up to ``train_snapshot_end`` of deals whose outcome was known at
  ``train_end`` (closed on or before it). The ``gap_days`` between the two dates (about the 90th
  percentile of a deal's sales cycle) is there because of censoring: right before ``train_end``
  only the deals that close fast have a known outcome, and fast deals are not typical deals.
  Every snapshot of a deal closing after ``train_end`` is dropped from training, so no deal has a
  label on both sides of the cut.
* **calibration** — snapshots in (``train_end``, ``calibration_end``] whose outcome is known at
  the label date (the export date, or ``--as-of``).
* **test** — snapshots in (``calibration_end``, ``test_end``] with a known outcome, where
  ``test_end`` is ``gap_days`` before the label date so that most outcomes are known. A deal open
  across ``calibration_end`` appears in both calibration and test (it cannot appear in train);
  calibration only fits a one-dimensional map, and dropping such deals would leave the test slice
  with young deals only, which is not what the model meets in production.

Leads are split by ``created_at``: the label of a lead is known ``sqo_window_days`` after it was
created, so training leads are those created at least that long before ``train_end``.

An export with outcomes but no dates (a converted flag and attributes only) cannot be split by
time: it gets a stratified random split (:func:`random_split`), and every report of it says
:data:`RANDOM_SPLIT_NOTE`. Leads of a partly dated export are split by their dates; the undated
ones, which cannot be placed in time, join the training slice only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

TRAIN, CALIBRATION, TEST = "train", "calibration", "test"
#: what every report of a model trained without dates says
RANDOM_SPLIT_NOTE = "no dates: a random split; these figures cannot show drift"
#: below this share of dated rows, a lead export is split at random (too few to order)
MIN_DATED_SHARE = 0.5
#: share of the usable rows in each slice, in time order
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
MIN_GAP_DAYS, MAX_GAP_DAYS = 28, 240


@dataclass(frozen=True)
class TimeSplit:
    """The cut-off dates of one split (all inclusive, end of day)."""

    train_snapshot_end: pd.Timestamp
    train_end: pd.Timestamp
    calibration_end: pd.Timestamp
    test_end: pd.Timestamp
    label_date: pd.Timestamp
    gap_days: int

    def as_params(self) -> dict[str, str]:
        """The split as MLflow parameters."""
        return {
            f"split_{k}": (v.date().isoformat() if isinstance(v, pd.Timestamp) else str(v))
            for k, v in asdict(self).items()
        }


def cycle_gap_days(created_at: pd.Series, closed_at: pd.Series, *, quantile: float = 0.9) -> int:
    """About the ``quantile`` of the sales cycle (created → closed) of closed deals, in days,
    clipped to [28, 240]."""
    cycle = (pd.to_datetime(closed_at) - pd.to_datetime(created_at)).dt.days.dropna()
    if cycle.empty:
        return MIN_GAP_DAYS
    return int(
        np.clip(
            np.ceil(np.quantile(cycle.to_numpy(dtype="float64"), quantile)),
            MIN_GAP_DAYS,
            MAX_GAP_DAYS,
        )
    )


def plan_opportunity_split(
    as_of: pd.Series,
    *,
    label_date: pd.Timestamp,
    gap_days: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> TimeSplit:
    """Cut-off dates for snapshot dates ``as_of`` (one per snapshot row).

    The usable rows are those dated up to ``label_date - gap_days``; the train/calibration/test
    boundaries are the quantiles of their dates given by ``fractions``.
    """
    label_date = pd.Timestamp(label_date).normalize()
    test_end = label_date - pd.Timedelta(days=gap_days)
    dates = pd.to_datetime(as_of)
    usable = np.sort(dates[dates <= test_end].to_numpy())
    if usable.size < 3:
        raise ValueError("too few snapshots before the label date to split by time")
    f_train, f_cal, _ = fractions
    train_end = pd.Timestamp(usable[int((usable.size - 1) * f_train)]).normalize()
    cal_end = pd.Timestamp(usable[int((usable.size - 1) * (f_train + f_cal))]).normalize()
    return TimeSplit(
        train_snapshot_end=train_end - pd.Timedelta(days=gap_days),
        train_end=train_end,
        calibration_end=cal_end,
        test_end=test_end,
        label_date=label_date,
        gap_days=int(gap_days),
    )


def assign_opportunity_slices(
    snapshots: pd.DataFrame, closed_at: pd.Series, split: TimeSplit
) -> pd.Series:
    """Slice name per snapshot row (``train``/``calibration``/``test``, missing = unused).

    Parameters
    ----------
    snapshots
        Rows with ``opportunity_id`` and ``as_of``.
    closed_at
        Close date of each row's deal as recorded in the export (NaT while open), aligned with
        ``snapshots``. Only compared with the cut-off dates, never used as a feature.
    """
    as_of = pd.to_datetime(snapshots["as_of"]).dt.normalize().to_numpy()
    train = _train_rows(snapshots, closed_at, split)
    known = _known_at(closed_at, split.label_date)
    cal = (
        (as_of > np.datetime64(split.train_end))
        & (as_of <= np.datetime64(split.calibration_end))
        & known
        & ~_deals_of(snapshots, train)
    )
    test = holdout_window(snapshots, closed_at, split) & known
    out = pd.Series(pd.NA, index=snapshots.index, dtype="string")
    out[train] = TRAIN
    out[cal] = CALIBRATION
    out[test] = TEST
    return out


def _known_at(closed_at: pd.Series, day: pd.Timestamp) -> np.ndarray:
    closed = pd.to_datetime(closed_at).dt.normalize().to_numpy()
    return ~np.isnat(closed) & (closed <= np.datetime64(day))


def _train_rows(snapshots: pd.DataFrame, closed_at: pd.Series, split: TimeSplit) -> np.ndarray:
    as_of = pd.to_datetime(snapshots["as_of"]).dt.normalize().to_numpy()
    return (as_of <= np.datetime64(split.train_snapshot_end)) & _known_at(
        closed_at, split.train_end
    )


def _deals_of(snapshots: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    """Every row of the deals that have a row in ``rows``."""
    ids = set(snapshots.loc[rows, "opportunity_id"])
    return snapshots["opportunity_id"].isin(ids).to_numpy()


def holdout_window(snapshots: pd.DataFrame, closed_at: pd.Series, split: TimeSplit) -> np.ndarray:
    """Snapshots dated in (``calibration_end``, ``test_end``] of deals not trained on, whatever
    their outcome.

    The test slice proper keeps those whose outcome is known at the label date. A target known
    for more rows uses more of the window: "won by the end of the quarter" is known (not won)
    for a deal still open when that quarter ended, and leaving such deals out would keep only
    the deals that closed by the label date — the faster ones — and flatter the forecast.
    """
    as_of = pd.to_datetime(snapshots["as_of"]).dt.normalize().to_numpy()
    window = (as_of > np.datetime64(split.calibration_end)) & (
        as_of <= np.datetime64(split.test_end)
    )
    # a deal trained on never reaches the test window (it closed before train_end, so this
    # only guards against bad data such as snapshots after the close date)
    return window & ~_deals_of(snapshots, _train_rows(snapshots, closed_at, split))


def thin_weeks(as_of: pd.Series, *, every: int) -> np.ndarray:
    """Mask keeping every ``every``-th distinct snapshot date (counted back from the latest)."""
    if every <= 1:
        return np.ones(len(as_of), dtype=bool)
    days = pd.to_datetime(as_of).dt.normalize()
    distinct = np.sort(days.unique())[::-1]
    keep = set(distinct[::every])
    return days.isin(keep).to_numpy()


def random_split(
    y: Any,
    *,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    random_state: int = 0,
) -> pd.Series:
    """Slice name per row at random, stratified by the outcome ``y`` (0/1).

    Only for data that cannot be ordered in time: each slice gets the same outcome rate, so
    the test figures say how well the model ranks and is calibrated on rows like the training
    ones — not how it holds up on later ones.
    """
    yv = np.asarray(y, dtype="float64")
    rng = np.random.default_rng(random_state)
    out = np.full(yv.size, TEST, dtype=object)
    f_train, f_cal, _ = fractions
    for value in np.unique(yv[~np.isnan(yv)]):
        rows = rng.permutation(np.flatnonzero(yv == value))
        n_train = int(round(rows.size * f_train))
        n_cal = int(round(rows.size * f_cal))
        out[rows[:n_train]] = TRAIN
        out[rows[n_train : n_train + n_cal]] = CALIBRATION
    return pd.Series(out, dtype="string")


def split_leads(
    created_at: pd.Series | None,
    *,
    window_days: int,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    n_rows: int | None = None,
    y: Any = None,
    random_state: int = 0,
) -> tuple[pd.Series, dict[str, Any]]:
    """Slice name per decided lead, by creation date; at random when too few are dated.

    Training leads were created at least ``window_days`` before the first calibration lead, so
    every training label was known when the calibration slice begins. With fewer than
    :data:`MIN_DATED_SHARE` of the leads dated, the split is random, stratified by ``y``
    (``split=random`` in the returned parameters); otherwise undated leads join the training
    slice, since they cannot be placed in the calibration or test period.
    """
    f_train, f_cal, _ = fractions
    n = int(n_rows if n_rows is not None else (0 if created_at is None else len(created_at)))
    dated_share = 0.0 if created_at is None or n == 0 else float(created_at.notna().sum()) / n
    if dated_share < MIN_DATED_SHARE:
        labels = np.zeros(n) if y is None else np.asarray(y, dtype="float64")
        out = random_split(labels, fractions=fractions, random_state=random_state)
        if created_at is not None:
            out.index = created_at.index
        return out, {
            "split": "random",
            "split_by": "random (stratified by outcome)",
            "split_note": RANDOM_SPLIT_NOTE,
            "dated_rows": int(round(dated_share * n)),
        }
    assert created_at is not None
    days = pd.to_datetime(created_at).dt.normalize()
    ordered = np.sort(days.dropna().to_numpy())
    train_end = pd.Timestamp(ordered[int((ordered.size - 1) * f_train)])
    cal_end = pd.Timestamp(ordered[int((ordered.size - 1) * (f_train + f_cal))])
    gap = pd.Timedelta(days=window_days)
    d = days.to_numpy()
    out = pd.Series(pd.NA, index=created_at.index, dtype="string")
    out[d <= np.datetime64(train_end - gap)] = TRAIN
    out[(d > np.datetime64(train_end)) & (d <= np.datetime64(cal_end))] = CALIBRATION
    out[d > np.datetime64(cal_end)] = TEST
    if (out == TRAIN).sum() < 0.2 * len(out):
        # short histories: a window-long gap would leave nothing to train on; keep the time order
        out[(d > np.datetime64(train_end - gap)) & (d <= np.datetime64(train_end))] = TRAIN
    undated = np.isnat(d)
    out[undated] = TRAIN
    info = {
        "split": "time",
        "split_by": "created_at",
        "undated_train_rows": int(undated.sum()),
        "lead_train_end": train_end.date().isoformat(),
        "lead_calibration_end": cal_end.date().isoformat(),
        "lead_gap_days": int(window_days),
    }
    return out, info
