"""The plain challenger: LightGBM on the raw declared columns, beside every engineered model.

Engineered features (history counts, similar-lead rates, owner win rates …) must earn their
place: each ``pipecast train`` also fits the same model class on the columns the export itself
declares — the contract columns as a snapshot or a lead carries them, plus the extra columns of
``dataset.yaml`` ``features:`` — with categoricals as LightGBM categories, on the same split and
calibrated the same way. When it scores better on the test slice, it is the one registered.

* :class:`PlainCloseModel` — a :class:`~models.close_probability.CloseProbabilityModel`
  restricted to the deal's state at the snapshot: stage, amount, its age and days to the
  expected close date (dates enter a model only as days from the snapshot day), forecast
  category and the fields that do not change over a deal's life (segment, source, industry …).
  It gives ``p_win_in_period`` the same way as the full model (``p_win`` × a timing model that is
  monotone in the horizon), so it can serve as champion unchanged.
* :class:`PlainSQOModel` — an :class:`~models.sqo_likelihood.SQOLikelihoodModel` on the lead's
  own columns: firmographics and the categorical fields, never the account history or the SQO
  rates of earlier leads.

Both select their own columns from whatever table they are given, so scoring passes them the
same feature table as the engineered model.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from features import lead as lead_features
from features import opportunity as opportunity_features
from models.close_probability import CloseProbabilityModel
from models.sqo_likelihood import SQOLikelihoodModel

#: a deal's state at the snapshot as the snapshot table carries it (no history features)
RAW_OPPORTUNITY_COLUMNS: tuple[str, ...] = (
    "stage",
    "amount",
    "age_days",
    "days_to_expected_close",
    "forecast_category",
    *opportunity_features.STATIC_CATEGORIES,
)
#: a lead's own columns (no account history, no similar-lead rates, no title keywords)
RAW_LEAD_COLUMNS: tuple[str, ...] = (
    "employees",
    "log_annual_revenue",
    *lead_features.CATEGORICAL,
)


def _present(table: pd.DataFrame, names: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        if name in table.columns and name not in seen:
            seen.append(name)
    return seen


def raw_opportunity_columns(table: pd.DataFrame, declared: Iterable[str] = ()) -> list[str]:
    """The columns of a snapshot feature table the plain close model uses.

    Parameters
    ----------
    table
        A feature table of :func:`features.opportunity.build` / ``build_training_set``.
    declared
        The extra columns of ``dataset.yaml`` ``features: opportunities``.

    Returns
    -------
    list of str
        :data:`RAW_OPPORTUNITY_COLUMNS` and the declared extras that the table has, in that order.
        Every one describes the deal as of the snapshot day (the table is point-in-time).
    """
    return _present(table, (*RAW_OPPORTUNITY_COLUMNS, *declared))


def raw_lead_columns(table: pd.DataFrame, declared: Iterable[str] = ()) -> list[str]:
    """The columns of a lead feature table the plain SQO model uses.

    Parameters
    ----------
    table
        A feature table of :func:`features.lead.build` / ``build_training_set``.
    declared
        The extra columns of ``dataset.yaml`` ``features: leads``.

    Returns
    -------
    list of str
        :data:`RAW_LEAD_COLUMNS` and the declared extras that the table has, in that order: what
        the lead list itself says before the lead is sequenced.
    """
    return _present(table, (*RAW_LEAD_COLUMNS, *declared))


class PlainCloseModel(CloseProbabilityModel):
    """The close-probability model on the raw columns only (pass them as ``columns``)."""

    kind = "plain"


class PlainSQOModel(SQOLikelihoodModel):
    """The SQO-likelihood model on the raw lead columns only (pass them as ``columns``)."""

    kind = "plain"
