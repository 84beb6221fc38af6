"""Training labels: what happened AFTER an as-of day. The only module that looks past ``as_of``.

Feature builders never import the outcome columns read here (status, closed_at of deals closed
after D, sqo_at after a lead's creation); labels are joined to features by the training code.

Label values are floats: 1.0 / 0.0, and NaN where the outcome is not known at the export date
(censored), so that they can go straight into numpy / LightGBM after filtering the NaNs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from features._timeline import DAY, as_day
from features.io import Export
from features.periods import quarter_end_days


def _outcomes(export: Export, ids: pd.Series) -> pd.DataFrame:
    opps = export.opportunities
    if opps is None:
        raise ValueError("opportunity labels need the export's opportunities")
    pos = pd.Index(opps["opportunity_id"]).get_indexer(pd.Series(ids).to_numpy())
    if (pos < 0).any():
        raise ValueError("some snapshot opportunity_ids are not in the export's opportunities")
    status = opps["status"].astype("string").iloc[pos].reset_index(drop=True)
    closed = (
        opps["closed_at"].iloc[pos].reset_index(drop=True)
        if "closed_at" in opps.columns
        else pd.Series(pd.NaT, index=pd.RangeIndex(len(pos)), dtype="datetime64[ns]")
    )
    return pd.DataFrame({"status": status, "closed_at": closed.astype("datetime64[ns]")})


def won_by(export: Export, snapshots: pd.DataFrame, end_dates: pd.Series | Any) -> pd.Series:
    """Whether each snapshot's deal was won by the end of the day ``end_dates`` (1.0 / 0.0 / NaN).

    Parameters
    ----------
    export
        The full export (its outcomes are the labels).
    snapshots
        ``opportunity_id`` and ``as_of`` rows (deals open at the end of ``as_of``).
    end_dates
        A day per snapshot row (a Series aligned by position) or one day for all rows; the
        period ends at the END of that day.

    Returns
    -------
    Series
        1.0 when won with ``closed_at`` on or before the end date; 0.0 when lost, won later, or
        still open at the export while the end date is on or before the export date (the deal
        was open at the end of the export day, so it was not won by then); NaN when still open
        and the end date is after the export date (censored).
    """
    out = _outcomes(export, snapshots["opportunity_id"])
    n = len(out)
    if isinstance(end_dates, pd.Series):
        ends = (
            pd.to_datetime(end_dates.reset_index(drop=True)).dt.normalize().astype("datetime64[ns]")
        )
    else:
        ends = pd.Series([as_day(end_dates, "end date")] * n, dtype="datetime64[ns]")
    exported = as_day(export.exported_at, "the export date")
    status = out["status"].to_numpy(dtype=object, na_value="open")
    won = status == "won"
    lost = status == "lost"
    closed_by = (out["closed_at"] < ends + DAY).to_numpy(dtype=bool, na_value=False)
    known_open = (ends <= exported).to_numpy(dtype=bool, na_value=False)
    result = np.where(won, np.where(closed_by, 1.0, 0.0), np.where(lost | known_open, 0.0, np.nan))
    return pd.Series(result, index=snapshots.index, dtype="float64")


def opportunity_labels(
    export: Export,
    snapshots: pd.DataFrame,
    *,
    horizons: dict[str, pd.Series | Any] | None = None,
) -> pd.DataFrame:
    """Outcome labels for (opportunity, as_of) snapshot rows, aligned row by row.

    Parameters
    ----------
    export
        The full export: statuses and close dates as of the export date.
    snapshots
        ``opportunity_id`` and ``as_of`` (a day: the deal was open at its end), e.g. from
        :func:`features.snapshots.opportunity_snapshots`.
    horizons
        Extra period ends: ``{name: Series aligned with snapshots, or one day}`` adds a column
        ``won_by_<name>`` (see :func:`won_by`).

    Returns
    -------
    DataFrame
        Same index as ``snapshots``, with ``won`` / ``lost`` (1.0 / 0.0; NaN when still open at
        the export), ``censored`` (bool: still open at the export), ``closed_at``,
        ``quarter_end`` (last day of the fiscal quarter containing ``as_of``, per
        ``config.fiscal_year_start_month``), ``next_quarter_end``, ``won_by_quarter_end`` and
        ``won_by_next_quarter_end`` (see :func:`won_by`).
    """
    out = _outcomes(export, snapshots["opportunity_id"])
    status = out["status"].to_numpy(dtype=object, na_value="open")
    censored = ~np.isin(status, ["won", "lost"])
    won = np.where(censored, np.nan, (status == "won").astype(np.float64))
    lost = np.where(censored, np.nan, (status == "lost").astype(np.float64))
    fy = export.config.fiscal_year_start_month
    as_of = pd.to_datetime(snapshots["as_of"].reset_index(drop=True)).astype("datetime64[ns]")
    q_end = quarter_end_days(as_of, fy).astype("datetime64[ns]")
    next_q_end = quarter_end_days(q_end + DAY, fy).astype("datetime64[ns]")
    labels = pd.DataFrame(
        {
            "won": won,
            "lost": lost,
            "censored": censored,
            "closed_at": out["closed_at"].to_numpy(),
            "quarter_end": q_end.to_numpy(),
            "next_quarter_end": next_q_end.to_numpy(),
        },
        index=snapshots.index,
    )
    labels["won_by_quarter_end"] = won_by(export, snapshots, q_end)
    labels["won_by_next_quarter_end"] = won_by(export, snapshots, next_q_end)
    for name, ends in (horizons or {}).items():
        labels[f"won_by_{name}"] = won_by(export, snapshots, ends)
    return labels


# ----------------------------------------------------------------------------------------
# leads
# ----------------------------------------------------------------------------------------


def lead_label_values(leads: pd.DataFrame, window_days: int) -> pd.Series:
    """The SQO label of each lead as the export shows it: 1.0 / 0.0 / NaN (no label at all).

    With ``created_at`` and ``sqo_at``: 1.0 when ``sqo_at`` is within ``window_days`` days of
    ``created_at`` (compared as days). Otherwise the ``is_sqo`` column, when there is one.
    """
    n = len(leads)
    out = pd.Series(np.nan, index=leads.index, dtype="float64")
    has_created = "created_at" in leads.columns
    if "is_sqo" in leads.columns:
        out = leads["is_sqo"].astype("Float64").astype("float64")
    if has_created and "sqo_at" in leads.columns:
        created = leads["created_at"].dt.normalize()
        sqo = leads["sqo_at"].dt.normalize()
        within = (sqo.notna() & (sqo <= created + pd.Timedelta(days=window_days))).to_numpy(
            dtype=bool
        )
        dated = created.notna().to_numpy(dtype=bool)
        out = pd.Series(
            np.where(dated, within.astype(np.float64), out.to_numpy()), index=leads.index
        )
    assert len(out) == n
    return out.astype("float64")


def lead_decided_at(leads: pd.DataFrame, window_days: int) -> pd.Series:
    """When each lead's SQO label became known (a day; NaT when it cannot be placed in time).

    A lead that became an SQO within the window is decided on its ``sqo_at``; any other dated
    lead is decided (negative, or positive with only ``is_sqo`` to go on) once the window has
    passed: ``created_at + window_days``.
    """
    if "created_at" not in leads.columns:
        return pd.Series(pd.NaT, index=leads.index, dtype="datetime64[ns]")
    created = leads["created_at"].dt.normalize()
    closes = created + pd.Timedelta(days=window_days)
    if "sqo_at" in leads.columns:
        sqo = leads["sqo_at"].dt.normalize()
        within = sqo.notna() & (sqo <= closes)
        return sqo.where(within, closes).where(created.notna()).astype("datetime64[ns]")
    return closes.astype("datetime64[ns]")


def decided_labels(
    leads: pd.DataFrame, exported_at: pd.Timestamp, window_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each lead's label as known at the end of day ``exported_at``: (is_sqo, decided).

    A dated lead is decided once :func:`lead_decided_at` has passed: on its ``sqo_at`` when it
    became an SQO within the window, else when the window ends. A lead with only ``is_sqo``
    to go on waits for the end of the window too, positive or negative: the flag does not say
    when the SQO happened, so a lead that shows ``is_sqo`` in an export cut at D may have
    converted after D, and taking positives early would over-count SQOs among recent leads.
    Leads without dates are decided when they carry a label. ``is_sqo`` is NaN when undecided.
    """
    label = lead_label_values(leads, window_days)
    decided_at = lead_decided_at(leads, window_days)
    dated = decided_at.notna().to_numpy(dtype=bool)
    labelled = label.notna().to_numpy(dtype=bool)
    by_date = (decided_at <= exported_at).to_numpy(dtype=bool, na_value=False)
    decided = np.where(dated, by_date, True) & labelled
    return np.where(decided, label.to_numpy(), np.nan), decided


def lead_labels(export: Export) -> pd.DataFrame:
    """The SQO label of every lead in the export, indexed by ``lead_id``.

    Returns
    -------
    DataFrame
        ``is_sqo``: 1.0 when the lead became an SQO within ``config.sqo_window_days`` of its
        ``created_at``, 0.0 when it did not and the window has passed by the export date, NaN
        when still undecided; ``decided``: False for leads whose label the export date cannot
        settle yet (see :func:`decided_labels`). Where dates are unknown, the ``is_sqo`` column
        is the label and such leads are decided.
    """
    leads = export.leads
    if leads is None:
        raise ValueError("lead labels need the export's leads")
    exported = as_day(export.exported_at, "the export date")
    is_sqo, decided = decided_labels(leads, exported, export.config.sqo_window_days)
    return pd.DataFrame(
        {"is_sqo": is_sqo, "decided": decided},
        index=pd.Index(
            leads["lead_id"].astype("string").to_numpy(), name="lead_id", dtype="string"
        ),
    )
