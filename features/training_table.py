"""Labelled training tables: the point-in-time features the models learn from, beside their labels.

What ``pipecast features --snapshots`` writes, for an analyst who wants to see (or model) exactly
the rows training sees. Features come from :mod:`features.opportunity` / :mod:`features.lead`
(point-in-time: each row knows only what was recorded by the end of its ``as_of`` day); labels
come from :mod:`features.labels` and are read as of the export date, so a deal still open then is
``label_censored`` (never counted as lost) and a lead whose SQO window has not passed is not
``label_decided``. Label columns carry the ``label_`` prefix so they cannot be mistaken for
features.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pandas.tseries.frequencies import to_offset

from features import labels, lead, opportunity
from features.errors import InputError
from features.io import Export
from features.snapshots import cut_export, snapshot_dates

#: default snapshot frequency: the end of every Sunday
WEEKLY = "W-SUN"


def parse_frequency(freq: str) -> str:
    """Check a snapshot frequency (a pandas offset alias such as ``W-SUN``, ``14D``, ``MS``)."""
    try:
        offset = to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"--every {freq!r} is not a snapshot frequency: give a pandas offset alias such as "
            "W-SUN (every Sunday, the default), 2W-SUN, 14D or MS (month starts)."
        ) from exc
    if pd.Timestamp("2026-01-01") + offset <= pd.Timestamp("2026-01-01"):
        raise InputError(f"--every {freq!r} must move forward in time (e.g. W-SUN or 14D).")
    return freq


def as_known_at(export: Export, as_of: Any) -> Export:
    """The export as it stood at the end of day ``as_of`` (itself when ``as_of`` is not earlier)."""
    day = pd.Timestamp(as_of).normalize()
    if day >= export.exported_at.normalize():
        return export
    cut = cut_export(export, day)
    cut.config.exported_at = day
    return cut


def opportunity_training_table(export: Export, *, freq: str = WEEKLY) -> pd.DataFrame:
    """Every opportunity at each snapshot day it was open, with its features and labels.

    Returns
    -------
    DataFrame
        ``opportunity_id``, ``as_of``, the features of :func:`features.opportunity.build`, then
        ``label_won``, ``label_lost``, ``label_censored``, ``label_closed_at``,
        ``label_quarter_end``, ``label_won_by_quarter_end``, ``label_next_quarter_end`` and
        ``label_won_by_next_quarter_end`` (see :func:`features.labels.opportunity_labels`).
    """
    dates = snapshot_dates(export, freq=parse_frequency(freq))
    table = opportunity.build_training_set(export, dates=dates)
    lab = labels.opportunity_labels(export, table[["opportunity_id", "as_of"]])
    return pd.concat([table, lab.add_prefix("label_")], axis=1)


def lead_training_table(export: Export) -> pd.DataFrame:
    """Every lead as of its own creation day, with its pre-sequencing features and SQO label.

    Returns
    -------
    DataFrame
        Indexed by ``lead_id``: ``as_of``, the features of :func:`features.lead.build`, then
        ``label_is_sqo`` (NaN while undecided) and ``label_decided``.
    """
    table = lead.build_training_set(export)
    lab = labels.lead_labels(export).reindex(table.index)
    return table.join(lab.add_prefix("label_"))
