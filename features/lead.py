"""Pre-sequencing features of leads, for the SQO-likelihood model and list scoring.

Time meaning: ``as_of`` is a day D and means the END of day D (inclusive). A lead is scored
before a BDR works it, so nothing observed after it entered the list is a feature: not
``meeting_at``, not ``sqo_at``, not replies or other activities. What the rest of the CRM knew at
D is: account history and the SQO rates of similar leads use only leads and deals recorded on
or before D. A past lead's SQO counts in account history once its ``sqo_at`` is on or before D;
in the similar-lead rates a past lead counts only once its whole SQO window has ended by D, so
that early SQOs are not counted before the non-SQOs of the same weeks are known.

Features (one row per lead):

=================================  ========================================================
employees, log_annual_revenue      firmographics (log1p of revenue)
industry, region, country, source, categorical (strings)
signal_type, seniority, sdr_id,
sequence
title_vp, title_director, …        title keyword flags (1/0; NaN when there is no title)
title_sales, title_marketing, …    the buyer's function, from the title
account_leads_before               other leads at the account created on or before D
account_sqos_before                other leads at the account that became SQOs by D
account_open_opportunities         deals at the account open at the end of D
account_won_opportunities          deals at the account won on or before D
source_signal_sqo_rate,            SQO rate of earlier leads whose SQO window had ended by D,
industry_sqo_rate, sdr_sqo_rate    with the same source × signal / industry / SDR, shrunk
                                   toward the overall rate: (SQOs + k·prior) / (leads + k)
<dataset.yaml extras>              columns declared under ``features.leads``
days_since_last_contacted          only on or after the export date (see below)
=================================  ========================================================

The lead itself, and the deals it became, never count in its own account history or rates.
``last_contacted_at`` is a current value (it moves with every touch): for a past D the value in
the export may be a later contact, and its mere presence would tell whether the lead was
worked after D. It is used only when D is on or after the export date (scoring a live list);
training rows (as of each lead's creation) never have it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from features._timeline import (
    DAY,
    EventIndex,
    as_day,
    count_before_all,
    days_between,
    group_codes,
    shrunk_rate,
)
from features.errors import InputError
from features.io import Export
from features.labels import lead_decided_at, lead_label_values
from features.snapshots import cut_export

log = logging.getLogger(__name__)

#: categorical feature columns (kept as strings; the model layer encodes them). Extra text
#: columns declared in dataset.yaml are categorical too: see :func:`categorical_columns`.
CATEGORICAL: list[str] = [
    "industry",
    "region",
    "country",
    "source",
    "signal_type",
    "seniority",
    "sdr_id",
    "sequence",
]
#: title keywords: seniority and function of the buyer (matched on the lower-cased title)
TITLE_FLAGS: dict[str, str] = {
    "title_vp": r"\b(?:vp|svp|evp|vice president)\b",
    "title_director": r"\bdirector\b",
    "title_head": r"\bhead\b",
    "title_chief": r"\b(?:chief|ceo|cto|cfo|cmo|cio|coo|cro|ciso)\b",
    "title_manager": r"\bmanager\b",
    "title_founder": r"\b(?:founder|co-founder|owner)\b",
    "title_sales": r"\b(?:sales|revenue|cro|business development|account)\b",
    "title_marketing": r"\b(?:marketing|cmo|growth|demand)\b",
    "title_it": (
        r"\b(?:it|information technology|cio|cto|ciso|engineering|technology|security"
        r"|infrastructure)\b"
    ),
    "title_finance": r"\b(?:finance|financial|cfo|controller|accounting)\b",
    "title_operations": r"\b(?:operations|ops|revops|coo)\b",
}
#: counts at the lead's account (NaN when the lead has no account or no time)
ACCOUNT_FEATURES = (
    "account_leads_before",
    "account_sqos_before",
    "account_open_opportunities",
    "account_won_opportunities",
)
#: shrunk SQO rates of similar leads, by the columns that define "similar"
RATE_GROUPS: dict[str, tuple[str, ...]] = {
    "source_signal_sqo_rate": ("source", "signal_type"),
    "industry_sqo_rate": ("industry",),
    "sdr_sqo_rate": ("sdr_id",),
}
RATE_FEATURES = tuple(RATE_GROUPS)
#: prior strength k of the shrunk SQO rates
RATE_PRIOR_STRENGTH = 20.0
_MISSING = "<missing>"
_NOT_FEATURES = {
    "lead_id",
    "account_id",
    "created_at",
    "sqo_at",
    "is_sqo",
    "meeting_at",
    "title",
    "do_not_contact",
    "last_contacted_at",
}


def categorical_columns(table: pd.DataFrame) -> list[str]:
    """The categorical columns of a lead feature table: :data:`CATEGORICAL` plus text extras."""
    return [
        c
        for c in table.columns
        if c in CATEGORICAL
        or (c not in ("lead_id", "as_of") and pd.api.types.is_string_dtype(table[c]))
    ]


def build(export: Export, *, as_of: Any, leads: pd.DataFrame | None = None) -> pd.DataFrame:
    """Pre-sequencing features of leads as of the end of day ``as_of``.

    Parameters
    ----------
    export
        The CRM export: its leads and opportunities are the history that account and rate
        features are computed from (rows after ``as_of`` are dropped first).
    as_of
        A day D; features use what was recorded on or before the END of D.
    leads
        The leads to describe (contract ``leads`` columns, e.g. a new list to score). Default:
        the export's leads created on or before D (and those with no ``created_at``). Their
        own columns are taken as given: a list handed in is its current state.

    Returns
    -------
    DataFrame
        Indexed by ``lead_id``; numeric features float64, :func:`categorical_columns` strings.
    """
    day = as_day(as_of)
    # an export without any date (leads with a converted flag only) has nothing to cut: none
    # of its rows can be placed after D, and its leads give no time-bound features anyway
    known = cut_export(export, day) if export.export_date is not None else export
    targets = known.leads if leads is None else leads
    if targets is None:
        raise InputError(
            "Lead features need leads: the export has no leads.csv (or .parquet) and no lead "
            "list was given."
        )
    bounds = pd.Series([day + DAY] * len(targets), dtype="datetime64[ns]")
    table = _features(known, targets.reset_index(drop=True), bounds, current=True)
    return table.set_index("lead_id")


def build_training_set(export: Export) -> pd.DataFrame:
    """Features of every lead of the export as of the end of its own ``created_at`` day.

    Each row equals ``build(export, as_of=created_at, leads=<that lead>)`` except for the
    current-only columns (``days_since_last_contacted``), which no past day can know: account
    history and similar-lead rates count only what was recorded by the end of that day. Leads
    without ``created_at`` (labels without dates) get their own columns only; their time-bound
    features are NaN.

    Returns
    -------
    DataFrame
        Indexed by ``lead_id``; first column ``as_of`` (the lead's creation day), then the
        features of :func:`build`.
    """
    leads = export.leads
    if leads is None:
        raise InputError("Lead features need the export's leads: add leads.csv to the export.")
    targets = leads.reset_index(drop=True)
    if "created_at" in targets.columns:
        days = targets["created_at"].dt.normalize().astype("datetime64[ns]")
    else:
        days = pd.Series(pd.NaT, index=targets.index, dtype="datetime64[ns]")
    table = _features(export, targets, days + DAY, current=False)
    table.insert(1, "as_of", days.to_numpy())
    return table.set_index("lead_id")


# ----------------------------------------------------------------------------------------
# the batch core: each target lead at its own bound (the first instant after its as-of day)
# ----------------------------------------------------------------------------------------


def _features(
    export: Export, targets: pd.DataFrame, bounds: pd.Series, *, current: bool
) -> pd.DataFrame:
    n = len(targets)
    cols: dict[str, Any] = {"lead_id": targets["lead_id"].astype("string").to_numpy()}
    b = bounds.to_numpy(dtype="datetime64[ns]")
    no_time = np.isnat(b)
    if "employees" in targets.columns:
        cols["employees"] = targets["employees"].to_numpy(dtype=np.float64, na_value=np.nan)
    if "annual_revenue" in targets.columns:
        revenue = targets["annual_revenue"].to_numpy(dtype=np.float64, na_value=np.nan)
        cols["log_annual_revenue"] = np.log1p(np.where(revenue >= 0, revenue, np.nan))
    for name in CATEGORICAL:
        if name in targets.columns:
            cols[name] = targets[name].astype("string").to_numpy()
    if "title" in targets.columns:
        title = targets["title"].astype("string").str.lower()
        has_title = title.notna().to_numpy(dtype=bool)
        for name, pattern in TITLE_FLAGS.items():
            hit = title.str.contains(pattern, regex=True).to_numpy(dtype=bool, na_value=False)
            cols[name] = np.where(has_title, hit.astype(np.float64), np.nan)
    pool = export.leads
    cols.update(_account_history(export, targets, b))
    if pool is not None:
        cols.update(_similar_lead_rates(export, pool, targets, b))
    for name in export.config.features.get("leads", []):
        if name in targets.columns and name not in _NOT_FEATURES and name not in cols:
            values = targets[name]
            if pd.api.types.is_bool_dtype(values):
                cols[name] = values.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
            elif pd.api.types.is_numeric_dtype(values):
                cols[name] = values.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                cols[name] = values.astype("string").to_numpy()
    if current and "last_contacted_at" in targets.columns:
        contacted = targets["last_contacted_at"].to_numpy(dtype="datetime64[ns]")
        days = pd.Series(b - np.timedelta64(1, "D"))
        since = days_between(days, pd.Series(contacted))
        # a contact dated after D cannot be known at D
        cols["days_since_last_contacted"] = np.where(contacted < b, since, np.nan)
    no_account = (
        targets["account_id"].isna().to_numpy(dtype=bool)
        if "account_id" in targets.columns
        else np.ones(n, dtype=bool)
    )
    for name in ACCOUNT_FEATURES:
        if name in cols:
            cols[name] = np.where(no_account | no_time, np.nan, cols[name])
    for name in RATE_FEATURES:
        if name in cols:
            cols[name] = np.where(no_time, np.nan, cols[name])
    out = pd.DataFrame(cols, index=pd.RangeIndex(n))
    for name in out.columns:
        values = out[name]
        if (
            name == "lead_id"
            or name in CATEGORICAL
            or pd.api.types.is_object_dtype(values)
            or pd.api.types.is_string_dtype(values)
        ):
            out[name] = out[name].astype("string")
        else:
            out[name] = out[name].astype("float64")
    return out


def _self_rows(pool: pd.DataFrame, targets: pd.DataFrame) -> np.ndarray:
    """Row of each target lead in the pool (-1 when the pool does not hold it)."""
    return pd.Index(pool["lead_id"].astype("string")).get_indexer(
        targets["lead_id"].astype("string").to_numpy()
    )


def _account_history(export: Export, targets: pd.DataFrame, b: np.ndarray) -> dict[str, np.ndarray]:
    """Counts at each target's account of what happened before its bound (self excluded)."""
    out: dict[str, np.ndarray] = {}
    if "account_id" not in targets.columns:
        return out
    account = targets["account_id"].astype("string")
    pool = export.leads
    if pool is not None and "account_id" in pool.columns and "created_at" in pool.columns:
        ev, q = group_codes(pool["account_id"], account)
        self_row = _self_rows(pool, targets)
        mine = self_row >= 0
        safe = np.maximum(self_row, 0)
        same_account = mine & (
            pool["account_id"].astype("string").to_numpy(dtype=object, na_value=None)[safe]
            == account.to_numpy(dtype=object, na_value=None)
        )
        created = pool["created_at"].to_numpy(dtype="datetime64[ns]")
        leads_before = EventIndex(ev, created).count_before(q, b)
        self_counted = same_account & (created[safe] < b)
        out["account_leads_before"] = (leads_before - self_counted).astype(np.float64)
        sqo_times = _sqo_event_times(export, pool)
        if sqo_times is not None:
            sqos = EventIndex(ev, sqo_times).count_before(q, b)
            self_sqo = same_account & (sqo_times[safe] < b)
            out["account_sqos_before"] = (sqos - self_sqo).astype(np.float64)
    opps = export.opportunities
    if opps is not None and "account_id" in opps.columns:
        ev, q = group_codes(opps["account_id"], account)
        created = opps["created_at"].to_numpy(dtype="datetime64[ns]")
        closed = (
            opps["closed_at"].to_numpy(dtype="datetime64[ns]")
            if "closed_at" in opps.columns
            else np.full(len(opps), np.datetime64("NaT", "ns"))
        )
        status = opps["status"].astype("string").to_numpy(dtype=object, na_value="")
        won_time = np.where(status == "won", closed, np.datetime64("NaT", "ns"))
        n_created = EventIndex(ev, created).count_before(q, b)
        n_closed = EventIndex(ev, closed).count_before(q, b)
        n_won = EventIndex(ev, won_time).count_before(q, b)
        open_now = n_created - n_closed
        # the lead's own deals: an SQO on its first day would otherwise describe its own outcome
        if "lead_id" in opps.columns:
            own = pd.DataFrame(
                {
                    "lead_id": opps["lead_id"].astype("string"),
                    "account_id": opps["account_id"].astype("string"),
                    "created": created,
                    "closed": closed,
                    "won_time": won_time,
                }
            ).dropna(subset=["lead_id"])
            if len(own):
                t = pd.DataFrame(
                    {
                        "lead_id": targets["lead_id"].astype("string"),
                        "account_id": account,
                        "bound": b,
                        "row": np.arange(len(targets)),
                    }
                )
                m = t.merge(own, on=["lead_id", "account_id"], how="inner")
                if len(m):
                    bound = m["bound"].to_numpy(dtype="datetime64[ns]")
                    c_before = m["created"].to_numpy(dtype="datetime64[ns]") < bound
                    x_before = m["closed"].to_numpy(dtype="datetime64[ns]") < bound
                    w_before = m["won_time"].to_numpy(dtype="datetime64[ns]") < bound
                    rows = m["row"].to_numpy()
                    open_now = open_now - np.bincount(
                        rows, weights=(c_before & ~x_before).astype(float), minlength=len(targets)
                    ).astype(np.int64)
                    n_won = n_won - np.bincount(
                        rows, weights=w_before.astype(float), minlength=len(targets)
                    ).astype(np.int64)
        out["account_open_opportunities"] = open_now.astype(np.float64)
        out["account_won_opportunities"] = n_won.astype(np.float64)
    return out


def _sqo_event_times(export: Export, pool: pd.DataFrame) -> np.ndarray | None:
    """When each pool lead's SQO became known: ``sqo_at``; with only ``is_sqo``, the end of its
    window (the latest day it can have happened). None when the export has no SQO data."""
    if "sqo_at" in pool.columns:
        return pool["sqo_at"].dt.normalize().to_numpy(dtype="datetime64[ns]")
    if "is_sqo" in pool.columns:
        window = export.config.sqo_window_days
        label = lead_label_values(pool, window).to_numpy()
        decided = lead_decided_at(pool, window).to_numpy(dtype="datetime64[ns]")
        return np.where(label == 1.0, decided, np.datetime64("NaT", "ns"))
    return None


def _group_key(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    parts = [frame[c].astype("string").fillna(_MISSING) for c in columns]
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    return key.reset_index(drop=True)


def _similar_lead_rates(
    export: Export, pool: pd.DataFrame, targets: pd.DataFrame, b: np.ndarray
) -> dict[str, np.ndarray]:
    """Shrunk SQO rates of similar leads whose whole SQO window ended before each bound.

    Only complete cohorts count: a lead enters the rates when its window has passed
    (``created_at + window`` on or before D), as an SQO or not. Counting early SQOs as soon as
    they happen, while the other leads of the same weeks are still undecided, would inflate
    the rates by an amount that depends on recent lead volume.
    """
    out: dict[str, np.ndarray] = {}
    if "created_at" not in pool.columns or not ({"sqo_at", "is_sqo"} & set(pool.columns)):
        return out
    window = export.config.sqo_window_days
    label = lead_label_values(pool, window).to_numpy()
    created = pool["created_at"].dt.normalize().to_numpy(dtype="datetime64[ns]")
    decided_at = created + np.timedelta64(window, "D")
    decided = ~np.isnan(label) & ~np.isnat(decided_at)
    dec_time = np.where(decided, decided_at, np.datetime64("NaT", "ns"))
    pos_time = np.where(decided & (label == 1.0), decided_at, np.datetime64("NaT", "ns"))
    self_row = _self_rows(pool, targets)
    mine = self_row >= 0
    safe = np.maximum(self_row, 0)
    self_decided = mine & (dec_time[safe] < b) if len(pool) else np.zeros(len(targets), dtype=bool)
    self_pos = mine & (pos_time[safe] < b) if len(pool) else np.zeros(len(targets), dtype=bool)
    all_dec = count_before_all(dec_time, b) - self_decided
    all_pos = count_before_all(pos_time, b) - self_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        prior = np.where(all_dec > 0, all_pos / all_dec, np.nan)
    for name, columns in RATE_GROUPS.items():
        present = tuple(c for c in columns if c in pool.columns and c in targets.columns)
        if not present:
            continue
        ev, q = group_codes(_group_key(pool, present), _group_key(targets, present))
        n_dec = EventIndex(ev, dec_time).count_before(q, b)
        n_pos = EventIndex(ev, pos_time).count_before(q, b)
        if len(pool):
            same = mine & (ev[safe] == q)
            n_dec = n_dec - (same & self_decided)
            n_pos = n_pos - (same & self_pos)
        out[name] = shrunk_rate(n_pos, n_dec, prior, RATE_PRIOR_STRENGTH)
    return out
