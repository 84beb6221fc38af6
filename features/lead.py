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

What a lead's features read of the rest of the CRM (its account's leads and deals, the rates of
similar leads) depends only on the export and D: :func:`history_as_of` indexes it once
(:class:`LeadHistory`), and ``build(..., history=…)`` then does only per-lead work, which is what
scoring one lead over HTTP needs. A history describes leads as of its own day and export only.
A handful of leads (one request's, :data:`FEW_LEADS` at most) is described cell by cell from
the same history into the very table the batch core makes, without pandas' fixed cost per
column operation.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features._timeline import (
    DAY,
    EventIndex,
    as_day,
    seconds,
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
    # "Chief Information Officer" is IT as much as "CIO" is
    "title_it": (
        r"\b(?:it|information|cio|cto|ciso|engineering|technology"
        r"|security|infrastructure)\b"
    ),
    "title_finance": r"\b(?:finance|financial|cfo|controller|accounting)\b",
    # "Chief Operating Officer" heads operations as "COO" does
    "title_operations": r"\b(?:operations|operating|ops|revops|coo)\b",
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
#: groups of columns the SQO-likelihood model keeps only when they help it predict later leads
#: (``models.feature_selection``): what the rest of the CRM says about the lead (its account's
#: history, the rates of similar leads) and list columns that often carry nothing of the outcome
OPTIONAL_GROUPS: dict[str, tuple[str, ...]] = {
    "account history": ACCOUNT_FEATURES,
    "similar-lead rates": RATE_FEATURES,
    "location": ("region", "country"),
    "revenue": ("log_annual_revenue",),
}
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


def build(
    export: Export,
    *,
    as_of: Any,
    leads: pd.DataFrame | None = None,
    history: LeadHistory | None = None,
) -> pd.DataFrame:
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
    history
        The export's history as of D, indexed once (:func:`history_as_of`), so that scoring
        one lead after another does only per-lead work. It must have been built from this
        very ``export`` for this very day D: any other is refused (``ValueError``), so that
        one day's history can never describe a lead as of another day.

    Returns
    -------
    DataFrame
        Indexed by ``lead_id``; numeric features float64, :func:`categorical_columns` strings.
    """
    day = as_day(as_of)
    if history is None:
        history = history_as_of(export, day)
    elif history.day != day or history.source is not export:
        raise ValueError(
            f"lead history of {history.day} for another export or day given to describe leads "
            f"as of {day.date()}"
        )
    targets = history.leads if leads is None else leads
    if targets is None:
        raise InputError(
            "Lead features need leads: the export has no leads.csv (or .parquet) and no lead "
            "list was given."
        )
    if len(targets) <= FEW_LEADS:
        return _few_features(history, targets.reset_index(drop=True), day)
    bounds = np.full(len(targets), np.datetime64(day + DAY, "ns"), dtype="datetime64[ns]")
    table = _features(history, targets.reset_index(drop=True), bounds, current=True)
    return table.set_index("lead_id")


def history_as_of(export: Export, as_of: Any) -> LeadHistory:
    """The export's account histories and similar-lead rates as known at the end of ``as_of``.

    What :func:`build` reads of the rest of the CRM depends only on the export and the day:
    indexed once, it serves any number of leads scored as of that day (``build(...,
    history=…)``). Only rows recorded on or before the END of that day are in it.
    """
    day = as_day(as_of)
    # an export without any date (leads with a converted flag only) has nothing to cut: none
    # of its rows can be placed after D, and its leads give no time-bound features anyway
    known = cut_export(export, day) if export.export_date is not None else export
    return LeadHistory(known, day=day, source=export)


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
    # the whole export, uncut: each lead's own bound (the end of its creation day) keeps
    # every later row out of its features
    history = LeadHistory(export, day=None, source=export)
    bounds = (days + DAY).to_numpy(dtype="datetime64[ns]")
    table = _features(history, targets, bounds, current=False)
    table.insert(1, "as_of", days.to_numpy())
    return table.set_index("lead_id")


# ----------------------------------------------------------------------------------------
# the rest of the CRM, indexed once: account history and similar-lead rates
# ----------------------------------------------------------------------------------------


#: queries of at most this many keys are looked up in a dict rather than a vectorised index
SMALL_QUERY = 64


class _Groups:
    """Events grouped by a text key, indexed for "how many before bound b" look-ups."""

    def __init__(self, keys: pd.Series, times: dict[str, np.ndarray]) -> None:
        codes, uniques = pd.factorize(keys.astype("string").reset_index(drop=True))
        self.codes = codes.astype(np.int64)  # -1: no group (a missing key), never counted
        self.uniques = pd.Index(uniques, dtype="string")
        self.events = {name: EventIndex(self.codes, t) for name, t in times.items()}
        self._positions: dict[str | None, int] | None = None

    def query(self, keys: pd.Series | list[str | None]) -> np.ndarray:
        """The group code of each query key; a key no event has (or a missing one) matches
        nothing. ``keys``: a series, or the keys as Python strings (None: missing)."""
        none = len(self.uniques)
        if isinstance(keys, list) or len(keys) <= SMALL_QUERY:
            # a few leads (one scored over HTTP): a dict look-up per key costs microseconds
            # where the vectorised look-up costs a fixed fraction of a millisecond
            if self._positions is None:
                self._positions = {k: i for i, k in enumerate(self.uniques.to_numpy(object))}
            values = keys if isinstance(keys, list) else _texts(keys)
            return np.fromiter(
                (self._positions.get(v, none) for v in values), dtype=np.int64, count=len(values)
            )
        q = self.uniques.get_indexer(keys.astype("string").reset_index(drop=True).to_numpy())
        return np.where(q < 0, none, q).astype(np.int64)

    def count_before(self, name: str, q: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.events[name].count_before(q, b)


class LeadHistory:
    """What the rest of the CRM holds for lead features, indexed for vectorised look-ups.

    The export's leads (account counts, similar-lead rates) and opportunities (deals at the
    account), each grouped and sorted by time once; :meth:`account_history` and
    :meth:`similar_lead_rates` then count, for each lead, the events before its own bound.
    Built on an export cut at a day (:func:`history_as_of`) it describes leads as of that day;
    built on a whole export (``day=None``) with per-lead bounds it gives the training table.

    Attributes
    ----------
    day
        The as-of day it was cut at (None: uncut, bounds per lead).
    source
        The export it was built from (before the cut).
    leads
        The cut export's leads (the default leads to describe), or None.
    """

    def __init__(self, export: Export, *, day: pd.Timestamp | None, source: Export) -> None:
        self.day = day
        # weakly: a cache of histories must not keep old exports alive
        self._source = weakref.ref(source)
        self.leads = export.leads
        self.extra_features: list[str] = list(export.config.features.get("leads", []))
        self.window = int(export.config.sqo_window_days)
        pool = export.leads
        self._pool = pool
        self._pool_ids: pd.Index | None = None
        self._pool_rows: dict[str | None, int] | None = None
        self._accounts: _Groups | None = None
        self._created: np.ndarray | None = None
        self._sqo_times: np.ndarray | None = None
        if pool is not None and "lead_id" in pool.columns:
            self._pool_ids = pd.Index(pool["lead_id"].astype("string"))
        if pool is not None and "account_id" in pool.columns and "created_at" in pool.columns:
            self._created = pool["created_at"].to_numpy(dtype="datetime64[ns]")
            self._sqo_times = _sqo_event_times(export, pool)
            times = {"created": self._created}
            if self._sqo_times is not None:
                times["sqo"] = self._sqo_times
            self._accounts = _Groups(pool["account_id"], times)
        self._opps: _Groups | None = None
        self._own_deals: _Groups | None = None
        opps = export.opportunities
        if opps is not None and "account_id" in opps.columns:
            created = opps["created_at"].to_numpy(dtype="datetime64[ns]")
            closed = (
                opps["closed_at"].to_numpy(dtype="datetime64[ns]")
                if "closed_at" in opps.columns
                else np.full(len(opps), np.datetime64("NaT", "ns"))
            )
            status = opps["status"].astype("string").to_numpy(dtype=object, na_value="")
            won_time = np.where(status == "won", closed, np.datetime64("NaT", "ns"))
            self._opps = _Groups(
                opps["account_id"], {"created": created, "closed": closed, "won": won_time}
            )
            if "lead_id" in opps.columns:
                has_lead = opps["lead_id"].notna().to_numpy(dtype=bool)
                if has_lead.any():
                    own = opps.loc[has_lead]
                    self._own_deals = _Groups(
                        _own_key(own["lead_id"], own["account_id"]),
                        {
                            "created": created[has_lead],
                            # NaT (still open) stays NaT: never closed before any bound
                            "created_and_closed": np.maximum(created[has_lead], closed[has_lead]),
                            "won": won_time[has_lead],
                        },
                    )
        # similar-lead rates: complete cohorts only (see _similar_lead_rates)
        self._rates_ready = False
        self._rate_groups: dict[tuple[str, ...], _Groups] = {}
        if (
            pool is not None
            and "created_at" in pool.columns
            and ({"sqo_at", "is_sqo"} & set(pool.columns))
        ):
            label = lead_label_values(pool, self.window).to_numpy()
            created_day = pool["created_at"].dt.normalize().to_numpy(dtype="datetime64[ns]")
            decided_at = created_day + np.timedelta64(self.window, "D")
            decided = ~np.isnan(label) & ~np.isnat(decided_at)
            self._dec_time = np.where(decided, decided_at, np.datetime64("NaT", "ns"))
            self._pos_time = np.where(
                decided & (label == 1.0), decided_at, np.datetime64("NaT", "ns")
            )
            self._dec_sorted = np.sort(seconds(self._dec_time))
            self._pos_sorted = np.sort(seconds(self._pos_time))
            self._rates_ready = True
            for columns in RATE_GROUPS.values():
                present = tuple(c for c in columns if c in pool.columns)
                if present:
                    self._rate_groups[present] = self._rate_index(present)

    @property
    def source(self) -> Export | None:
        """The export this history was built from (None once that export is gone)."""
        return self._source()

    def _rate_index(self, present: tuple[str, ...]) -> _Groups:
        assert self._pool is not None
        return _Groups(
            _group_key(self._pool, present), {"dec": self._dec_time, "pos": self._pos_time}
        )

    def self_rows(self, targets: pd.DataFrame) -> np.ndarray:
        """Row of each target lead among the history's leads (-1 when it is not one)."""
        if self._pool_ids is None:
            return np.full(len(targets), -1, dtype=np.int64)
        return np.asarray(
            self._pool_ids.get_indexer(targets["lead_id"].astype("string").to_numpy()),
            dtype=np.int64,
        )

    def self_rows_of(self, ids: list[str | None]) -> np.ndarray:
        """:meth:`self_rows` of a few leads given by their ids (dict look-ups)."""
        if self._pool_ids is None:
            return np.full(len(ids), -1, dtype=np.int64)
        if self._pool_rows is None:
            # the history's lead ids are unique (the contract checks them)
            self._pool_rows = {k: i for i, k in enumerate(self._pool_ids.to_numpy(object))}
        rows = self._pool_rows
        return np.fromiter((rows.get(v, -1) for v in ids), dtype=np.int64, count=len(ids))

    def account_history(
        self, targets: pd.DataFrame, b: np.ndarray, self_row: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Counts at each target's account of what happened before its bound (self excluded)."""
        if "account_id" not in targets.columns:
            return {}
        account = targets["account_id"].astype("string").reset_index(drop=True)
        return self.account_counts(targets["lead_id"], account, b, self_row)

    def account_counts(
        self,
        lead_ids: pd.Series | list[str | None],
        account: pd.Series | list[str | None],
        b: np.ndarray,
        self_row: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """:meth:`account_history` of leads given by their ids and accounts (series, or
        Python strings for a few leads; None or NA: missing)."""
        out: dict[str, np.ndarray] = {}
        if self._accounts is not None:
            assert self._created is not None
            q = self._accounts.query(account)
            mine = self_row >= 0
            safe = np.maximum(self_row, 0)
            # the same account: the same group code (a missing account is in no group)
            same_account = mine & (self._accounts.codes[safe] == q)
            leads_before = self._accounts.count_before("created", q, b)
            self_counted = same_account & (self._created[safe] < b)
            out["account_leads_before"] = (leads_before - self_counted).astype(np.float64)
            if self._sqo_times is not None:
                sqos = self._accounts.count_before("sqo", q, b)
                self_sqo = same_account & (self._sqo_times[safe] < b)
                out["account_sqos_before"] = (sqos - self_sqo).astype(np.float64)
        if self._opps is not None:
            q = self._opps.query(account)
            n_created = self._opps.count_before("created", q, b)
            n_closed = self._opps.count_before("closed", q, b)
            n_won = self._opps.count_before("won", q, b)
            open_now = n_created - n_closed
            # the lead's own deals: an SQO on its first day would otherwise describe its own
            # outcome
            if self._own_deals is not None:
                open_now, n_won = self._without_own_deals(lead_ids, account, b, open_now, n_won)
            out["account_open_opportunities"] = open_now.astype(np.float64)
            out["account_won_opportunities"] = n_won.astype(np.float64)
        return out

    def _without_own_deals(
        self,
        lead_ids: pd.Series | list[str | None],
        account: pd.Series | list[str | None],
        b: np.ndarray,
        open_now: np.ndarray,
        n_won: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        own = self._own_deals
        assert own is not None
        if isinstance(lead_ids, list) and isinstance(account, list):
            q = own.query(_own_key_values(lead_ids, account))
        else:
            q = own.query(_own_key(pd.Series(lead_ids), pd.Series(account)))
        created = own.count_before("created", q, b)
        # a deal closed before the bound is open there only if it was not created yet either
        closed = own.count_before("created_and_closed", q, b)
        won = own.count_before("won", q, b)
        return open_now - (created - closed), n_won - won

    def similar_lead_rates(
        self, targets: pd.DataFrame, b: np.ndarray, self_row: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Shrunk SQO rates of similar leads whose whole SQO window ended before each bound.

        Only complete cohorts count: a lead enters the rates when its window has passed
        (``created_at + window`` on or before D), as an SQO or not. Counting early SQOs as soon
        as they happen, while the other leads of the same weeks are still undecided, would
        inflate the rates by an amount that depends on recent lead volume.
        """
        return self.rates_of(
            set(targets.columns), lambda present: _group_key(targets, present), b, self_row
        )

    def rates_of(
        self,
        columns: set[str],
        keys: Callable[[tuple[str, ...]], pd.Series | list[str | None]],
        b: np.ndarray,
        self_row: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """:meth:`similar_lead_rates` of leads with ``columns``, whose group key over some
        of them ``keys(columns)`` gives (a series, or Python strings for a few leads)."""
        out: dict[str, np.ndarray] = {}
        if not self._rates_ready:
            return out
        assert self._pool is not None
        n = len(b)
        mine = self_row >= 0
        safe = np.maximum(self_row, 0)
        if len(self._pool):
            self_decided = mine & (self._dec_time[safe] < b)
            self_pos = mine & (self._pos_time[safe] < b)
        else:
            self_decided = np.zeros(n, dtype=bool)
            self_pos = np.zeros(n, dtype=bool)
        qb = seconds(b)
        all_dec = _count_sorted(self._dec_sorted, qb) - self_decided
        all_pos = _count_sorted(self._pos_sorted, qb) - self_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            prior = np.where(all_dec > 0, all_pos / all_dec, np.nan)
        for name, group in RATE_GROUPS.items():
            present = tuple(c for c in group if c in self._pool.columns and c in columns)
            if not present:
                continue
            groups = self._rate_groups.get(present)
            if groups is None:  # a list without one of the grouping columns: indexed on demand
                groups = self._rate_groups.setdefault(present, self._rate_index(present))
            q = groups.query(keys(present))
            n_dec = groups.count_before("dec", q, b)
            n_pos = groups.count_before("pos", q, b)
            if len(self._pool):
                same = mine & (groups.codes[safe] == q)
                n_dec = n_dec - (same & self_decided)
                n_pos = n_pos - (same & self_pos)
            out[name] = shrunk_rate(n_pos, n_dec, prior, RATE_PRIOR_STRENGTH)
        return out


def _own_key(lead_id: pd.Series, account: pd.Series) -> pd.Series:
    """A lead's deals at an account: one key per (lead, account), a missing account too."""
    acc = account.astype("string").fillna("\x00").reset_index(drop=True)
    return lead_id.astype("string").reset_index(drop=True) + "\x1f" + acc


def _own_key_values(lead_ids: list[str | None], account: list[str | None]) -> list[str | None]:
    """:func:`_own_key` of a few leads, as Python strings."""
    return [
        None if lead is None else lead + "\x1f" + ("\x00" if acc is None else acc)
        for lead, acc in zip(lead_ids, account, strict=True)
    ]


def _count_sorted(sorted_secs: np.ndarray, bound_secs: np.ndarray) -> np.ndarray:
    """As :func:`features._timeline.count_before_all`, on event seconds sorted once."""
    valid = sorted_secs[np.searchsorted(sorted_secs, 0, "left") :]
    out = np.searchsorted(valid, np.maximum(bound_secs, 0), "left").astype(np.int64)
    out[bound_secs < 0] = 0
    return out


# ----------------------------------------------------------------------------------------
# the batch core: each target lead at its own bound (the first instant after its as-of day)
# ----------------------------------------------------------------------------------------


def _features(
    history: LeadHistory, targets: pd.DataFrame, b: np.ndarray, *, current: bool
) -> pd.DataFrame:
    n = len(targets)
    # text columns stay Arrow-backed strings: no round trip through Python objects
    cols: dict[str, Any] = {"lead_id": targets["lead_id"].astype("string").array}
    no_time = np.isnat(b)
    if "employees" in targets.columns:
        cols["employees"] = targets["employees"].to_numpy(dtype=np.float64, na_value=np.nan)
    if "annual_revenue" in targets.columns:
        revenue = targets["annual_revenue"].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            cols["log_annual_revenue"] = np.log1p(np.where(revenue >= 0, revenue, np.nan))
    for name in CATEGORICAL:
        if name in targets.columns:
            cols[name] = targets[name].astype("string").array
    if "title" in targets.columns:
        cols.update(_title_flags(targets["title"]))
    self_row = history.self_rows(targets)
    cols.update(history.account_history(targets, b, self_row))
    cols.update(history.similar_lead_rates(targets, b, self_row))
    _add_extras(history, targets, cols)
    if current and "last_contacted_at" in targets.columns:
        cols["days_since_last_contacted"] = _days_since_contact(targets, b)
    no_account = (
        targets["account_id"].isna().to_numpy(dtype=bool)
        if "account_id" in targets.columns
        else np.ones(n, dtype=bool)
    )
    _mask_unknown(cols, no_account, no_time)
    out: dict[str, Any] = {}
    for name, values in cols.items():
        arr = values
        is_text = (
            name == "lead_id"
            or name in CATEGORICAL
            or isinstance(arr, pd.api.extensions.ExtensionArray)
            or np.asarray(arr).dtype.kind == "O"
        )
        out[name] = pd.array(arr, dtype="string") if is_text else np.asarray(arr, np.float64)
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def _add_extras(history: LeadHistory, targets: pd.DataFrame, cols: dict[str, Any]) -> None:
    """The ``dataset.yaml`` extra features of the targets, added to ``cols``."""
    for name in history.extra_features:
        if name in targets.columns and name not in _NOT_FEATURES and name not in cols:
            values = targets[name]
            if pd.api.types.is_bool_dtype(values):
                cols[name] = values.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
            elif pd.api.types.is_numeric_dtype(values):
                cols[name] = values.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                cols[name] = values.astype("string").to_numpy()


def _days_since_contact(targets: pd.DataFrame, b: np.ndarray) -> np.ndarray:
    """Whole days from each target's last contact to its as-of day; NaN when none is known
    then (a contact dated after the day cannot be known on it)."""
    contacted = targets["last_contacted_at"].to_numpy(dtype="datetime64[ns]")
    # :func:`features._timeline.days_between` on plain datetime64 arrays, without its
    # conversion of each side (a fixed cost that dominates one lead)
    later = (b - np.timedelta64(1, "D")).astype("datetime64[D]")
    earlier = contacted.astype("datetime64[D]")
    since = (later - earlier).astype("timedelta64[D]").astype(np.float64)
    since[np.isnat(later) | np.isnat(earlier)] = np.nan
    return np.where(contacted < b, since, np.nan)


def _mask_unknown(cols: dict[str, Any], no_account: np.ndarray, no_time: np.ndarray) -> None:
    """Account counts are NaN without an account or a time, similar-lead rates without a time."""
    for name in ACCOUNT_FEATURES:
        if name in cols:
            cols[name] = np.where(no_account | no_time, np.nan, cols[name])
    for name in RATE_FEATURES:
        if name in cols:
            cols[name] = np.where(no_time, np.nan, cols[name])


# ----------------------------------------------------------------------------------------
# a few leads (one request): the same table, cell by cell
# ----------------------------------------------------------------------------------------


#: at most this many leads are described cell by cell (:func:`_few_features`): for the lead or
#: two of an HTTP request, pandas' fixed cost per column operation is most of the work
FEW_LEADS = 16


#: the text type of the feature table (Arrow-backed strings, NA for missing)
_STRING = pd.StringDtype()


def _texts(values: pd.Series) -> list[str | None]:
    """A column as the Python strings ``astype("string")`` holds (None where missing)."""
    if isinstance(values.dtype, pd.StringDtype):
        # already text: no conversion, only NA (or NaN for the "str" dtype) to None
        return [v if isinstance(v, str) else None for v in values.tolist()]
    texts: list[str | None] = values.astype("string").to_numpy(dtype=object, na_value=None).tolist()
    return texts


def _few_features(history: LeadHistory, targets: pd.DataFrame, day: pd.Timestamp) -> pd.DataFrame:
    """:func:`build`'s table of a few leads as of the end of ``day``, from plain arrays.

    The same columns, values and dtypes as the batch core (a test compares them on varied
    leads): the same history look-ups (:meth:`LeadHistory.account_counts`,
    :meth:`LeadHistory.rates_of`), title flags from :func:`_title_flags` (remembered per
    title), the same extras, contact days and masks; only the column-wise pandas
    conversions, whose fixed cost dominates a handful of rows, are left out.
    """
    n = len(targets)
    columns = set(targets.columns)
    b = np.full(n, np.datetime64(day + DAY, "ns"), dtype="datetime64[ns]")
    ids = _texts(targets["lead_id"])
    texts: dict[str, list[str | None]] = {"lead_id": ids}
    cols: dict[str, Any] = {"lead_id": ids}
    if "employees" in columns:
        cols["employees"] = targets["employees"].to_numpy(dtype=np.float64, na_value=np.nan)
    if "annual_revenue" in columns:
        revenue = targets["annual_revenue"].to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            cols["log_annual_revenue"] = np.log1p(np.where(revenue >= 0, revenue, np.nan))
    for name in CATEGORICAL:
        if name in columns:
            column = targets[name]
            # already the table's text type: taken as it is, not made again from its texts
            cols[name] = column.array if column.dtype == _STRING else _texts(column)
    if "title" in columns:
        cols.update(_few_title_flags(_texts(targets["title"])))
    self_row = history.self_rows_of(ids)
    account = _texts(targets["account_id"]) if "account_id" in columns else None
    if account is not None:
        cols.update(history.account_counts(ids, account, b, self_row))

    def keys(present: tuple[str, ...]) -> list[str | None]:
        parts = [
            texts[c] if c in texts else texts.setdefault(c, _texts(targets[c])) for c in present
        ]
        rows = zip(*parts, strict=True)
        return ["|".join(_MISSING if v is None else v for v in row) for row in rows]

    cols.update(history.rates_of(columns, keys, b, self_row))
    _add_extras(history, targets, cols)
    if "last_contacted_at" in columns:
        cols["days_since_last_contacted"] = _days_since_contact(targets, b)
    no_account = (
        np.array([a is None for a in account], dtype=bool)
        if account is not None
        else np.ones(n, dtype=bool)
    )
    _mask_unknown(cols, no_account, np.isnat(b))
    out: dict[str, Any] = {}
    for name, values in cols.items():
        if name == "lead_id":
            continue
        if isinstance(values, list | pd.api.extensions.ExtensionArray) or values.dtype.kind == "O":
            out[name] = pd.array(values, dtype="string")
        else:
            out[name] = np.asarray(values, np.float64)
    index = pd.Index(pd.array(ids, dtype="string"), name="lead_id")
    return pd.DataFrame(out, index=index)


#: title → its flags, as :func:`_title_flags` gives them (a server sees the same titles again)
_TITLE_FLAGS_SEEN: dict[str, tuple[float, ...]] = {}
#: titles remembered at most (the memory is emptied when it is full)
TITLES_REMEMBERED = 20_000


def _few_title_flags(titles: list[str | None]) -> dict[str, np.ndarray]:
    """:func:`_title_flags` of a few titles (None: no title), each distinct title matched by
    it once and remembered."""
    seen = _TITLE_FLAGS_SEEN
    new = list(dict.fromkeys(t for t in titles if t is not None and t not in seen))
    if new:
        flags = _title_flags(pd.Series(new, dtype="string"))
        if len(seen) + len(new) > TITLES_REMEMBERED:
            seen.clear()
        for i, title in enumerate(new):
            seen[title] = tuple(float(flags[name][i]) for name in TITLE_FLAGS)
    missing = (math.nan,) * len(TITLE_FLAGS)
    rows = [missing if t is None else seen.get(t) or _title_row(t) for t in titles]
    return {
        name: np.array([row[j] for row in rows], dtype=np.float64)
        for j, name in enumerate(TITLE_FLAGS)
    }


def _title_row(title: str) -> tuple[float, ...]:
    """One title's flags, matched now (when another thread emptied the memory meanwhile)."""
    flags = _title_flags(pd.Series([title], dtype="string"))
    return tuple(float(flags[name][0]) for name in TITLE_FLAGS)


def _title_flags(titles: pd.Series) -> dict[str, np.ndarray]:
    """The title keyword flags (1/0; NaN without a title), each distinct title matched once:
    a list repeats the same few hundred titles over and over."""
    codes, uniques = pd.factorize(titles.astype("string").str.lower().reset_index(drop=True))
    distinct = pa.array(np.asarray(uniques, dtype=object), type=pa.large_string())
    has_title = codes >= 0
    out: dict[str, np.ndarray] = {}
    for name, pattern in TITLE_FLAGS.items():
        # Arrow's regex engine, as pandas' str.contains uses on Arrow strings, without its
        # per-call pattern analysis (which dominates scoring a single lead)
        hit = np.asarray(
            pc.match_substring_regex(distinct, pattern).to_numpy(zero_copy_only=False),
            dtype=np.float64,
        )
        flag = np.full(len(codes), np.nan)
        flag[has_title] = hit[codes[has_title]]
        out[name] = flag
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
