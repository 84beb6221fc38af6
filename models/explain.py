"""Why a deal or a lead scored what it did: the top factors of each row, in sales terms.

For the LightGBM models the factors are LightGBM's own SHAP values (TreeSHAP,
``booster.predict(X, pred_contrib=True)``) of the *uncalibrated* classifier: the p_win
classifier of :class:`models.close_probability.CloseProbabilityModel` and the classifier of
:class:`models.sqo_likelihood.SQOLikelihoodModel`. They are additive on the log-odds scale:
the contributions of a row plus the bias equal the classifier's raw margin. Calibration maps the
margin to the served probability through a non-decreasing function, so a factor that pushes the
margin up pushes the served probability up too, and the ranking of factors holds; the size of a
contribution is in log-odds, not in probability points.

The feature encoder of the models keeps one column per feature (no one-hot expansion), so each
contribution belongs to exactly one feature the user knows; the value shown is the one in the
feature table (a category the model never saw in training is shown as it is, and said to be new).

For the historical-rate fallback models (no booster) the explanation is the rate they use, e.g.
``"historical win rate of stage Proposal × segment Enterprise: 31%"``; a model of any other kind
gets no explanation (empty lists), never an error.

Numbers and text only: no I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# _key: the cell key the rate tables are looked up by, so the explanation names the same cell
from models.baselines import HistoricalLeadModel, HistoricalRateBaseline, _key
from models.sqo_likelihood import encoded_matrix, predict_threads

#: factors per row by default
TOP_K = 3
#: the separator of factors in a one-line text
SEPARATOR = "; "
#: signs shown after a factor: it raises or lowers the score
PLUS, MINUS = "(+)", "(\u2212)"
#: contributions smaller than this (in log-odds) are noise, not a reason
MIN_CONTRIBUTION = 1e-9
#: features that are model plumbing, never a reason to show (the timing model's horizon)
HIDDEN_FEATURES = frozenset({"horizon_days"})


@dataclass(frozen=True)
class Factor:
    """One reason for one row's score.

    Attributes
    ----------
    feature
        The feature name as in ``features/`` (``days_in_stage``, ``owner_win_rate`` …).
    value
        The row's value of it (``None`` when missing).
    contribution
        Log-odds the feature adds to the row's raw margin (SHAP value); for the historical-rate
        fallbacks, the change in rate (probability) from the coarser level to this one.
    text
        The factor in sales terms, with its direction, e.g. ``"close date pushed 3 times (−)"``.
    """

    feature: str
    value: Any
    contribution: float
    text: str

    def as_dict(self) -> dict[str, Any]:
        """``{"feature", "value", "contribution"}`` (what the API returns)."""
        return {"feature": self.feature, "value": self.value, "contribution": self.contribution}


@dataclass(frozen=True)
class Explanations:
    """The top factors of every row of a feature table.

    Attributes
    ----------
    index
        The feature table's index (``opportunity_id`` or ``lead_id``).
    factors
        Per row, its factors, largest absolute contribution first (possibly none).
    """

    index: pd.Index
    factors: list[list[Factor]] = field(default_factory=list)

    def texts(self, sep: str = SEPARATOR) -> pd.Series:
        """One line per row: the factors' texts joined with ``sep`` ("" when there are none)."""
        return pd.Series(
            [sep.join(f.text for f in row) for row in self.factors],
            index=self.index,
            dtype="string",
        )

    def records(self) -> list[list[dict[str, Any]]]:
        """Per row, the structured factors: ``[{"feature", "value", "contribution"}, …]``."""
        return [[f.as_dict() for f in row] for row in self.factors]


# ----------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------


def explain(model: Any, X: pd.DataFrame, *, k: int = TOP_K, as_of: Any = None) -> Explanations:
    """The top ``k`` factors of each row of ``X`` for ``model``.

    Parameters
    ----------
    model
        A close-probability or SQO-likelihood model as trained and served
        (:class:`~models.close_probability.CloseProbabilityModel`,
        :class:`~models.sqo_likelihood.SQOLikelihoodModel`, the historical fallbacks, or a bare
        :class:`~models.lgbm.LGBMProbability`). For the close model, the factors are those of
        ``p_win`` (not of the timing).
    X
        The feature table the model scores (``features.opportunity.build`` /
        ``features.lead.build`` as of the scoring day), one row per deal or lead.
    k
        Factors per row at most (fewer when fewer features contribute).
    as_of
        The day ``X`` describes (end of day; one or one per row). Only the competing-risks close
        model reads it, to place the next week in the fiscal calendar; without it, the rows'
        ``days_left_in_quarter`` does.

    Returns
    -------
    Explanations
        Per row, factors ordered by absolute contribution. A model this module does not know
        gives empty factor lists.
    """
    if hasattr(model, "win_contributions") and hasattr(model, "booster_"):
        # the competing-risks close model: one multiclass booster of won / lost / still open;
        # its factors are those of won rather than lost
        if len(X) == 0:
            return Explanations(index=X.index, factors=[])
        contrib, encoded = model.win_contributions(X, as_of=as_of)
        levels = dict(getattr(model.encoder_, "levels_", {}))
        return _factors(contrib, X, encoded, levels, k=k)
    clf = lightgbm_classifier(model)
    if clf is not None:
        return _explain_lightgbm(clf, X, k=k)
    rates = rate_table(model)
    if rates is not None:
        return _explain_rates(rates, X, outcome="SQO rate" if _is_lead_model(model) else "win rate")
    return Explanations(index=X.index, factors=[[] for _ in range(len(X))])


def lightgbm_classifier(model: Any) -> Any | None:
    """The uncalibrated LightGBM classifier that scores ``model``'s probability, or ``None``.

    ``win_`` of the close-probability model, ``clf_`` of the SQO-likelihood model, or the model
    itself when it has an encoder and a booster.
    """
    for candidate in (getattr(model, "win_", None), getattr(model, "clf_", None), model):
        if (
            candidate is not None
            and hasattr(candidate, "booster_")
            and hasattr(candidate, "encoder_")
        ):
            return candidate
    return None


def rate_table(model: Any) -> HistoricalRateBaseline | None:
    """The historical-rate table of a fallback model (or the table itself), or ``None``."""
    if isinstance(model, HistoricalRateBaseline) and hasattr(model, "rates_"):
        return model
    rate = getattr(model, "rate_", None)
    if isinstance(rate, HistoricalRateBaseline) and hasattr(rate, "rates_"):
        return rate
    return None


def _is_lead_model(model: Any) -> bool:
    return isinstance(model, HistoricalLeadModel) or "source" in tuple(getattr(model, "by", ()))


# ----------------------------------------------------------------------------------------
# LightGBM: SHAP contributions
# ----------------------------------------------------------------------------------------


def contributions(clf: Any, X: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """SHAP contributions of every feature to each row's raw margin (log-odds).

    Parameters
    ----------
    clf
        A fitted :class:`~models.lgbm.LGBMProbability` (uncalibrated).
    X
        Feature table (raw, as the model's ``predict_proba`` takes it).

    Returns
    -------
    (contributions, bias)
        Contributions indexed like ``X`` with one column per model feature, and the bias (the
        expected margin) per row; ``contributions.sum(axis=1) + bias`` equals
        ``clf.decision_function(X)``.
    """
    Xe = clf.encoder_.transform(X)
    raw = np.asarray(
        clf.booster_.predict(Xe, num_iteration=getattr(clf, "n_iter_", None), pred_contrib=True),
        dtype="float64",
    ).reshape(len(X), -1)
    columns = list(clf.encoder_.columns_)
    table = pd.DataFrame(raw[:, : len(columns)], index=X.index, columns=columns)
    return table, raw[:, len(columns)]


def _explain_lightgbm(clf: Any, X: pd.DataFrame, *, k: int) -> Explanations:
    if len(X) == 0:
        return Explanations(index=X.index, factors=[])
    contrib, _ = contributions(clf, X)
    levels: dict[str, list[str]] = dict(getattr(clf.encoder_, "levels_", {}))
    return _factors(contrib, X, clf.encoder_.transform(X), levels, k=k)


def _factors(
    contrib: pd.DataFrame,
    X: pd.DataFrame,
    Xe: pd.DataFrame,
    levels: Mapping[str, Sequence[str]],
    *,
    k: int,
) -> Explanations:
    """Top ``k`` factors per row from per-feature contributions (``Xe``: the encoded rows).

    Only the columns that are some row's factor are read, each once as a list of plain values:
    reading cells one by one from the frames cost far more than the factors themselves.
    """
    shown = [c for c in contrib.columns if c not in HIDDEN_FEATURES]
    values = contrib[shown].to_numpy(dtype="float64")
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :k]
    rows = np.arange(len(X))[:, None]
    top = values[rows, order]
    keep = np.isfinite(top) & (np.abs(top) >= MIN_CONTRIBUTION)
    plain: dict[str, list[Any]] = {}
    unseen_of: dict[str, np.ndarray] = {}

    def column(name: str) -> list[Any]:
        if name not in plain:
            plain[name] = _values_of(X, name)
        return plain[name]

    for j in np.unique(order[keep]):
        name = shown[j]
        column(name)
        if name in levels and name in Xe.columns:
            # a category the model never learned: encoded as missing
            unseen_of[name] = Xe[name].isna().to_numpy(dtype=bool)
    stages = column("stage") if "stage_order" in plain else None
    # a pipeline repeats the same few phrases (stage Proposal, AE win rate 31%, …): each
    # distinct (feature, value, direction, new-to-the-model, stage) is phrased once
    texts: dict[tuple[Any, ...], str] = {}
    factors: list[list[Factor]] = []
    for i in range(len(X)):
        row: list[Factor] = []
        for j, c, ok in zip(order[i].tolist(), top[i].tolist(), keep[i].tolist(), strict=True):
            if not ok:
                continue
            name = shown[j]
            value = plain[name][i]
            unseen = value is not None and name in unseen_of and bool(unseen_of[name][i])
            stage = stages[i] if name == "stage_order" and stages is not None else None
            # floats by their bits: -0.0 and 0.0 are equal keys but may read differently
            key = (
                j,
                type(value),
                value.hex() if type(value) is float else value,
                c >= 0,
                unseen,
                stage,
            )
            text = texts.get(key)
            if text is None:
                text = factor_text(name, value, c, unseen=unseen)
                if name == "stage_order" and value is not None and stage is not None:
                    # the funnel position means little without the stage's name
                    step = f"step {int(round(float(value))) + 1} of the funnel"
                    text = f"stage {stage} ({step}) {PLUS if c >= 0 else MINUS}"
                texts[key] = text
            row.append(Factor(name, value, c, text))
        factors.append(row)
    return Explanations(index=X.index, factors=factors)


def _values_of(X: pd.DataFrame, name: str) -> list[Any]:
    """:func:`_value_of` of every row of one column, read in one pass."""
    if name not in X.columns:
        return [None] * len(X)
    s = X[name]
    missing = s.isna().to_numpy(dtype=bool).tolist()
    return [
        None if m else (v.item() if isinstance(v, np.generic) else v)
        for v, m in zip(s.tolist(), missing, strict=True)
    ]


def _plain_value(v: Any) -> Any:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _value_of(X: pd.DataFrame, name: str, i: int) -> Any:
    """The row's value of a feature as a plain Python value (``None`` when missing or absent)."""
    if name not in X.columns:
        return None
    return _plain_value(X[name].iloc[i])


# ----------------------------------------------------------------------------------------
# historical-rate fallbacks
# ----------------------------------------------------------------------------------------


def _explain_rates(rates: HistoricalRateBaseline, X: pd.DataFrame, *, outcome: str) -> Explanations:
    """The rate the fallback uses per row, phrased as what it is: a historical rate of a cell."""
    by = list(rates.by)
    n = len(X)
    finest = np.full(n, rates.overall_rate_)
    parent = np.full(n, rates.overall_rate_)
    depth_used = np.zeros(n, dtype=int)
    for depth, table in enumerate(rates.rates_, start=1):
        key = _cell_key(X, by[:depth])
        found = key.map(table).astype("float64").to_numpy()
        known = ~np.isnan(found)
        parent = np.where(known, finest, parent)
        finest = np.where(known, found, finest)
        depth_used = np.where(known, depth, depth_used)
    # each column read once as plain values: cell-by-cell reads from the frame cost the most
    plain = {c: _values_of(X, c) for c in by[: int(depth_used.max(initial=0))]}
    factors: list[list[Factor]] = []
    for i, d, rate, before in zip(
        range(n), depth_used.tolist(), finest.tolist(), parent.tolist(), strict=True
    ):
        if d == 0:
            text = f"historical {outcome} overall: {_pct(rate)}"
            factors.append([Factor("(overall)", None, 0.0, text)])
            continue
        cells = [(c, plain[c][i]) for c in by[:d]]
        described = " \u00d7 ".join(_cell_phrase(c, v) for c, v in cells)
        text = f"historical {outcome} of {described}: {_pct(rate)}"
        # the finest column carries the cell; its contribution is the step from the coarser level
        column, value = cells[-1]
        factors.append([Factor(column, value, rate - before, text)])
    return Explanations(index=X.index, factors=factors)


def _cell_key(X: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    return _key(X, columns)


def _cell_phrase(column: str, value: Any) -> str:
    label = _CATEGORY_LABELS.get(column, column.replace("_", " "))
    return f"{label} {value}" if value is not None else f"{label} not recorded"


# ----------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------


def factor_text(feature: str, value: Any, contribution: float, *, unseen: bool = False) -> str:
    """A factor in sales terms with its direction, e.g. ``"no activity for 41 days (−)"``.

    Parameters
    ----------
    feature
        Feature name (``features/opportunity.py`` and ``features/lead.py`` list them).
    value
        The row's value; ``None`` or NaN when missing.
    contribution
        Its contribution: positive raises the score ``(+)``, negative lowers it ``(−)``.
    unseen
        The value is a category the model did not see in training (it was scored as missing).

    Returns
    -------
    str
        Known features get a phrase of their own; any other feature reads
        ``"<name> = <value> (+/−)"``.
    """
    sign = PLUS if contribution >= 0 else MINUS
    missing = value is None or (not isinstance(value, str) and _isnan(value))
    try:
        phrase = _phrase(feature, None if missing else value)
    except (TypeError, ValueError):
        phrase = None
    if phrase is None:
        phrase = f"{feature} = {'missing' if missing else _plain(value)}"
    if unseen:
        phrase += " (new to the model)"
    return f"{phrase} {sign}"


def _phrase(feature: str, value: Any) -> str | None:
    if feature in _CATEGORY_LABELS:
        label = _CATEGORY_LABELS[feature]
        if value is None:
            return f"no {label} recorded"
        if feature == "forecast_category":
            value = str(value).replace("_", " ")  # the contract's codes: best_case → best case
        return f"{label} {value}"
    if feature.startswith("title_") and feature in _TITLE_LABELS:
        return _title_phrase(feature, value)
    formatter = _FORMATTERS.get(feature)
    if formatter is None:
        return None
    return formatter(value)


def _isnan(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() else f"{value:.3g}"
    return str(value)


def _n(value: Any) -> int:
    return int(round(float(value)))


def _pct(value: Any) -> str:
    return f"{100.0 * float(value):.0f}%"


def _money(value: Any) -> str:
    v = float(value)
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v >= 1e6:
        return f"{sign}{v / 1e6:.1f}M"
    if v >= 1e3:
        return f"{sign}{v / 1e3:.0f}k"
    return f"{sign}{v:.0f}"


def _times(n: int) -> str:
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _missing_or(text_if_missing: str, fn: Callable[[Any], str]) -> Callable[[Any], str]:
    """A formatter that says ``text_if_missing`` for a missing value, else ``fn(value)``."""
    return lambda v: text_if_missing if v is None else fn(v)


def _days_to_close(v: Any) -> str:
    d = _n(v)
    if d < 0:
        return f"expected close date passed {_count(-d, 'day')} ago"
    if d == 0:
        return "expected to close today"
    return f"expected close in {_count(d, 'day')}"


def _since_activity(v: Any) -> str:
    d = _n(v)
    if d <= 0:
        return "activity today"
    if d < 14:
        return f"last activity {_count(d, 'day')} ago"
    return f"no activity for {d} days"


def _pushes(v: Any) -> str:
    n = _n(v)
    return "close date never pushed" if n == 0 else f"close date pushed {_times(n)}"


def _activities(window: str) -> Callable[[Any], str]:
    def fmt(v: Any) -> str:
        n = _n(v)
        return (
            f"no activity in {window}"
            if n == 0
            else f"{_count(n, 'activity', 'activities')} in {window}"
        )

    return fmt


def _amount_change(v: Any) -> str:
    x = float(v)
    if x == 0:
        return "amount unchanged since creation"
    return f"amount {'up' if x > 0 else 'down'} {_money(abs(x))} since creation"


def _regressions(v: Any) -> str:
    n = _n(v)
    return "never moved back a stage" if n == 0 else f"moved back a stage {_times(n)}"


def _account_count(zero: str, singular: str, plural: str) -> Callable[[Any], str]:
    def fmt(v: Any) -> str:
        n = _n(v)
        return zero if n == 0 else _count(n, singular, plural)

    return fmt


#: categorical features: "<label> <value>", "no <label> recorded" when missing
_CATEGORY_LABELS: dict[str, str] = {
    "stage": "stage",
    "forecast_category": "forecast category",
    "segment": "segment",
    "source": "source",
    "signal_type": "signal",
    "industry": "industry",
    "region": "region",
    "country": "country",
    "product": "product",
    "seniority": "seniority",
    "sdr_id": "SDR",
    "sequence": "sequence",
}

#: title keyword flags: the word the title holds (seniority) or the buyer's function
_TITLE_LABELS: dict[str, tuple[str, str]] = {
    "title_vp": ("seniority", "VP"),
    "title_director": ("seniority", "Director"),
    "title_head": ("seniority", "Head of"),
    "title_chief": ("seniority", "C-level"),
    "title_manager": ("seniority", "Manager"),
    "title_founder": ("seniority", "Founder/owner"),
    "title_sales": ("function", "sales"),
    "title_marketing": ("function", "marketing"),
    "title_it": ("function", "IT"),
    "title_finance": ("function", "finance"),
    "title_operations": ("function", "operations"),
}


def _title_phrase(feature: str, value: Any) -> str:
    kind, word = _TITLE_LABELS[feature]
    if value is None:
        return "no title recorded"
    yes = float(value) >= 0.5
    if kind == "seniority":
        return f"{word} title" if yes else f"not a {word} title"
    return f"buyer in {word}" if yes else f"buyer not in {word}"


#: numeric features: value (None when missing) → phrase
_FORMATTERS: dict[str, Callable[[Any], str]] = {
    # opportunities (features/opportunity.py)
    "age_days": _missing_or("deal age unknown", lambda v: f"deal open {_count(_n(v), 'day')}"),
    "days_in_stage": _missing_or(
        "time in stage unknown", lambda v: f"{_count(_n(v), 'day')} in current stage"
    ),
    "stage_order": _missing_or(
        "stage outside the usual funnel", lambda v: f"stage {_n(v) + 1} of the funnel"
    ),
    "stage_moves": _missing_or(
        "no stage history",
        lambda v: "no stage change yet" if _n(v) == 0 else f"{_count(_n(v), 'stage change')}",
    ),
    "stage_regressions": _missing_or("no stage history", _regressions),
    "amount": _missing_or("no amount recorded", lambda v: f"amount {_money(v)}"),
    "amount_change": _missing_or("amount history unknown", _amount_change),
    "amount_change_ratio": _missing_or(
        "amount history unknown", lambda v: f"amount at {_pct(v)} of its initial value"
    ),
    "days_to_expected_close": _missing_or("no expected close date", _days_to_close),
    "close_date_pushes": _missing_or("close date history unknown", _pushes),
    "close_date_push_days": _missing_or(
        "close date history unknown",
        lambda v: (
            "close date never pushed"
            if _n(v) == 0
            else f"close date pushed {_count(_n(v), 'day')} in total"
        ),
    ),
    "activities_7d": _missing_or("no activity recorded", _activities("the last 7 days")),
    "activities_30d": _missing_or("no activity recorded", _activities("the last 30 days")),
    "activities_total": _missing_or(
        "no activity recorded",
        lambda v: (
            "no activity recorded"
            if _n(v) == 0
            else f"{_count(_n(v), 'activity', 'activities')} so far"
        ),
    ),
    "activities_per_week": _missing_or(
        "no activity recorded", lambda v: f"{float(v):.1f} activities per week"
    ),
    "days_since_last_activity": _missing_or("no activity recorded", _since_activity),
    "inbound_30d": _missing_or(
        "no activity recorded",
        lambda v: f"{_count(_n(v), 'inbound touch', 'inbound touches')} in 30 days",
    ),
    "outbound_30d": _missing_or(
        "no activity recorded",
        lambda v: f"{_count(_n(v), 'outbound touch', 'outbound touches')} in 30 days",
    ),
    "inbound_share_30d": _missing_or(
        "no activity in the last 30 days", lambda v: f"{_pct(v)} of recent activity inbound"
    ),
    "meetings_30d": _missing_or(
        "no activity recorded",
        lambda v: (
            "no meeting in 30 days" if _n(v) == 0 else f"{_count(_n(v), 'meeting')} in 30 days"
        ),
    ),
    "days_left_in_quarter": _missing_or(
        "quarter end unknown", lambda v: f"{_count(_n(v), 'day')} left in the quarter"
    ),
    "owner_win_rate": _missing_or("AE has no closed deals yet", lambda v: f"AE win rate {_pct(v)}"),
    "owner_closed_deals": _missing_or(
        "no AE assigned", lambda v: f"AE has closed {_count(_n(v), 'deal')}"
    ),
    "sdr_win_rate": _missing_or("no SDR win rate yet", lambda v: f"SDR win rate {_pct(v)}"),
    "sdr_closed_deals": _missing_or(
        "no SDR on the deal", lambda v: f"SDR has {_count(_n(v), 'closed deal')}"
    ),
    "has_next_step": _missing_or(
        "next step unknown", lambda v: "next step set" if float(v) >= 0.5 else "no next step"
    ),
    # leads (features/lead.py)
    "employees": _missing_or("company size unknown", lambda v: f"{_n(v):,} employees"),
    "log_annual_revenue": _missing_or(
        "revenue unknown", lambda v: f"annual revenue {_money(math.expm1(float(v)))}"
    ),
    "account_leads_before": _missing_or(
        "no account on record",
        _account_count(
            "first lead at the account",
            "earlier lead at the account",
            "earlier leads at the account",
        ),
    ),
    "account_sqos_before": _missing_or(
        "no account on record",
        _account_count(
            "no earlier SQO at the account",
            "earlier SQO at the account",
            "earlier SQOs at the account",
        ),
    ),
    "account_open_opportunities": _missing_or(
        "no account on record",
        _account_count(
            "no open deal at the account", "open deal at the account", "open deals at the account"
        ),
    ),
    "account_won_opportunities": _missing_or(
        "no account on record",
        _account_count(
            "no won deal at the account", "won deal at the account", "won deals at the account"
        ),
    ),
    "source_signal_sqo_rate": _missing_or(
        "no history for this source × signal",
        lambda v: f"SQO rate of this source \u00d7 signal {_pct(v)}",
    ),
    "industry_sqo_rate": _missing_or(
        "no history for this industry", lambda v: f"industry SQO rate {_pct(v)}"
    ),
    "sdr_sqo_rate": _missing_or("no history for this SDR", lambda v: f"SDR's SQO rate {_pct(v)}"),
    "days_since_last_contacted": _missing_or(
        "never contacted", lambda v: f"last contacted {_count(_n(v), 'day')} ago"
    ),
}


# ----------------------------------------------------------------------------------------
# lead reasons in a BDR's words (vectorised: one pass per reason, never per row)
# ----------------------------------------------------------------------------------------

#: positive reasons shown per lead, and reasons that hold it back
LEAD_REASONS_UP, LEAD_REASONS_DOWN = 3, 1
#: a reason must move the margin by at least this much (log-odds) to be shown
MIN_REASON = 0.01

#: lead features that make one reason together (SHAP values add up, so a group's
#: contribution is the sum of its features'); features not listed are reasons of their own
LEAD_REASON_GROUPS: dict[str, tuple[str, ...]] = {
    "persona": (
        "seniority",
        "employees",
        "log_annual_revenue",
        *(name for name in _TITLE_LABELS),
    ),
    # the sequence is picked by the trigger (a signal gets the personal sequence): one reason
    "signal": ("signal_type", "source_signal_sqo_rate", "sequence"),
    "source": ("source",),
    "industry": ("industry", "industry_sqo_rate"),
    "open_deal": ("account_open_opportunities",),
    "customer": ("account_won_opportunities",),
    "account_history": ("account_leads_before", "account_sqos_before"),
    "bdr": ("sdr_id", "sdr_sqo_rate"),
    "contact": ("days_since_last_contacted",),
    "geography": ("region", "country"),
}

_SIGNAL_WORDS = {
    "funding": "buying signal: new funding",
    "hiring": "buying signal: hiring",
    "new_executive": "buying signal: new executive",
    "intent_surge": "buying signal: intent surge",
    "technology_change": "buying signal: technology change",
}
_SOURCE_WORDS = {
    "inbound": "inbound request",
    "outbound": "cold outbound",
    "event": "met at an event",
    "webinar": "webinar attendee",
    "content": "downloaded content",
    "partner": "partner referral",
    "referral": "referral",
    "expansion": "expansion at a customer",
}
_SENIORITY_WORDS = {
    "c-level": "C-level exec",
    "vp": "VP",
    "director": "Director",
    "head": "Head",
    "manager": "Manager",
    "individual contributor": "individual contributor",
    "founder": "Founder",
    "owner": "Owner",
}
#: title flags in the order their word wins when a title holds several
_TITLE_SENIORITY = (
    ("title_chief", "C-level exec"),
    ("title_vp", "VP"),
    ("title_founder", "Founder"),
    ("title_head", "Head"),
    ("title_director", "Director"),
    ("title_manager", "Manager"),
)
_TITLE_FUNCTION = (
    ("title_sales", "sales"),
    ("title_marketing", "marketing"),
    ("title_it", "IT"),
    ("title_finance", "finance"),
    ("title_operations", "operations"),
)


def lead_reasons(
    model: Any,
    X: pd.DataFrame,
    *,
    up: int = LEAD_REASONS_UP,
    down: int = LEAD_REASONS_DOWN,
    tables: ReasonTables | None = None,
    exact: np.ndarray | None = None,
    encoded: np.ndarray | None = None,
) -> pd.Series:
    """Why each lead scored what it did, in a BDR's words, strongest first.

    Parameters
    ----------
    model
        The SQO-likelihood model as served (or a bare LightGBM probability model).
    X
        ``features.lead.build`` output as of the scoring day (index ``lead_id``).
    up, down
        Reasons that raise the score shown at most, then reasons that hold it back.
    tables
        Contribution tables (:func:`fit_reason_tables`): rows not marked ``exact`` take each
        feature's contribution from them instead of computing TreeSHAP. ``None``: every row
        exact.
    exact
        Boolean per row: the rows explained by exact TreeSHAP even when ``tables`` is given
        (e.g. the top of the list, which a BDR reads first). Default: all rows.
    encoded
        ``X`` as the model's classifier takes it (``SQOLikelihoodModel.encode``), when the
        caller has it already from scoring the same leads.

    Returns
    -------
    Series
        Per lead, e.g. ``"VP in sales at a 950-person company; buying signal: hiring; but cold
        outbound"``: the reasons that raise the score, largest first, then ``but …`` for what
        holds it back. Features of one reason (title, seniority and company size make the
        buyer) are added up, so the reason's weight is theirs together. A model without a
        booster gets :func:`explain`'s texts; none at all gives "".

    Notes
    -----
    Time meaning is the features': everything in a reason was known at the end of the
    scoring day. Each reason's phrase is made once per distinct combination of the values it
    reads, and each text once per distinct combination of phrases; leads get theirs by
    position, never by a loop over leads.
    """
    texts = lead_reason_array(
        model, X, up=up, down=down, tables=tables, exact=exact, encoded=encoded
    )
    return pd.Series(texts, index=X.index, dtype="string")


def lead_reason_array(
    model: Any,
    X: pd.DataFrame,
    *,
    up: int = LEAD_REASONS_UP,
    down: int = LEAD_REASONS_DOWN,
    tables: ReasonTables | None = None,
    exact: np.ndarray | None = None,
    encoded: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`lead_reasons` as an array of Python strings ("" for none), for a caller that
    writes them out without a Series in between."""
    codes, texts = lead_reason_codes(
        model, X, up=up, down=down, tables=tables, exact=exact, encoded=encoded
    )
    return texts[codes]


def lead_reason_codes(
    model: Any,
    X: pd.DataFrame,
    *,
    up: int = LEAD_REASONS_UP,
    down: int = LEAD_REASONS_DOWN,
    tables: ReasonTables | None = None,
    exact: np.ndarray | None = None,
    encoded: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lead_reasons` as the texts made and, per lead, the number of its text.

    Leads share texts (about 20,000 per 100,000 leads of the demo list): each text is made
    once per distinct combination of phrases, and a caller that formats or writes them can
    do so once per text. Time meaning as :func:`lead_reasons`'.

    Returns
    -------
    tuple
        ``(codes, texts)``: ``codes`` an int64 array with one entry per row of ``X``,
        ``texts`` an object array of Python strings (two may read alike);
        ``texts[codes]`` are the reasons.
    """
    n = len(X)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.array([], dtype=object)
    clf = lightgbm_classifier(model)
    if clf is None:
        texts = explain(model, X).texts()
        plain = texts.str.replace(r" \((?:\+|\u2212)\)", "", regex=True).astype("string")
        codes, distinct = pd.factorize(plain.fillna("").to_numpy(dtype=object))
        return np.asarray(codes, dtype=np.int64), np.asarray(distinct, dtype=object)
    if exact is None:
        exact = np.ones(n, dtype=bool)
    exact = np.asarray(exact, dtype=bool)
    matrix = encoded_matrix(clf.encoder_, X) if encoded is None else encoded
    columns = list(clf.encoder_.columns_)
    if tables is None or exact.all():
        contrib = _lead_contributions(clf, matrix)
    else:
        contrib = tables.contributions_of(clf, matrix)
        if exact.any():
            rows_exact = np.flatnonzero(exact)
            contrib[rows_exact] = _lead_contributions(clf, matrix[rows_exact])
    names, members, weights = _reason_weights_of(columns, contrib)
    order_up = np.argsort(-weights, axis=1, kind="stable")[:, :up]
    order_down = np.argsort(weights, axis=1, kind="stable")[:, :down]
    rows = np.arange(n)
    slots: list[tuple[np.ndarray, np.ndarray, bool]] = []  # (reason, shown, holds back)
    for s in range(order_up.shape[1]):
        g = order_up[:, s]
        show = weights[rows, g] >= MIN_REASON
        if s == 0:
            # a lead with no reason that clears the bar still gets its strongest one
            show = show | (np.abs(weights).max(axis=1) < MIN_REASON)
            g = np.where(show & (weights[rows, g] < MIN_REASON), np.abs(weights).argmax(axis=1), g)
        slots.append((g, show, False))
    for s in range(order_down.shape[1]):
        g = order_down[:, s]
        slots.append((g, weights[rows, g] <= -MIN_REASON, True))
    # each reason's phrase made once per distinct value of the columns it reads; each lead's
    # text made once per distinct combination of phrases in its places (a few thousand per
    # 100,000 leads) and handed to its leads by position, never built lead by lead
    vocab, ids = _phrase_ids(names, members, slots, X)
    combos, back = _distinct_rows([ids[:, s] for s in range(ids.shape[1])])
    downs = [down for _, _, down in slots]
    texts = np.array([_assemble(vocab, ids[first], downs) for first in combos], dtype=object)
    return back, texts


def _assemble(vocab: Sequence[str], places: np.ndarray, downs: Sequence[bool]) -> str:
    """One reason text from its places' phrase ids (-1: nothing shown in that place)."""
    text = ""
    for pid, down in zip(places.tolist(), downs, strict=True):
        if pid < 0:
            continue
        if down:
            text = (text + SEPARATOR + "but " if text else "held back: ") + vocab[pid]
        else:
            text = (text + SEPARATOR if text else "") + vocab[pid]
    return text


#: leads of one reason up to this many are phrased without looking for repeated values first
_PHRASED_AS_THEY_ARE = 16


def _phrase_ids(
    names: list[str],
    members: list[list[str]],
    slots: list[tuple[np.ndarray, np.ndarray, bool]],
    X: pd.DataFrame,
) -> tuple[list[str], np.ndarray]:
    """Every phrase shown, once each, and per lead and place the id of its phrase there
    (-1 where the place shows nothing)."""
    n = len(X)
    wanted: dict[int, np.ndarray] = {}
    for g, show, _ in slots:
        for gi in np.unique(g[show]):
            mask = show & (g == gi)
            key = int(gi)
            wanted[key] = wanted[key] | mask if key in wanted else mask
    vocab: list[str] = []
    by_reason: dict[int, np.ndarray] = {}
    # a handful of leads (as one request posts) is phrased from plain arrays of its columns,
    # taken from the frame once for all its reasons
    plain = _Rows.of(X) if n <= _PHRASED_AS_THEY_ARE else None
    # the column names once: each pass over a frame's (Arrow-backed) names costs as much
    # as a phrase for one lead
    columns = list(X.columns)
    for gi, mask in wanted.items():
        rows = np.flatnonzero(mask)
        phrase = _LEAD_PHRASES.get(names[gi])
        # only the columns the phrase reads are taken for its leads
        reads = _LEAD_PHRASE_COLUMNS.get(names[gi]) if phrase is not None else members[gi][:1]
        cols = [c for c in columns if c in reads] if reads is not None else list(columns)
        if phrase is None:
            # a feature without a phrase of its own: its factor text, from the frame
            part = X[cols].iloc[rows]
            firsts, codes = _distinct_rows([_value_codes(part[c]) for c in cols], n=len(rows))
            words = _generic_phrase(members[gi][0], part.iloc[firsts])
        elif len(rows) <= _PHRASED_AS_THEY_ARE:
            codes = np.arange(len(rows))
            if plain is not None:
                few = _Rows({str(c): plain[str(c)][rows] for c in cols}, len(rows))
            else:
                few = _Rows.of(X[cols].iloc[rows])
            words = phrase(few)
        else:
            # a phrase reads only its row: it is made once per distinct combination of values
            part = X[cols].iloc[rows]
            firsts, codes = _distinct_rows([_value_codes(part[c]) for c in cols], n=len(rows))
            words = phrase(_Rows.of(part.iloc[firsts]))
        ids = np.full(n, -1, dtype=np.int64)
        ids[rows] = len(vocab) + codes
        vocab.extend(str(w) for w in np.asarray(words, dtype=object).tolist())
        by_reason[gi] = ids
    out = np.full((n, len(slots)), -1, dtype=np.int64)
    for s, (g, show, _) in enumerate(slots):
        for gi in np.unique(g[show]):
            rows = np.flatnonzero(show & (g == gi))
            out[rows, s] = by_reason[int(gi)][rows]
    return vocab, out


def _value_codes(values: pd.Series) -> np.ndarray:
    """Codes of a column's distinct values (a missing value is one value of its own)."""
    codes, _ = pd.factorize(values, use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64)


def _distinct_rows(
    columns: Sequence[np.ndarray], *, n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of integer columns (values ≥ -1): ``(firsts, back)``, the position of
    each distinct row's first occurrence, and per row ``k`` such that it equals row
    ``firsts[k]``."""
    size = int(n if n is not None else (len(columns[0]) if columns else 0))
    if not columns:
        return (np.zeros(1 if size else 0, dtype=np.int64), np.zeros(size, dtype=np.int64))
    key = np.zeros(size, dtype=np.int64)
    span = 1
    for col in columns:
        shifted = np.asarray(col, dtype=np.int64) + 1  # -1 (nothing) becomes 0
        radix = int(shifted.max()) + 1 if size else 1
        if span > (2**62) // radix:
            # the combined key would overflow: distinct rows the slow, general way
            stacked = np.column_stack([np.asarray(c, dtype=np.int64) for c in columns])
            _, firsts, back = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
            return firsts, np.asarray(back, dtype=np.int64).reshape(-1)
        key = key * radix + shifted
        span *= radix
    _, firsts, back = np.unique(key, return_index=True, return_inverse=True)
    return firsts, np.asarray(back, dtype=np.int64).reshape(-1)


def _lead_contributions(clf: Any, matrix: np.ndarray) -> np.ndarray:
    """Exact TreeSHAP contributions (rows × model features, bias left out) of encoded rows."""
    if len(matrix) == 0:
        return np.zeros((0, len(clf.encoder_.columns_)))
    raw = np.asarray(
        clf.booster_.predict(
            matrix,
            num_iteration=getattr(clf, "n_iter_", None),
            pred_contrib=True,
            **predict_threads(len(matrix)),
        ),
        dtype="float64",
    ).reshape(len(matrix), -1)
    return raw[:, : len(clf.encoder_.columns_)]


def _reason_weights_of(
    columns: Sequence[str], contrib: np.ndarray
) -> tuple[list[str], list[list[str]], np.ndarray]:
    """As :func:`_reason_weights`, on a contribution matrix whose columns are ``columns``."""
    names, members = _reason_groups([c for c in columns if c not in HIDDEN_FEATURES])
    where = {c: j for j, c in enumerate(columns)}
    weights = np.column_stack(
        [contrib[:, [where[c] for c in cols]].sum(axis=1) for cols in members]
    )
    return names, members, np.nan_to_num(weights, nan=0.0)


def _reason_weights(contrib: pd.DataFrame) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Reason names, their model columns and each row's weight per reason (the sum of its
    features' contributions; SHAP values add up)."""
    names, members = _reason_groups([c for c in contrib.columns if c not in HIDDEN_FEATURES])
    weights = np.column_stack(
        [contrib[cols].to_numpy(dtype="float64").sum(axis=1) for cols in members]
    )
    return names, members, np.nan_to_num(weights, nan=0.0)


def _reason_groups(columns: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Reason names and their model columns (a feature in no group is a reason of its own)."""
    names: list[str] = []
    members: list[list[str]] = []
    grouped: set[str] = set()
    for name, feats in LEAD_REASON_GROUPS.items():
        cols = [c for c in feats if c in columns]
        grouped.update(cols)
        if cols:
            names.append(name)
            members.append(cols)
    for c in columns:
        if c not in grouped:
            names.append(c)
            members.append([c])
    return names, members


class _Rows:
    """Some leads' feature values as plain arrays, one per column: what a reason's phrase
    reads. Phrases run on the distinct values of a list, or on the one lead a request posts:
    a frame's column costs tens of microseconds to take and a string operation on it as
    much again, an array's a fraction of that (one lead's phrases: ~20 ms → under 1 ms)."""

    def __init__(self, arrays: dict[str, np.ndarray], n: int) -> None:
        self.arrays = arrays
        #: the column names, so that ``name in X.columns`` reads as on a frame
        self.columns = arrays.keys()
        self.n = n

    @classmethod
    def of(cls, frame: pd.DataFrame) -> _Rows:
        # the frame converted at once, not column by column (1 lead: ~0.25 ms against ~0.9)
        values = frame.to_numpy(dtype=object)
        arrays: dict[str, np.ndarray] = {}
        for j, (name, dtype) in enumerate(zip(frame.columns, frame.dtypes, strict=True)):
            column = values[:, j]
            numeric = isinstance(dtype, np.dtype) and dtype.kind == "f"
            arrays[str(name)] = column.astype("float64") if numeric else column
        return cls(arrays, len(frame))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def _num(X: _Rows, name: str) -> np.ndarray:
    if name not in X.columns:
        return np.full(len(X), np.nan)
    values = X[name]
    if values.dtype.kind in "fiub":
        return np.asarray(values, dtype="float64")
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )


def _text(X: _Rows, name: str) -> np.ndarray:
    """A text column as Python strings, stripped ("" when missing or absent)."""
    if name not in X.columns:
        return np.full(len(X), "", dtype=object)
    return np.array(["" if pd.isna(v) else str(v).strip() for v in X[name].tolist()], dtype=object)


def _map_words(values: np.ndarray, words: Mapping[str, str], fallback: str) -> np.ndarray:
    """Known values (any case) to their words; any other value as ``fallback`` followed by
    the value, ``_`` read as a space."""
    return np.array(
        [words.get(v.lower(), fallback + v.replace("_", " ")) for v in values.tolist()],
        dtype=object,
    )


def _round_people(x: np.ndarray) -> np.ndarray:
    """Headcount to two significant figures (948 → 950, 44,692 → 45,000)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = np.floor(np.log10(np.maximum(x, 1)))
        step = 10 ** np.maximum(digits - 1, 0)
    return np.round(x / step) * step


def _persona(X: _Rows) -> np.ndarray:
    n = len(X)
    seniority = _text(X, "seniority")
    sen = _map_words(seniority, _SENIORITY_WORDS, "")
    no_seniority = seniority == ""
    for flag, word in reversed(_TITLE_SENIORITY):  # the first listed wins: applied last
        sen = np.where(no_seniority & (_num(X, flag) >= 0.5), word, sen)
    func = np.full(n, "", dtype=object)
    for flag, word in reversed(_TITLE_FUNCTION):
        func = np.where(_num(X, flag) >= 0.5, word, func)
    # "Revenue Operations" raises both the sales and the operations flag
    func = np.where(
        (_num(X, "title_sales") >= 0.5) & (_num(X, "title_operations") >= 0.5), "RevOps", func
    )
    who = np.where(
        (sen != "") & (func != ""),
        sen + " in " + func,
        np.where(sen != "", sen, np.where(func != "", "buyer in " + func, "")),
    )
    people = _round_people(_num(X, "employees"))
    known = np.isfinite(people)
    size = np.full(n, "", dtype=object)
    if known.any():
        # a headcount rounded to two figures takes few values: each is written once
        distinct, back = np.unique(people[known], return_inverse=True)
        words = np.array([f"{int(v):,}-person company" for v in distinct], dtype=object)
        size[known] = words[back]
    return np.where(
        (who != "") & (size != ""),
        who + " at a " + size,
        np.where(who != "", who, np.where(size != "", size, "no title or company size on record")),
    )


def _signal(X: _Rows) -> np.ndarray:
    values = _text(X, "signal_type")
    words = _map_words(values, _SIGNAL_WORDS, "signal: ")
    sequence = _text(X, "sequence")
    none = np.where(
        sequence == "", "no buying signal", "no buying signal (sequence " + sequence + ")"
    )
    return np.where(values == "", none, words)


def _source(X: _Rows) -> np.ndarray:
    values = _text(X, "source")
    words = _map_words(values, _SOURCE_WORDS, "source: ")
    return np.where(values == "", "source unknown", words)


def _industry(X: _Rows) -> np.ndarray:
    values = _text(X, "industry")
    return np.where(values == "", "industry unknown", values + " industry")


def _count_phrase(x: np.ndarray, zero: str, one: str, many: str, missing: str) -> np.ndarray:
    """``one``/``many`` (with ``{n}``) by count; ``zero``; ``missing`` for NaN."""
    out = np.where(np.isnan(x), missing, zero).astype(object)
    ones = x == 1
    out[ones] = one
    more = np.flatnonzero(x > 1)
    if more.size:
        head, tail = many.split("{n}")
        counts = np.array([str(v) for v in np.round(x[more]).astype(np.int64).tolist()], object)
        out[more] = head + counts + tail
    return out


def _open_deal(X: _Rows) -> np.ndarray:
    return _count_phrase(
        _num(X, "account_open_opportunities"),
        "no open deal at the account",
        "account already has an open deal",
        "account already has {n} open deals",
        "account not in the CRM yet",
    )


def _customer(X: _Rows) -> np.ndarray:
    return _count_phrase(
        _num(X, "account_won_opportunities"),
        "not a customer yet",
        "existing customer (1 won deal)",
        "existing customer ({n} won deals)",
        "account not in the CRM yet",
    )


def _account_history(X: _Rows) -> np.ndarray:
    leads = _num(X, "account_leads_before")
    sqos = _num(X, "account_sqos_before")
    with_sqo = _count_phrase(
        sqos, "", "1 earlier SQO at the account", "{n} earlier SQOs at the account", ""
    )
    tried = _count_phrase(
        leads,
        "first lead at the account",
        "1 earlier lead at the account, not an SQO",
        "{n} earlier leads at the account, none an SQO",
        "account not in the CRM yet",
    )
    return np.where(with_sqo != "", with_sqo, tried)


def _bdr(X: _Rows) -> np.ndarray:
    who = _text(X, "sdr_id")
    rate = _num(X, "sdr_sqo_rate")
    name = np.where(who == "", "no BDR assigned", "BDR " + who)
    pct = np.full(len(X), "", dtype=object)
    has = np.isfinite(rate)
    if has.any():
        # one rate per BDR and day: each distinct rate is written once
        distinct, back = np.unique(rate[has], return_inverse=True)
        words = np.array([f" (past SQO rate {100 * v:.0f}%)" for v in distinct], dtype=object)
        pct[has] = words[back]
    return name + pct


def _contact(X: _Rows) -> np.ndarray:
    days = _num(X, "days_since_last_contacted")
    return _count_phrase(
        days,
        "contacted today",
        "last contacted yesterday",
        "last contacted {n} days ago",
        "never contacted before",
    )


def _geography(X: _Rows) -> np.ndarray:
    region, country = _text(X, "region"), _text(X, "country")
    both = (region != "") & (country != "")
    return np.where(
        both,
        "based in " + country + " (" + region + ")",
        np.where(
            region != "",
            "region " + region,
            np.where(country != "", "based in " + country, "location unknown"),
        ),
    )


def _generic_phrase(feature: str, X: pd.DataFrame) -> np.ndarray:
    """Any other feature: its :func:`factor_text` phrase, once per distinct value."""
    values = X[feature] if feature in X.columns else pd.Series([None] * len(X))
    key = values.astype("string").fillna("\x00").to_numpy(dtype=object)
    firsts = pd.Series(range(len(key))).groupby(key, sort=False).first()
    phrase = {
        k: factor_text(feature, _value_of(X, feature, int(i)), 1.0)[: -len(PLUS) - 1]
        for k, i in firsts.items()
    }
    return pd.Series(key, dtype=object).map(phrase).to_numpy(dtype=object)


#: the feature columns each phrase reads (a phrase not listed is given every column)
_LEAD_PHRASE_COLUMNS: dict[str, frozenset[str]] = {
    "persona": frozenset(
        {
            "seniority",
            "employees",
            *(f for f, _ in _TITLE_SENIORITY),
            *(f for f, _ in _TITLE_FUNCTION),
        }
    ),
    "signal": frozenset({"signal_type", "sequence"}),
    "source": frozenset({"source"}),
    "industry": frozenset({"industry"}),
    "open_deal": frozenset({"account_open_opportunities"}),
    "customer": frozenset({"account_won_opportunities"}),
    "account_history": frozenset({"account_leads_before", "account_sqos_before"}),
    "bdr": frozenset({"sdr_id", "sdr_sqo_rate"}),
    "contact": frozenset({"days_since_last_contacted"}),
    "geography": frozenset({"region", "country"}),
}

_LEAD_PHRASES: dict[str, Callable[[_Rows], np.ndarray]] = {
    "persona": _persona,
    "signal": _signal,
    "source": _source,
    "industry": _industry,
    "open_deal": _open_deal,
    "customer": _customer,
    "account_history": _account_history,
    "bdr": _bdr,
    "contact": _contact,
    "geography": _geography,
}


# ----------------------------------------------------------------------------------------
# reason codes from contribution tables (as credit scorecards do)
# ----------------------------------------------------------------------------------------

#: bins per numeric feature in a contribution table (quantiles of the fitting rows)
TABLE_BINS = 32
#: rows a contribution table is fitted on at most (a seeded sample of the rows given)
TABLE_ROWS = 20_000


@dataclass
class ReasonTables:
    """Per-feature contribution tables: the mean TreeSHAP contribution of each feature for
    each bin of its values (numeric: quantile bins, plus one for a missing value) or each
    category (plus one for a missing or unseen category), over the rows they were fitted on.

    Looking a lead's values up in them gives an additive approximation of its exact
    contributions, for the cost of a lookup per feature instead of a TreeSHAP pass. It is the
    scorecard way of giving reason codes: what a value is worth on average, not what it is
    worth for this lead with everything else it has (an interaction is averaged out).

    Attributes
    ----------
    columns
        The model's feature columns (encoded order).
    edges
        Per numeric feature, the inner bin edges (``searchsorted(edges, x, side="right")`` is
        the bin; a missing value has the bin after the last).
    values
        Per feature, the mean contribution of each bin (or category code + 1; 0 = missing).
    rows
        How many rows the tables were fitted on.
    """

    columns: list[str]
    edges: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    rows: int

    def bins(self, clf: Any, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """The table cell of each row for each feature (``X`` raw, as the model takes it)."""
        return _matrix_cells(clf, encoded_matrix(clf.encoder_, X), self.columns, self.edges)

    def contributions(self, clf: Any, X: pd.DataFrame) -> pd.DataFrame:
        """Each row's approximate contributions (log-odds), one column per model feature."""
        values = self.contributions_of(clf, encoded_matrix(clf.encoder_, X))
        return pd.DataFrame(values, index=X.index, columns=self.columns, dtype="float64")

    def contributions_of(self, clf: Any, matrix: np.ndarray) -> np.ndarray:
        """:meth:`contributions` of rows already encoded (``SQOLikelihoodModel.encode``)."""
        cells = _matrix_cells(clf, matrix, self.columns, self.edges)
        out = np.empty((len(matrix), len(self.columns)), dtype=np.float64)
        for j, c in enumerate(self.columns):
            out[:, j] = self.values[c][cells[c]]
        return out


def _matrix_cells(
    clf: Any, matrix: np.ndarray, columns: Sequence[str], edges: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The table cell of each encoded row for each feature: a category's cell is its code + 1
    (0 for a missing or unseen one), a number's its quantile bin (the last for a missing one)."""
    position = {c: j for j, c in enumerate(clf.encoder_.columns_)}
    levels = clf.encoder_.levels_
    out: dict[str, np.ndarray] = {}
    for c in columns:
        v = matrix[:, position[c]]
        missing = np.isnan(v)
        if c in levels:
            out[c] = np.where(missing, 0, np.nan_to_num(v, nan=-1.0) + 1).astype(np.int64)
        else:
            e = edges[c]
            cell = np.searchsorted(e, v, side="right")
            out[c] = np.where(missing, e.size + 1, cell).astype(np.int64)
    return out


def fit_reason_tables(
    model: Any,
    X: pd.DataFrame,
    *,
    bins: int = TABLE_BINS,
    max_rows: int = TABLE_ROWS,
    seed: int = 0,
) -> ReasonTables | None:
    """Fit per-feature contribution tables of ``model`` on the rows of ``X``.

    Parameters
    ----------
    model
        The SQO-likelihood model as served (or a bare LightGBM probability model).
    X
        Feature rows (``features.lead.build`` output): the training leads, or a sample of the
        list to explain. No labels are used, so fitting on the list itself looks at nothing
        the list does not already hold.
    bins
        Quantile bins per numeric feature.
    max_rows
        At most this many rows are used (a seeded random sample of ``X``).
    seed
        Seed of that sample.

    Returns
    -------
    ReasonTables or None
        ``None`` for a model without a LightGBM booster (its reasons need no TreeSHAP), or
        when ``X`` is empty.

    Notes
    -----
    Fit them on the rows to be explained (a sample of the list), not on the training rows:
    a table cell is an average over the rows that fell in it, and on a list unlike the
    training leads (UCI bank marketing's later campaigns) tables fitted on the training leads
    named the exact top reason of none of the latest leads, tables fitted on half of those
    leads of all of the other half.
    """
    clf = lightgbm_classifier(model)
    if clf is None or len(X) == 0:
        return None
    if len(X) > max_rows:
        pick = np.sort(np.random.default_rng(seed).choice(len(X), size=max_rows, replace=False))
        X = X.iloc[pick]
    matrix = encoded_matrix(clf.encoder_, X)
    contrib = _lead_contributions(clf, matrix)
    columns = list(clf.encoder_.columns_)
    levels = clf.encoder_.levels_
    edges: dict[str, np.ndarray] = {}
    for j, c in enumerate(columns):
        if c in levels:
            continue
        v = matrix[:, j]
        v = v[~np.isnan(v)]
        if v.size == 0:
            edges[c] = np.zeros(0)
            continue
        qs = np.quantile(v, np.linspace(0.0, 1.0, bins + 1)[1:-1])
        # a value's bin holds the values equal to it: edges at the distinct quantiles
        edges[c] = np.unique(qs)
    cells = _matrix_cells(clf, matrix, columns, edges)
    values: dict[str, np.ndarray] = {}
    for j, c in enumerate(columns):
        size = len(levels[c]) + 1 if c in levels else edges[c].size + 2
        total = np.bincount(cells[c], weights=contrib[:, j], minlength=size)
        count = np.bincount(cells[c], minlength=size)
        # a category no fitting row had says nothing: worth 0, never a reason
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        if c in edges and (count[:-1] > 0).any():
            # a value beyond the fitting rows' range: a tree treats it as the nearest values
            # it saw (its splits extend flat past the data), so the nearest filled bin's worth
            filled = np.flatnonzero(count[:-1] > 0)
            inner = np.arange(count.size - 1)
            nearest = filled[np.clip(np.searchsorted(filled, inner), 0, filled.size - 1)]
            before = filled[np.clip(np.searchsorted(filled, inner) - 1, 0, filled.size - 1)]
            pick = np.where(np.abs(before - inner) < np.abs(nearest - inner), before, nearest)
            mean[:-1] = mean[pick]
        values[c] = mean
    return ReasonTables(columns=columns, edges=edges, values=values, rows=len(X))


def top_reason_agreement(model: Any, X: pd.DataFrame, tables: ReasonTables) -> float:
    """Share of rows whose strongest reason is the same by the tables as by exact TreeSHAP.

    The strongest reason is the one a lead's text starts with (:func:`lead_reasons`): the
    reason group with the largest weight. NaN for an empty ``X`` or a model without a booster.
    """
    clf = lightgbm_classifier(model)
    if clf is None or len(X) == 0:
        return float("nan")
    exact, _ = contributions(clf, X)
    approx = tables.contributions(clf, X)
    _, _, w_exact = _reason_weights(exact)
    _, _, w_table = _reason_weights(approx[exact.columns])
    return float(np.mean(w_exact.argmax(axis=1) == w_table.argmax(axis=1)))
