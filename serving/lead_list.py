"""List rules for a scored lead list: tiers, exclusions, per-account cap, top N, BDR allocation.

Pure functions over the scored frame (one row per lead, ``sqo_probability`` beside the lead's
own columns and its point-in-time account facts); no files, no model, no web framework. The
command line and the HTTP API both call :func:`apply_list_rules`.

Every rule says what it did: a lead it removes keeps its row, moved to the end of the list,
with ``excluded_reason``; a lead allocated to a BDR carries ``assigned_bdr``; the summary counts
the leads kept and excluded by reason and gives the expected SQOs per tier and per BDR. Every
input row appears exactly once in the output.

Time meaning: the rules judge each lead as of the scoring day ``as_of`` (the end of that day):
contacts dated after it are not known then and do not count against the re-contact window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.errors import InputError

TIERS = ("A", "B", "C", "D")
#: default percentile cut-offs: tier A is the best 10% of the workable list (the leads a BDR
#: sequences first), B the next 20%, C the next 30%, D the rest
DEFAULT_PERCENTILE_CUTS = (0.10, 0.30, 0.60)

# the excluded_reason of each rule (stable texts: the summary counts by them)
DO_NOT_CONTACT = "do not contact"
OPEN_OPPORTUNITY = "account has an open opportunity"
CUSTOMER = "account is a customer"


def recontact_reason(days: int) -> str:
    """The ``excluded_reason`` of a lead contacted within the re-contact window."""
    return f"contacted in the last {days} days"


def account_cap_reason(cap: int) -> str:
    """The ``excluded_reason`` of a lead beyond the per-account cap."""
    return f"over {cap} lead{'s' if cap != 1 else ''} per account (better leads kept)"


def top_reason(top: int) -> str:
    """The ``excluded_reason`` of a lead below ``--top N``."""
    return f"beyond the top {top}"


OVER_CAPACITY = "over the BDRs' capacity"


@dataclass(frozen=True)
class Tiering:
    """How leads are cut into tiers A–D.

    Attributes
    ----------
    by
        ``"percentile"``: ``cuts`` are the cumulative shares of the workable list in A, A+B and
        A+B+C (default 10%, 30%, 60%); ``"probability"``: ``cuts`` are the lowest SQO
        probabilities of A, B and C (e.g. 0.15, 0.08, 0.04).
    cuts
        Three numbers, as above.
    """

    by: Literal["percentile", "probability"] = "percentile"
    cuts: tuple[float, float, float] = DEFAULT_PERCENTILE_CUTS

    def check(self) -> None:
        """Refuse cut-offs that cannot make four tiers (:class:`InputError`)."""
        if self.by not in ("percentile", "probability"):
            raise InputError(f"tiers by {self.by!r}: choose percentile or probability.")
        cuts = tuple(float(c) for c in self.cuts)
        if len(cuts) != 3 or not all(math.isfinite(c) for c in cuts):
            raise InputError(
                f"tier cut-offs {list(self.cuts)}: give three numbers, the cut-offs of tiers A, B "
                "and C (tier D is the rest)."
            )
        if self.by == "percentile" and not (0 < cuts[0] < cuts[1] < cuts[2] <= 1):
            raise InputError(
                f"percentile tier cut-offs {list(cuts)}: give three increasing shares of the "
                "list between 0 and 1, e.g. 0.1,0.3,0.6 (A = best 10%, B to 30%, C to 60%)."
            )
        if self.by == "probability" and not (1 > cuts[0] > cuts[1] > cuts[2] > 0):
            raise InputError(
                f"probability tier cut-offs {list(cuts)}: give three decreasing SQO "
                "probabilities between 0 and 1, e.g. 0.15,0.08,0.04 (A = 15% or more)."
            )


@dataclass(frozen=True)
class ListRules:
    """The rules a lead list is cut by before it is sequenced (all optional but do-not-contact).

    Attributes
    ----------
    include_do_not_contact
        Keep ``do_not_contact`` leads (for analysis only; they are excluded by default).
    recontact_days
        Skip leads last contacted fewer than this many days before the scoring day.
    skip_open_accounts, skip_customers
        Skip leads of accounts with an open opportunity / a won one, as of the scoring day.
    max_per_account
        Keep at most this many leads per account, the most likely first.
    top
        Keep the best N leads of what is left.
    bdr_capacity
        Leads each BDR can take (``{sdr_id: capacity}``); the kept leads are allocated to them.
    capacity_each
        Instead of ``bdr_capacity``: every BDR who owns a lead of the list (``sdr_id`` of the
        leads the other rules keep) can take this many.
    tiers
        Tier cut-offs (:class:`Tiering`).
    """

    include_do_not_contact: bool = False
    recontact_days: int | None = None
    skip_open_accounts: bool = False
    skip_customers: bool = False
    max_per_account: int | None = None
    top: int | None = None
    bdr_capacity: Mapping[str, int] | None = None
    capacity_each: int | None = None
    tiers: Tiering = field(default_factory=Tiering)

    def check(self) -> None:
        """Refuse impossible settings with a message naming the option (:class:`InputError`)."""
        self.tiers.check()
        for name, value, least in (
            ("--recontact-days", self.recontact_days, 1),
            ("--max-per-account", self.max_per_account, 1),
            ("--top", self.top, 1),
            ("--bdr-capacity", self.capacity_each, 1),
        ):
            if value is not None and (not isinstance(value, int | np.integer) or value < least):
                raise InputError(f"{name} {value}: give a whole number of at least {least}.")
        if self.bdr_capacity is not None and self.capacity_each is not None:
            raise InputError("give the BDRs either as a file (--bdrs) or --bdr-capacity, not both.")
        if self.bdr_capacity is not None:
            if not self.bdr_capacity:
                raise InputError("BDR capacities: no BDR given to allocate the list to.")
            bad = {k: v for k, v in self.bdr_capacity.items() if int(v) < 0 or int(v) != v}
            if bad:
                raise InputError(
                    f"BDR capacities {bad}: a capacity is a whole number of leads, 0 or more."
                )

    def needs_accounts(self) -> bool:
        """Whether a rule needs the accounts' deals from the CRM export."""
        return self.skip_open_accounts or self.skip_customers

    def allocates(self) -> bool:
        """Whether the kept leads are allocated to BDRs (the list then has ``assigned_bdr``)."""
        return self.bdr_capacity is not None or self.capacity_each is not None


def read_bdr_capacities(path: str | Path) -> dict[str, int]:
    """``sdr_id,capacity`` rows of a CSV file as ``{sdr_id: capacity}``.

    Raises
    ------
    InputError
        The file is missing, lacks a column, repeats a BDR, or holds a capacity that is not a
        whole number ≥ 0 (the message names the file, the lines and what was expected).
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: no such file. Give the BDRs as a CSV with sdr_id,capacity.")
    try:
        raw = pd.read_csv(file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{file}: not a readable CSV ({exc}). Give the BDRs as a CSV with sdr_id,capacity."
        ) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in ("sdr_id", "capacity") if c not in raw.columns]
    if missing:
        raise InputError(
            f"{file}: no {' or '.join(missing)} column (found: {', '.join(raw.columns)}). "
            "Expected a header sdr_id,capacity and one BDR per line."
        )
    if raw.empty:
        raise InputError(f"{file}: no BDRs below the header sdr_id,capacity.")
    ids = raw["sdr_id"].str.strip()
    capacity = pd.to_numeric(raw["capacity"].str.strip(), errors="coerce")
    lines = np.arange(2, len(raw) + 2)  # line 1 is the header
    problems = []
    bad_id = (ids == "").to_numpy(dtype=bool)
    if bad_id.any():
        problems.append(f"empty sdr_id on line(s) {_lines(lines[bad_id])}")
    dup = ids.duplicated(keep=False).to_numpy(dtype=bool) & ~bad_id
    if dup.any():
        problems.append(f"sdr_id repeated on line(s) {_lines(lines[dup])}")
    cap = capacity.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad_cap = ~np.isfinite(cap) | (cap < 0) | (np.floor(cap) != cap)
    if bad_cap.any():
        problems.append(
            f"capacity is not a whole number of leads ≥ 0 on line(s) {_lines(lines[bad_cap])}"
        )
    if problems:
        raise InputError(
            f"{file}: {'; '.join(problems)}. Expected one BDR per line: sdr_id,capacity."
        )
    return {str(i): int(c) for i, c in zip(ids, cap, strict=True)}


def _lines(lines: np.ndarray, shown: int = 5) -> str:
    text = ", ".join(str(int(x)) for x in lines[:shown])
    return text + (f" … ({len(lines)} in all)" if len(lines) > shown else "")


# ----------------------------------------------------------------------------------------
# tiers
# ----------------------------------------------------------------------------------------


def tier_thresholds(p: np.ndarray, tiering: Tiering) -> tuple[float, float, float]:
    """The lowest SQO probability of tiers A, B and C.

    With percentile cut-offs they are read from ``p`` (the workable list): tier A holds the
    best ``cuts[0]`` share of it, rounded up to whole leads, and leads with the same probability
    share a tier. With probability cut-offs they are the cut-offs themselves.
    """
    if tiering.by == "probability":
        a, b, c = (float(x) for x in tiering.cuts)
        return a, b, c
    values = np.sort(np.asarray(p, dtype="float64"))[::-1]
    if values.size == 0:
        return math.inf, math.inf, math.inf
    out = []
    for share in tiering.cuts:
        k = max(1, math.ceil(float(share) * values.size - 1e-9))
        out.append(float(values[min(k, values.size) - 1]))
    return out[0], out[1], out[2]


def assign_tiers(p: np.ndarray, thresholds: tuple[float, float, float]) -> np.ndarray:
    """Tier letter of each probability against the A/B/C thresholds (D below C)."""
    p = np.asarray(p, dtype="float64")
    a, b, c = thresholds
    return np.select([p >= a, p >= b, p >= c], ["A", "B", "C"], default="D").astype(object)


# ----------------------------------------------------------------------------------------
# allocation
# ----------------------------------------------------------------------------------------


def allocate(p: np.ndarray, owner: np.ndarray, capacity: Mapping[str, int]) -> np.ndarray:
    """Allocate leads to BDRs: expected SQOs balanced, current owners kept where balance allows.

    Parameters
    ----------
    p
        SQO probability of each lead to allocate (their sum per BDR is its expected SQOs).
    owner
        Each lead's current ``sdr_id`` (``None`` when it has none).
    capacity
        ``{bdr: leads it can take}``; the total must hold every lead given.

    Returns
    -------
    ndarray
        The BDR of each lead.

    Notes
    -----
    Leads are dealt in rounds, best first: each round gives one lead to every BDR with room
    left, the lightest-loaded BDR taking the best lead of the round and the heaviest the worst.
    When every BDR has the same capacity this keeps the gap between the most and the least
    expected SQOs at or below the best lead's probability ("within one lead's worth") after
    every round. Swaps between two BDRs then narrow the gaps the rounds leave (with unequal
    capacities, a BDR with little room ends with the best leads it can hold; the others are
    balanced among themselves). Then a lead dealt away from its current owner is swapped with
    a lead of similar probability that the owner was dealt, when the swap keeps that gap within
    the larger of the gap before and the average lead's probability. Swaps keep every count.
    """
    p = np.asarray(p, dtype="float64")
    n = p.size
    names = list(capacity)
    cap = np.array([int(capacity[b]) for b in names], dtype=np.int64)
    if n > int(cap.sum()):
        raise ValueError(f"{n} leads for a capacity of {int(cap.sum())}")
    order = np.argsort(-p, kind="stable")
    slot = np.full(n, -1, dtype=np.int64)
    load = np.zeros(len(names))
    room = cap.copy()
    pos = 0
    while pos < n:
        active = np.flatnonzero(room > 0)
        r = min(active.size, n - pos)
        # lightest BDR first (ties: the one listed first)
        lightest = active[np.lexsort((active, load[active]))][:r]
        items = order[pos : pos + r]
        slot[items] = lightest
        load[lightest] += p[items]
        room[lightest] -= 1
        pos += r
    if n == 0:
        return np.array([], dtype=object)
    load = _even_out(p, slot, load)
    own = _positions(owner, names)
    tolerance = max(float(np.ptp(load)), float(p.mean()))
    for i in order:
        home = own[i]
        here = slot[i]
        if home < 0 or home == here:
            continue
        # leads the owner holds that are not its own: candidates to trade places with lead i
        cand = np.flatnonzero((slot == home) & (own != home))
        if cand.size == 0:
            continue
        # prefer a lead whose own owner is the BDR lead i leaves, then the closest probability
        gap = np.abs(p[cand] - p[i]) - np.where(own[cand] == here, 1.0, 0.0)
        j = int(cand[np.argmin(gap)])
        delta = p[i] - p[j]
        trial = load.copy()
        trial[home] += delta
        trial[here] -= delta
        if float(np.ptp(trial)) <= tolerance + 1e-12:
            slot[i], slot[j] = home, here
            load = trial
    return np.array(names, dtype=object)[slot]


#: swaps tried at most when evening out unequal capacities
MAX_BALANCING_SWAPS = 2000


def _even_out(p: np.ndarray, slot: np.ndarray, load: np.ndarray) -> np.ndarray:
    """Swap leads between two BDRs while that narrows the gap between them.

    The rounds keep the gap within one lead's worth when capacities are equal; with unequal
    ones a BDR with little room ends light. Swapping one of a heavier BDR's leads for a weaker
    one of a lighter BDR keeps every count and leaves both loads between the two old ones, so
    the spread never grows and the sum of squared loads falls with every swap (it ends). The
    partner sought is the one that halves the gap; the widest gaps are tried first. Changes
    ``slot`` in place; returns the new loads.
    """
    load = load.copy()
    bins = load.size
    for _ in range(MAX_BALANCING_SWAPS):
        order = np.argsort(-load, kind="stable")
        pairs = sorted(
            ((int(h), int(lt)) for a, h in enumerate(order) for lt in order[a + 1 :]),
            key=lambda hl: load[hl[1]] - load[hl[0]],
        )
        for heavy, light in pairs[: bins * bins]:
            if _swap_once(p, slot, load, heavy, light):
                break
        else:
            break
    return load


def _swap_once(p: np.ndarray, slot: np.ndarray, load: np.ndarray, heavy: int, light: int) -> bool:
    """The best gap-narrowing swap between two BDRs, applied; False when there is none."""
    gap = load[heavy] - load[light]
    if gap <= 1e-12:
        return False
    hi = np.flatnonzero(slot == heavy)
    lo = np.flatnonzero(slot == light)
    if hi.size == 0 or lo.size == 0:
        return False
    lo_sorted = lo[np.argsort(p[lo], kind="stable")]
    target = p[hi] - gap / 2  # the partner that would halve the gap
    k = np.clip(np.searchsorted(p[lo_sorted], target), 0, lo_sorted.size - 1)
    k_prev = np.clip(k - 1, 0, lo_sorted.size - 1)
    cand = np.where(
        np.abs(p[lo_sorted[k]] - target) <= np.abs(p[lo_sorted[k_prev]] - target),
        lo_sorted[k],
        lo_sorted[k_prev],
    )
    d = p[hi] - p[cand]  # what the swap moves from heavy to light
    new_gap = np.abs(gap - 2 * d)
    best = int(np.argmin(new_gap))
    if d[best] <= 1e-12 or new_gap[best] >= gap - 1e-9:
        return False
    i, j = int(hi[best]), int(cand[best])
    slot[i], slot[j] = light, heavy
    load[heavy] -= d[best]
    load[light] += d[best]
    return True


def _positions(owner: np.ndarray, names: list[str]) -> np.ndarray:
    """Position of each owner among ``names`` (-1: no owner, or not one of them)."""
    ids = pd.Series(owner, dtype="string").fillna("\x00none")
    return pd.Index(names, dtype="string").get_indexer(ids.to_numpy())


# ----------------------------------------------------------------------------------------
# the rules
# ----------------------------------------------------------------------------------------


def apply_list_rules(
    scored: pd.DataFrame, *, rules: ListRules, as_of: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Tier, filter, cap and allocate a scored lead list; say what each rule did.

    Parameters
    ----------
    scored
        One row per lead: ``lead_id``, ``sqo_probability``, and the columns the chosen rules read
        — ``do_not_contact``; ``last_contacted_at`` (the last contact known at ``as_of``);
        ``account_id``; ``account_open_opportunities`` / ``account_won_opportunities`` (deals
        at the account open / won as of ``as_of``); ``sdr_id`` (the current owner). Other
        columns are carried through.
    rules
        The list rules (:class:`ListRules`).
    as_of
        The scoring day (end of day).

    Returns
    -------
    (frame, summary)
        The frame: kept leads best first with ``rank`` 1…K, then the excluded ones (best first,
        no rank) with ``excluded_reason``; ``tier`` for every row (excluded rows too, against
        the same cut-offs), ``assigned_bdr`` when allocating. The summary: counts kept and
        excluded by reason, the rules applied, expected SQOs in all, per tier and per BDR.

    Raises
    ------
    InputError
        A rule needs a column the list does not have (e.g. accounts' deals without an export).
    """
    rules.check()
    day = pd.Timestamp(as_of).normalize()
    n = len(scored)
    frame = scored.reset_index(drop=True)
    d = _decide(n, frame, rules, day)
    out = frame.assign(
        tier=pd.array(d.tier, dtype="string"),
        excluded_reason=pd.array(d.reason, dtype="string"),
        assigned_bdr=pd.array(d.assigned, dtype="string"),
        _kept=d.kept,
        _p=np.nan_to_num(d.p, nan=-1.0),
    )
    out = out.sort_values(["_kept", "_p"], ascending=[False, False], kind="stable")
    n_kept = int(d.kept.sum())
    ranks = np.full(n, np.nan)
    ranks[:n_kept] = np.arange(1, n_kept + 1)
    out["rank"] = pd.array(ranks, dtype="Float64").astype("Int64")
    out = out.drop(columns=["_kept", "_p"]).reset_index(drop=True)
    if d.capacity is None:
        out = out.drop(columns="assigned_bdr")
    return out, d.summary(rules, day)


#: lists of at most this many leads (one request's) take :func:`apply_few_rules`
FEW_ROWS = 16


def apply_few_rules(
    columns: Mapping[str, Any], *, rules: ListRules, as_of: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`apply_list_rules` of a few leads given as plain arrays, without a frame.

    ``columns``: name → one value per lead (numpy arrays or lists; text as Python strings
    with None where missing), as :func:`apply_list_rules` reads them. Returns the columns of
    its frame in its order (the given ones, then ``tier``, ``excluded_reason``,
    ``assigned_bdr`` when allocating and ``rank``), each as an array in the ranked order
    (text columns of the rules as string arrays, ``rank`` as Int64), and the same summary.
    Time meaning as :func:`apply_list_rules`'.
    """
    rules.check()
    day = pd.Timestamp(as_of).normalize()
    n = len(columns["lead_id"])
    d = _decide(n, columns, rules, day)
    # kept leads first, each part best first, ties in list order (the frame's stable sort)
    order = np.lexsort((-np.nan_to_num(d.p, nan=-1.0), ~d.kept))
    out: dict[str, Any] = {}
    for name, values in columns.items():
        if isinstance(values, list):
            out[name] = [values[i] for i in order]
        else:
            out[name] = values[order]
    out["tier"] = pd.array(d.tier[order], dtype="string")
    out["excluded_reason"] = pd.array(d.reason[order], dtype="string")
    if d.capacity is not None:
        out["assigned_bdr"] = pd.array(d.assigned[order], dtype="string")
    n_kept = int(d.kept.sum())
    out["rank"] = pd.array([*range(1, n_kept + 1), *([None] * (n - n_kept))], dtype="Int64")
    return out, d.summary(rules, day)


@dataclass
class _Decisions:
    """What the rules decided for each lead (in list order), and what they did."""

    p: np.ndarray
    reason: np.ndarray
    kept: np.ndarray
    tier: np.ndarray
    thresholds: tuple[float, float, float]
    applied: list[str]
    allocation: dict[str, Any] | None
    assigned: np.ndarray
    capacity: dict[str, int] | None

    def summary(self, rules: ListRules, day: pd.Timestamp) -> dict[str, Any]:
        return _summary(
            self.p,
            self.kept,
            self.reason,
            self.tier,
            self.thresholds,
            rules,
            self.applied,
            day,
            self.allocation,
            self.assigned,
            self.capacity,
        )


def _floats(values: Any) -> np.ndarray:
    """A column as float64 (NaN where missing or not a number)."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )


def _flags(values: Any) -> np.ndarray:
    """A yes/no column as bool (missing: no)."""
    if isinstance(values, np.ndarray) and values.dtype == bool:
        return values
    return pd.Series(values).astype("boolean").to_numpy(dtype=bool, na_value=False)


def _text_values(values: Any) -> np.ndarray:
    """A text column as an object array of Python strings (None where missing)."""
    if isinstance(values, list):
        return np.array(values, dtype=object)
    return pd.Series(values).astype("string").to_numpy(dtype=object, na_value=None)


def _decide(n: int, frame: Mapping[str, Any], rules: ListRules, day: pd.Timestamp) -> _Decisions:
    """The rules run on the columns of ``frame`` (a frame, or plain arrays for a few leads)."""
    p = _floats(frame["sqo_probability"])
    reason = np.full(n, None, dtype=object)
    is_open = np.ones(n, dtype=bool)  # no rule has excluded the row yet
    applied: list[str] = []

    def exclude(mask: np.ndarray, text: str) -> None:
        hit = mask & is_open
        reason[hit] = text
        is_open[hit] = False

    # 1. do not contact
    dnc = _flags(frame["do_not_contact"]) if "do_not_contact" in frame else np.zeros(n, dtype=bool)
    if rules.include_do_not_contact:
        applied.append(
            f"do-not-contact leads INCLUDED for analysis ({int(dnc.sum())} in the list): "
            "never sequence them"
        )
    else:
        exclude(dnc, DO_NOT_CONTACT)
        applied.append("do-not-contact leads excluded")
    # 2. re-contact window
    if rules.recontact_days is not None:
        if "last_contacted_at" in frame:
            last = pd.to_datetime(pd.Series(frame["last_contacted_at"])).dt.normalize()
            days = (day - last).dt.days.to_numpy(dtype="float64", na_value=np.nan)
        else:
            days = np.full(n, np.nan)
        # a contact after the scoring day is not known on it
        recent = (days >= 0) & (days < rules.recontact_days)
        exclude(recent, recontact_reason(rules.recontact_days))
        applied.append(
            f"leads contacted in the {rules.recontact_days} days up to {day.date()} skipped"
        )
    # 3. accounts with deals
    for wanted, column, text, what in (
        (rules.skip_open_accounts, "account_open_opportunities", OPEN_OPPORTUNITY, "open"),
        (rules.skip_customers, "account_won_opportunities", CUSTOMER, "won"),
    ):
        if not wanted:
            continue
        if column not in frame:
            raise InputError(
                f"skipping accounts with {'an open' if what == 'open' else 'a won'} opportunity "
                "needs the accounts' deals: give the CRM export with --data (its "
                "opportunities with account_id), and account_id in the lead list."
            )
        count = _floats(frame[column])
        exclude(count > 0, text)
        applied.append(
            f"leads of accounts with {'an open' if what == 'open' else 'a won'} "
            f"opportunity on {day.date()} skipped"
        )
    # 4. per-account cap, best first
    if rules.max_per_account is not None:
        if "account_id" not in frame:
            raise InputError("--max-per-account needs an account_id column in the lead list.")
        account = _text_values(frame["account_id"])
        live = is_open & pd.notna(account)
        idx = np.flatnonzero(live)
        ordered = idx[np.argsort(-p[idx], kind="stable")]
        nth = _nth_of_account(account[ordered])
        over = np.zeros(n, dtype=bool)
        over[ordered[nth >= rules.max_per_account]] = True
        exclude(over, account_cap_reason(rules.max_per_account))
        applied.append(f"at most {rules.max_per_account} lead(s) per account, the best kept")
    # tiers: cut on the workable list (what the rules so far leave), applied to every row
    workable = is_open.copy()
    base = p[workable & ~np.isnan(p)] if workable.any() else p[~np.isnan(p)]
    thresholds = tier_thresholds(base, rules.tiers)
    tier = assign_tiers(p, thresholds)
    # 5. top N
    if rules.top is not None:
        idx = np.flatnonzero(is_open)
        ordered = idx[np.argsort(-p[idx], kind="stable")]
        beyond = np.zeros(n, dtype=bool)
        beyond[ordered[rules.top :]] = True
        exclude(beyond, top_reason(rules.top))
        applied.append(f"the best {rules.top} kept")
    # 6. allocation to BDRs
    assigned = np.full(n, None, dtype=object)
    allocation: dict[str, Any] | None = None
    capacity: dict[str, int] | None = None
    owner = _text_values(frame["sdr_id"]) if "sdr_id" in frame else np.full(n, None, dtype=object)
    if rules.bdr_capacity is not None:
        capacity = {str(k): int(v) for k, v in rules.bdr_capacity.items()}
    elif rules.capacity_each is not None:
        in_list = pd.unique(pd.Series(owner[is_open], dtype="string").dropna())
        if len(in_list) == 0:
            raise InputError(
                "--bdr-capacity allocates the list to the BDRs in it, but no lead left by the "
                "other rules has an sdr_id. Give the BDRs with --bdrs FILE (sdr_id,capacity)."
            )
        capacity = {str(b): int(rules.capacity_each) for b in sorted(in_list)}
    if capacity is not None:
        total = sum(capacity.values())
        idx = np.flatnonzero(is_open)
        ordered = idx[np.argsort(-p[idx], kind="stable")]
        over = np.zeros(n, dtype=bool)
        over[ordered[total:]] = True
        exclude(over, OVER_CAPACITY)
        chosen = ordered[:total]
        assigned[chosen] = allocate(p[chosen], owner[chosen], capacity)
        allocation = _allocation_summary(p[chosen], owner[chosen], assigned[chosen], capacity)
        applied.append(
            f"allocated to {len(capacity)} BDR(s) with {total} lead(s) of capacity, expected "
            "SQOs balanced, current owners kept where balance allows"
        )

    return _Decisions(
        p, reason, is_open.copy(), tier, thresholds, applied, allocation, assigned, capacity
    )


def _nth_of_account(account: np.ndarray) -> np.ndarray:
    """For each lead (best first, all with an account), how many of its account came before."""
    if len(account) <= FEW_ROWS:
        seen: dict[Any, int] = {}
        nth = np.zeros(len(account), dtype=np.int64)
        for i, key in enumerate(account.tolist()):
            nth[i] = seen.get(key, 0)
            seen[key] = nth[i] + 1
        return nth
    return pd.Series(account).groupby(account).cumcount().to_numpy()


def _allocation_summary(
    p: np.ndarray, owner: np.ndarray, assigned: np.ndarray, capacity: Mapping[str, int]
) -> dict[str, Any]:
    loads = {b: float(p[assigned == b].sum()) for b in capacity}
    spread = (max(loads.values()) - min(loads.values())) if loads else 0.0
    best = float(p.max()) if p.size else 0.0
    names = list(capacity)
    home = _positions(owner, names)
    has_owner = home >= 0
    kept = has_owner & (home == _positions(assigned, names))
    return {
        "leads": int(p.size),
        "spread_expected_sqos": spread,
        "one_lead_worth": best,
        "balanced_within_one_lead": bool(spread <= best + 1e-9),
        "leads_with_an_owner_among_the_bdrs": int(has_owner.sum()),
        "kept_with_their_owner": int(kept.sum()),
    }


def _summary(
    p: np.ndarray,
    kept: np.ndarray,
    reason: np.ndarray,
    tier: np.ndarray,
    thresholds: tuple[float, float, float],
    rules: ListRules,
    applied: list[str],
    day: pd.Timestamp,
    allocation: dict[str, Any] | None,
    assigned: np.ndarray,
    capacity: Mapping[str, int] | None,
) -> dict[str, Any]:
    pk = np.nan_to_num(p, nan=0.0)
    dropped = reason[~kept]
    if len(set(dropped.tolist())) <= 1:
        # none or one reason (a request of a lead or two): nothing to order by count
        excluded = {str(dropped[0]): len(dropped)} if len(dropped) else {}
    else:
        counts = pd.Series(dropped, dtype="string").value_counts(sort=True)
        excluded = {str(k): int(v) for k, v in counts.items()}
    by_tier = []
    for t in TIERS:
        m = kept & (tier == t)
        by_tier.append(
            {
                "tier": t,
                "leads": int(m.sum()),
                "expected_sqos": float(pk[m].sum()),
                "mean_sqo_probability": float(pk[m].mean()) if m.any() else None,
                "min_sqo_probability": (
                    None
                    if not math.isfinite(thresholds[TIERS.index(t)])
                    else thresholds[TIERS.index(t)]
                )
                if t != "D"
                else 0.0,
            }
        )
    summary: dict[str, Any] = {
        "as_of": str(day.date()),
        "leads": int(len(p)),
        "kept": int(kept.sum()),
        "excluded": int((~kept).sum()),
        "excluded_by_reason": excluded,
        "rules": applied,
        "tiers": {"by": rules.tiers.by, "cuts": [float(c) for c in rules.tiers.cuts]},
        "expected_sqos": float(pk[kept].sum()),
        "by_tier": by_tier,
    }
    if allocation is not None and capacity is not None:
        rows = []
        for b, c in capacity.items():
            m = assigned == str(b)
            rows.append(
                {
                    "bdr": str(b),
                    "capacity": int(c),
                    "leads": int(m.sum()),
                    "expected_sqos": float(pk[m].sum()),
                }
            )
        summary["by_bdr"] = rows
        summary["allocation"] = allocation
    return summary
