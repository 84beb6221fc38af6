"""The bookings forecast of a period: distribution, quota odds, new business and roll-ups.

Numbers only (no I/O). Time meaning: everything describes one forecast made at the END of day
``as_of`` for one period ``[start, end]`` (whole days, both inclusive):

* the deals **open** at as_of each close inside the period with their ``p_win_in_period``,
  independently of one another; a deal's bookings are its amount in force at as_of;
* **won to date** are the deals already won inside the period on or before as_of: certain;
* **new business** are deals not yet created at as_of that will be created and won inside the
  period. Their rate is read from comparable past periods (the same period shifted back by whole
  periods, each cut at the same position as as_of), using deals created and won then — every one
  of them known at as_of (the past window ended on or before as_of);
* **model uncertainty**: the probabilities are a model's, and a model's error is shared by every
  deal of a period (a quarter whose deals all close a little later than the model thinks). The
  open deals' bookings are multiplied by one mean-one factor per simulated period (gamma, relative
  standard deviation ``σ``), the same for every deal and roll-up group, so expected values are
  unchanged and only the range widens. ``σ`` is read from comparable past periods at the same
  position (:func:`estimate_model_uncertainty`): how far the model's in-period bookings strayed
  from what those deals actually booked, beyond deal-by-deal chance — all known at as_of.

The distribution of the open deals' bookings ``Σ amount_i · B_i`` (``B_i`` ~ Bernoulli(p_i)) is
exact (a convolution over the distinct sums) while the number of distinct sums stays small —
which is the case that matters, a quarter decided by a handful of big deals — and a Monte Carlo
simulation with a fixed seed otherwise. Monte Carlo draws are added chunk by chunk until the
standard error of each of P10, P50 and P90 is at most a quarter of :data:`TOLERANCE` of the
expected total, so that two runs with different seeds agree within ``TOLERANCE`` (0.5%) of the
forecast (two standard errors on each side).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features import opportunity as opportunity_features
from features.io import Export
from features.periods import Period

log = logging.getLogger(__name__)

#: a deal at or above this p_win_in_period is "commit", at or above the next "best case"
COMMIT_THRESHOLD = 0.7
BEST_CASE_THRESHOLD = 0.4
#: probability categories, highest first
CATEGORIES = ("commit", "best_case", "pipeline")
#: the forecast percentiles, as probabilities
PERCENTILES = {"p10": 0.10, "p50": 0.50, "p90": 0.90}
#: an exact distribution may have at most this many distinct values
MAX_EXACT_SUPPORT = 1 << 16
#: and the enumeration may touch at most this many sums in all (deal after deal), over at most
#: this many uncertain deals
EXACT_WORK = 300_000
EXACT_MAX_DEALS = 2_000
#: two Monte Carlo runs agree on P10/P50/P90 within this share of the expected total
TOLERANCE = 0.005
MIN_DRAWS = 2_000
MAX_DRAWS = 1_000_000
#: at most this many simulated group sums are kept (float32: 200 MB)
KEPT_NUMBERS = 50_000_000
#: random numbers per Monte Carlo chunk (bounds memory: about 40 bytes each). Small enough
#: that the chunk's arrays are reused from the heap: larger ones are mapped afresh by the
#: allocator on every call and paid for again page by page
CHUNK_NUMBERS = 500_000
#: a deal's simulated periods are searched for events in one pass when this many standard
#: deviations above the expected count are drawn at once (rarely, a second pass finishes it)
EVENT_MARGIN_SD = 6.0
#: a deal whose rarer outcome has at least this probability is simulated period by period
#: (one uniform each): from there on, the uniforms cost less than the events they replace
DENSE_SHARE = 0.4
#: uniforms per chunk of those (4 bytes each)
DENSE_CHUNK_NUMBERS = 4_000_000
#: roll-ups are for columns with at most this many values (owner, segment, region, …)
MAX_GROUPS = 200
#: comparable past periods read for the new-business rate
NEW_BUSINESS_WINDOWS = 4
#: a segment needs this many new-and-won deals over the windows for a rate of its own
MIN_SEGMENT_NEW_DEALS = 8
#: comparable past periods read for the model uncertainty, and the fewest that give an estimate
MODEL_UNCERTAINTY_WINDOWS = 6
MIN_MODEL_UNCERTAINTY_WINDOWS = 2
#: the group that new business goes to when its group is unknown
NEW_BUSINESS_GROUP = "(new business)"
#: the group of deals whose grouping column is empty
UNASSIGNED_GROUP = "(unassigned)"


# ----------------------------------------------------------------------------------------
# distributions
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    """A discrete distribution of bookings: sorted ``values`` with probabilities ``weights``.

    ``method`` is ``"exact"`` (every outcome enumerated) or ``"monte_carlo"`` (``draws``
    equally likely simulated outcomes).
    """

    values: np.ndarray
    weights: np.ndarray
    method: str = "exact"
    draws: int = 0

    @classmethod
    def constant(cls, value: float) -> Distribution:
        """A certain amount."""
        return cls(np.array([float(value)]), np.array([1.0]))

    @classmethod
    def from_draws(cls, draws: np.ndarray, *, draws_made: int | None = None) -> Distribution:
        """The empirical distribution of simulated outcomes (to the whole currency unit).

        Simulated sums carry float32 rounding (well under one unit) and Monte Carlo error far
        above it: cents would be false precision. ``draws_made``: the independent simulations
        behind the outcomes when there are fewer than outcomes (each simulated period crossed
        with a grid of shared factors); default, one per outcome.
        """
        d = np.sort(np.round(np.asarray(draws, dtype="float64")))
        made = int(d.size) if draws_made is None else int(draws_made)
        return cls(d, np.full(d.size, 1.0 / d.size), method="monte_carlo", draws=made)

    def mean(self) -> float:
        return float(np.dot(self.values, self.weights))

    def var(self) -> float:
        m = self.mean()
        return float(np.dot((self.values - m) ** 2, self.weights))

    def cdf(self, x: float) -> float:
        """P(bookings ≤ x)."""
        return float(self.weights[self.values <= x + _eps(x)].sum())

    def quantile(self, q: float) -> float:
        """The smallest value v with P(bookings ≤ v) ≥ q (the inverse CDF)."""
        cum = np.cumsum(self.weights)
        i = int(np.searchsorted(cum, q - 1e-12, side="left"))
        return float(self.values[min(i, self.values.size - 1)])

    def prob_at_least(self, x: float) -> float:
        """P(bookings ≥ x)."""
        return float(min(1.0, self.weights[self.values >= x - _eps(x)].sum()))

    def percentiles(self) -> dict[str, float]:
        """``{"p10": …, "p50": …, "p90": …}``."""
        return {name: self.quantile(q) for name, q in PERCENTILES.items()}

    def shifted(self, amount: float) -> Distribution:
        """The same distribution plus a certain amount."""
        return Distribution(self.values + float(amount), self.weights, self.method, self.draws)


def _eps(x: float) -> float:
    # sums of amounts are compared to the cent: float rounding must not split an atom
    return 1e-9 * max(1.0, abs(float(x)))


def exact_distribution(
    amounts: Any, probs: Any, *, max_support: int = MAX_EXACT_SUPPORT
) -> Distribution | None:
    """The exact distribution of ``Σ amounts_i · B_i`` with independent ``B_i ~ Bernoulli(p_i)``.

    A convolution over the distinct sums, deal by deal (sums are rounded to the cent so that
    equal sums reached in different orders merge). ``None`` when more than ``max_support``
    distinct sums would be needed — then use :func:`monte_carlo_draws`.
    """
    a, p = _clean(amounts, probs)
    certain = float(a[p >= 1.0].sum())
    keep = (p > 0.0) & (p < 1.0) & (a != 0.0)
    a, p = a[keep], p[keep]
    if a.size > EXACT_MAX_DEALS:
        return None  # the distinct sums (or the work) outgrow the limits long before the end
    values = np.array([0.0])
    weights = np.array([1.0])
    work = 0
    order = np.argsort(-a, kind="stable")
    for ai, pi in zip(a[order], p[order], strict=True):
        both = np.round(np.concatenate([values, values + ai]), 2)
        w = np.concatenate([weights * (1.0 - pi), weights * pi])
        values, inverse = np.unique(both, return_inverse=True)
        work += values.size
        # too many distinct sums, or many deals whose sums keep colliding (equal amounts): the
        # enumeration would take longer than a simulation
        if values.size > max_support or work > EXACT_WORK:
            return None
        weights = np.bincount(inverse, weights=w, minlength=values.size)
    return Distribution(values + certain, weights / weights.sum())


def _clean(amounts: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.nan_to_num(np.asarray(amounts, dtype="float64"), nan=0.0)
    p = np.asarray(probs, dtype="float64")
    if a.shape != p.shape:
        raise ValueError(f"{a.size} amounts but {p.size} probabilities")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    return a, p


def monte_carlo_draws(
    amounts: Any,
    probs: Any,
    *,
    draws: int,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
    n_groups: int = 1,
) -> np.ndarray:
    """``draws`` simulated bookings of independent deals, summed per group.

    Each deal is won in each simulated period independently with its probability, as a
    Bernoulli draw per (deal, period) would have it, but only the periods where something
    happens are drawn: the gap from one win to the next is geometric. A deal more likely won
    than not is simulated by its losses instead (its amount in every period, less the periods
    it loses). The work follows ``draws × Σ min(p, 1 − p)``, not ``draws × deals``: a pipeline
    of thousands of deals, most of them unlikely to close in the period, costs a few million
    random numbers instead of a hundred million. Deals near even odds (the rarer outcome at
    least :data:`DENSE_SHARE` likely) are drawn period by period, one uniform each, which is
    cheaper for them.

    Parameters
    ----------
    amounts, probs
        Amount and win probability of each deal.
    draws
        Number of simulated periods.
    rng
        The random generator (seeded by the caller, so results repeat).
    groups, n_groups
        Group code (0 … n_groups-1) of each deal; all deals in one group by default.

    Returns
    -------
    ndarray
        Shape (draws, n_groups): the bookings of each group in each simulated period.
    """
    a, p = _clean(amounts, probs)
    g = np.zeros(a.size, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    out = np.zeros(draws * n_groups, dtype="float64")
    certain = np.bincount(g[p >= 1.0], weights=a[p >= 1.0], minlength=n_groups)
    live = (p > 0.0) & (p < 1.0) & (a != 0.0)
    a, p, g = a[live], p[live], g[live]
    if not a.size or draws <= 0:
        return out.reshape(draws, n_groups) + certain
    dense = np.minimum(p, 1.0 - p) >= DENSE_SHARE
    if dense.any():
        _bernoulli_by_period(out, a[dense], p[dense], g[dense], draws, n_groups, rng)
        a, p, g = a[~dense], p[~dense], g[~dense]
    # the rarer of win and loss is the event simulated
    flip = p > 0.5
    q = np.where(flip, 1.0 - p, p)
    signed = np.where(flip, -a, a)
    always = np.bincount(g[flip], weights=a[flip], minlength=n_groups)
    # a geometric gap (periods up to and including the next event) is floor(E / λ) + 1 with
    # E ~ Exp(1) and λ = −log(1 − q): exact, and one cheap exponential per event
    scale = -1.0 / np.log1p(-q)
    last = np.full(a.size, -1.0)  # each deal's last simulated period with an event so far
    pending = np.arange(a.size)
    while pending.size:
        mean = (draws - 1 - last[pending]) * q[pending]
        count = np.ceil(mean + EVENT_MARGIN_SD * np.sqrt(mean) + 8.0).astype(np.int64)
        bounds = np.cumsum(count)
        unfinished: list[np.ndarray] = []
        lo = 0
        while lo < pending.size:
            # the next deals whose gaps fit in one chunk (at least one deal)
            before = int(bounds[lo] - count[lo])
            hi = max(lo + 1, int(np.searchsorted(bounds, before + CHUNK_NUMBERS, side="right")))
            idx, k = pending[lo:hi], count[lo:hi]
            steps = rng.standard_exponential(int(k.sum()))
            steps *= np.repeat(scale[idx], k)
            np.floor(steps, out=steps)
            steps += 1.0
            # a gap past the last period changes nothing: capped, every running sum below stays
            # a whole number float64 holds exactly
            np.minimum(steps, float(draws) + 1.0, out=steps)
            at = np.cumsum(steps)
            ends = np.cumsum(k)
            # each deal's own running sum, started from its last event so far
            at -= np.repeat(np.concatenate([[0.0], at[ends[:-1] - 1]]) - last[idx], k)
            last[idx] = at[ends - 1]
            owner = np.repeat(np.arange(idx.size), k)
            hit = at < draws
            deal = idx[owner[hit]]
            np.add.at(out, at[hit].astype(np.int64) * n_groups + g[deal], signed[deal])
            unfinished.append(idx[last[idx] < draws])
            lo = hi
        pending = np.concatenate(unfinished)
    return out.reshape(draws, n_groups) + (always + certain)


def _bernoulli_by_period(
    out: np.ndarray,
    a: np.ndarray,
    p: np.ndarray,
    g: np.ndarray,
    draws: int,
    n_groups: int,
    rng: np.random.Generator,
) -> None:
    """Add to ``out`` (draws × n_groups, flat) the wins of deals drawn one uniform per period."""
    # amounts by group as a matrix: one matrix product sums each period's wins per group.
    # float32 keeps the product fast; its rounding (~1e-7 of a sum) is far below the Monte
    # Carlo error
    by_group = np.zeros((a.size, n_groups), dtype="float32")
    by_group[np.arange(a.size), g] = a
    p32 = p.astype("float32")
    rows = min(draws, max(16, DENSE_CHUNK_NUMBERS // a.size))
    # one buffer for every chunk; the uniforms are turned into 0/1 wins in place
    buffer = np.empty((rows, a.size), dtype=np.float32)
    sums = out.reshape(draws, n_groups)
    for start in range(0, draws, rows):
        stop = min(draws, start + rows)
        wins = buffer[: stop - start]
        rng.random(out=wins, dtype=np.float32)
        np.less(wins, p32, out=wins)
        sums[start:stop] += wins @ by_group


# ----------------------------------------------------------------------------------------
# new business: deals not yet created that will be created and won inside the period
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewBusinessStream:
    """New business of one segment: a gamma-Poisson count of deals × an empirical amount.

    Attributes
    ----------
    segment
        The segment (``"(all)"`` when the rate is pooled).
    rate
        Expected number of deals created after as_of and won inside the period.
    rate_variance
        Uncertainty of that rate: the extra spread between past periods beyond Poisson noise,
        plus the error of a mean of ``windows`` periods. 0 gives a plain Poisson count.
    amounts
        Amounts of the past deals the rate was read from (each new deal draws one).
    counts
        The count in each past period, most recent first.
    """

    segment: str
    rate: float
    rate_variance: float
    amounts: np.ndarray
    counts: tuple[int, ...] = ()

    @property
    def expected(self) -> float:
        """Expected bookings of this stream."""
        return float(self.rate * self.amounts.mean()) if self.amounts.size else 0.0

    def sample(self, draws: int, rng: np.random.Generator) -> np.ndarray:
        """``draws`` simulated bookings of this stream."""
        if self.rate <= 0 or not self.amounts.size:
            return np.zeros(draws)
        if self.rate_variance > 0:
            shape = self.rate**2 / self.rate_variance
            lam = rng.gamma(shape, self.rate / shape, size=draws)
        else:
            lam = np.full(draws, self.rate)
        counts = rng.poisson(lam)
        picks = self.amounts[rng.integers(0, self.amounts.size, size=int(counts.sum()))]
        return np.bincount(np.repeat(np.arange(draws), counts), weights=picks, minlength=draws)


@dataclass(frozen=True)
class NewBusiness:
    """The new-business estimate of a period: one stream per segment (or one pooled)."""

    streams: tuple[NewBusinessStream, ...] = ()
    windows: tuple[str, ...] = ()
    note: str = ""

    @property
    def expected(self) -> float:
        return float(sum(s.expected for s in self.streams))


def comparable_periods(period: Period, *, as_of: pd.Timestamp, n: int) -> list[Period]:
    """The ``n`` latest periods like ``period`` that ended on or before ``as_of``.

    A period of whole months (a quarter, a month) is shifted back by its number of months, any
    other range by its number of days. Most recent first.
    """
    start, end = period.start, period.end
    whole_months = start.day == 1 and (end + pd.Timedelta(days=1)).day == 1
    months = (end.year - start.year) * 12 + end.month - start.month + 1
    out: list[Period] = []
    k = 1
    while len(out) < n and k < 4 * n + 40:
        if whole_months:
            s = pd.Timestamp(start - pd.DateOffset(months=k * months))
            e = pd.Timestamp(s + pd.DateOffset(months=months)) - pd.Timedelta(days=1)
        else:
            s = start - pd.Timedelta(days=k * period.days)
            e = end - pd.Timedelta(days=k * period.days)
        if e <= as_of:
            out.append(Period(start=s, end=e, label=f"{s.date()}:{e.date()}"))
        k += 1
    return out


def estimate_new_business(
    opportunities: pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    period: Period,
    windows: int = NEW_BUSINESS_WINDOWS,
    by: str = "segment",
    min_segment_deals: int = MIN_SEGMENT_NEW_DEALS,
) -> NewBusiness:
    """Run-rate of deals created after as_of and won inside the period, from past periods.

    Parameters
    ----------
    opportunities
        The opportunities as known at the end of ``as_of`` (``features.snapshots.cut_export``):
        ``created_at``, ``status``, ``closed_at``, ``amount`` and optionally ``by``.
    as_of
        The forecast day (end of day). Each past period P_k is cut at the same position: the
        deals counted were created after ``P_k.start + (as_of − period.start)`` and won inside
        P_k. Only past periods that ended on or before as_of and that the export covers (its
        first deal was created by then) are used.
    period
        The forecast period.
    windows
        How many comparable past periods to read.
    by
        Column giving each deal's segment; a segment with fewer than ``min_segment_deals``
        such deals over all windows is pooled with the others.

    Returns
    -------
    NewBusiness
        Expected count and amounts per segment (empty when no past period can be read).
    """
    opps = opportunities
    if opps is None or not len(opps) or period.end <= as_of:
        return NewBusiness(note="the period ends by the forecast day: no new deals can be won")
    created = pd.to_datetime(opps["created_at"]).dt.normalize()
    first = created.min()
    offset = as_of.normalize() - period.start  # negative when the period starts later
    status = opps["status"].astype("string")
    closed = pd.to_datetime(opps["closed_at"]) if "closed_at" in opps.columns else None
    if closed is None:
        return NewBusiness(note="the opportunities have no closed_at: no new-business rate")
    closed = closed.dt.normalize()
    amount = pd.to_numeric(opps["amount"], errors="coerce").fillna(0.0).to_numpy(dtype="float64")
    segment = (
        opps[by].astype("string").fillna(UNASSIGNED_GROUP)
        if by in opps.columns
        else pd.Series("(all)", index=opps.index, dtype="string")
    )
    past = [
        w
        for w in comparable_periods(period, as_of=as_of.normalize(), n=windows + 8)
        if min(w.start + offset, w.start) >= first
    ][:windows]
    if not past:
        return NewBusiness(note="the export does not reach back a whole comparable period")
    won = (status == "won").to_numpy(dtype=bool, na_value=False)
    hits = []
    for w in past:
        cut = w.start + offset
        mask = (
            won
            & (created > cut).to_numpy(dtype=bool, na_value=False)
            & (closed >= w.start).to_numpy(dtype=bool, na_value=False)
            & (closed <= w.end).to_numpy(dtype=bool, na_value=False)
        )
        hits.append(mask)
    segments = sorted(set(segment[np.logical_or.reduce(hits)].tolist()))
    own = [
        s
        for s in segments
        if sum(int((h & (segment == s).to_numpy()).sum()) for h in hits) >= min_segment_deals
    ]
    streams = []
    pooled_mask = np.ones(len(opps), dtype=bool)
    for s in own:
        in_s = (segment == s).to_numpy(dtype=bool)
        pooled_mask &= ~in_s
        streams.append(_stream(s, [h & in_s for h in hits], amount))
    if any((h & pooled_mask).any() for h in hits):
        label = "(all)" if not own else "(other segments)"
        streams.append(_stream(label, [h & pooled_mask for h in hits], amount))
    labels = tuple(f"{w.start.date()}:{w.end.date()}" for w in past)
    return NewBusiness(streams=tuple(streams), windows=labels)


def _stream(label: str, hits: Sequence[np.ndarray], amount: np.ndarray) -> NewBusinessStream:
    counts = np.array([int(h.sum()) for h in hits], dtype="float64")
    k = counts.size
    mean = float(counts.mean())
    spread = float(counts.var(ddof=1)) if k > 1 else mean
    # extra-Poisson spread between periods, plus the error of the mean of k periods
    variance = max(spread - mean, 0.0) + mean / k
    pooled = np.logical_or.reduce(list(hits))
    return NewBusinessStream(
        segment=str(label),
        rate=mean,
        rate_variance=variance,
        amounts=amount[pooled],
        counts=tuple(int(c) for c in counts),
    )


# ----------------------------------------------------------------------------------------
# model uncertainty: the error of the probabilities, shared by all deals of a period
# ----------------------------------------------------------------------------------------

#: ``predict(X, day, period)`` → p_win_in_period of the deals of ``X`` (features at the end of
#: ``day``) for ``period``: how the caller scores with its close model
InPeriodPredictor = Callable[[pd.DataFrame, pd.Timestamp, Period], np.ndarray]


def model_predictor(model: Any) -> InPeriodPredictor:
    """A close model's ``p_win_in_period`` as an :data:`InPeriodPredictor`.

    ``model.predict_in_period(X, start_days=…, end_days=…[, as_of=day])``, the period's first and
    last days counted from the end of ``day``; ``as_of`` is passed to the models whose hazards
    depend on the calendar of the weeks ahead. No ``p_win`` is passed: a model bounds its
    in-period probability by its own, and the competing-risks model's bound (a pass over its long
    horizon) changes nothing its monotone calibration has not already ensured.
    """
    method = model.predict_in_period
    try:
        dated = "as_of" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        dated = False

    def predict(X: pd.DataFrame, day: pd.Timestamp, period: Period) -> np.ndarray:
        if not len(X):
            return np.zeros(0)
        start, end = (period.start - day).days, (period.end - day).days
        kwargs: dict[str, Any] = {"as_of": day} if dated else {}
        return np.asarray(
            method(X, start_days=start, end_days=end, **kwargs), dtype="float64"
        ).reshape(-1)

    return predict


@dataclass(frozen=True)
class ModelUncertainty:
    """The model-uncertainty estimate of a forecast (see :func:`estimate_model_uncertainty`).

    Attributes
    ----------
    sigma
        Relative standard deviation of the factor shared by all open deals' bookings (0: the
        probabilities are taken as known).
    windows
        The past periods read, most recent first (``start:end``).
    expected, actual
        Per window: Σ amount × p_win_in_period of the deals open at the same position, and what
        those deals booked inside the window.
    chance_sd
        Per window: the standard deviation of those bookings from deal-by-deal chance alone.
    note
        Why no estimate could be made, when none could.
    """

    sigma: float = 0.0
    windows: tuple[str, ...] = ()
    expected: tuple[float, ...] = ()
    actual: tuple[float, ...] = ()
    chance_sd: tuple[float, ...] = ()
    note: str = ""

    def describe(self) -> str:
        """One sentence for a forecast's notes."""
        if self.note:
            return f"Model uncertainty not estimated: {self.note}."
        ratios = ", ".join(f"{a / e:.2f}" for a, e in zip(self.actual, self.expected, strict=True))
        return (
            f"Model uncertainty ±{self.sigma:.1%} on the open deals' bookings (one factor shared "
            f"by all deals), from {len(self.windows)} past periods at the same point "
            f"(booked ÷ expected: {ratios})."
        )


def estimate_model_uncertainty(
    known: Export,
    predict: InPeriodPredictor,
    *,
    as_of: pd.Timestamp,
    period: Period,
    windows: int = MODEL_UNCERTAINTY_WINDOWS,
    min_windows: int = MIN_MODEL_UNCERTAINTY_WINDOWS,
) -> ModelUncertainty:
    """How far the model's in-period bookings strayed in past periods beyond chance: ``σ``.

    For each of the ``windows`` latest comparable past periods P_k (:func:`comparable_periods`:
    ended on or before as_of, and the export reached back to them), the deals open at the end of
    day ``d_k = P_k.start + (as_of − period.start)`` — the same point of the period as the
    forecast — are scored with ``predict``: ``E_k = Σ a·p``, ``V_k = Σ a²·p(1−p)`` (the spread of
    independent deals), and ``A_k`` = the amounts of those deals won inside P_k. A shared factor
    ``F`` (mean 1, variance σ²) on ``S = Σ a·B`` gives ``E(F·S − E)² = V + σ²(V + E²)``, so by the
    method of moments pooled over the windows (big periods weigh more)::

        σ² = max(0, Σ_k [(A_k − E_k)² − V_k] / Σ_k (V_k + E_k²))

    The model has usually been trained on these past periods, so σ tends to understate its error
    on a period it has not seen; with six periods the estimate is itself rough (it is 0 whenever
    the past errors were no larger than chance).
    A model that is systematically off in the past (too low late in the quarter, say) shows here
    as a wider range, not as a shifted forecast.

    Parameters
    ----------
    known
        The export as known at the end of ``as_of`` (``features.snapshots.cut_export`` or
        ``features.training_table.as_known_at``): every window ended on or before as_of, so
        its deals' outcomes inside it are known; nothing about the forecast period is read.
    predict
        ``predict(X, day, period)`` → p_win_in_period of the rows of ``X`` (features as of the
        end of ``day``, from :func:`features.opportunity.build_training_set`) for ``period``.
    as_of
        The forecast day (end of day).
    period
        The forecast period.
    windows, min_windows
        How many past periods to read, and the fewest that give an estimate (fewer: σ = 0
        with a note).

    Returns
    -------
    ModelUncertainty
        ``sigma`` and the per-window figures.
    """
    opps = known.opportunities
    if opps is None or not len(opps) or "closed_at" not in opps.columns:
        return ModelUncertainty(note="no past deals with outcomes")
    day = pd.Timestamp(as_of).normalize()
    first = pd.to_datetime(opps["created_at"]).min().normalize()
    offset = day - period.start
    past = [
        w
        for w in comparable_periods(period, as_of=day, n=windows + 8)
        if min(w.start + offset, w.start) > first
    ][:windows]
    if len(past) < min_windows:
        return ModelUncertainty(
            note=f"the export reaches back {len(past)} comparable past period(s), "
            f"{min_windows} are needed"
        )
    # a past period says how far the model strayed only if the export holds what was decided
    # in it: a pipeline of open deals alone (as a forecast request may post) has no closed deal,
    # and its deals, open today, were by definition not won back then
    status = opps["status"].astype("string")
    decided = opps.loc[status.isin(["won", "lost"]).to_numpy(dtype=bool, na_value=False)]
    past = [w for w in past if in_period(decided["closed_at"], w).any()]
    if len(past) < min_windows:
        return ModelUncertainty(
            note=f"the export records closed deals in {len(past)} comparable past period(s), "
            f"{min_windows} are needed"
        )
    days = [w.start + offset for w in past]
    table = opportunity_features.build_training_set(known, dates=days)
    won_ids = opps.loc[
        (opps["status"].astype("string") == "won").to_numpy(dtype=bool, na_value=False),
        ["opportunity_id", "closed_at"],
    ]
    labels, exp, act, sd = [], [], [], []
    for w, d in zip(past, days, strict=True):
        rows = (pd.to_datetime(table["as_of"]).dt.normalize() == d).to_numpy(dtype=bool)
        X = table.loc[rows].drop(columns="as_of").set_index("opportunity_id")
        if not len(X):
            continue
        a = pd.to_numeric(X["amount"], errors="coerce").fillna(0.0).to_numpy(dtype="float64")
        p = np.asarray(predict(X, d, w), dtype="float64")
        if p.shape != a.shape:
            raise ValueError(f"predict gave {p.size} probabilities for {a.size} deals")
        booked = won_ids.loc[in_period(won_ids["closed_at"], w), "opportunity_id"]
        hit = X.index.astype("string").isin(pd.Index(booked.astype("string")))
        e = float(np.dot(a, p))
        if e <= 0:
            continue
        labels.append(f"{w.start.date()}:{w.end.date()}")
        exp.append(e)
        act.append(float(a[hit].sum()))
        sd.append(float(math.sqrt(np.dot(a * a, p * (1.0 - p)))))
    if len(labels) < min_windows:
        return ModelUncertainty(
            note=f"{len(labels)} past period(s) had open deals at the same point, "
            f"{min_windows} are needed"
        )
    e_, a_, v_ = np.array(exp), np.array(act), np.array(sd) ** 2
    sigma2 = max(0.0, float(((a_ - e_) ** 2 - v_).sum() / (v_ + e_**2).sum()))
    log.info(
        "model uncertainty of %s at %s: σ = %.3f from %d past periods (booked ÷ expected %s)",
        period.label,
        day.date(),
        math.sqrt(sigma2),
        len(labels),
        np.round(a_ / e_, 3).tolist(),
    )
    return ModelUncertainty(
        sigma=math.sqrt(sigma2),
        windows=tuple(labels),
        expected=tuple(exp),
        actual=tuple(act),
        chance_sd=tuple(sd),
    )


def stage_probabilities(known: Export) -> dict[str, float]:
    """The CRM's probability of each stage; undeclared stages get their historical win rate.

    ``known`` is the export cut at as_of: a stage's historical rate is the share won among the
    deals closed by then that had passed through it (from stage_history), else the overall win
    rate of the deals closed by then.
    """
    declared = known.stage_probabilities()
    opps = known.opportunities
    if opps is None:
        return declared
    status = opps["status"].astype("string")
    closed = opps.loc[status.isin(["won", "lost"]).to_numpy(dtype=bool, na_value=False)]
    overall = float((closed["status"] == "won").mean()) if len(closed) else float("nan")
    rates: dict[str, float] = {}
    hist = known.stage_history
    if hist is not None and len(closed):
        won = pd.Series(
            (closed["status"] == "won").to_numpy(dtype=bool),
            index=closed["opportunity_id"].astype("string"),
        )
        passed = hist[["opportunity_id", "stage"]].astype("string").drop_duplicates()
        passed = passed.loc[passed["opportunity_id"].isin(won.index)]
        if len(passed):
            passed = passed.assign(won=passed["opportunity_id"].map(won).astype(bool))
            rates = {str(k): float(v) for k, v in passed.groupby("stage")["won"].mean().items()}
    stages = set(opps["stage"].astype("string").dropna()) | set(rates)
    out = {s: declared.get(s, rates.get(s, overall)) for s in stages}
    out.update(declared)
    return out


def won_in_period(opportunities: pd.DataFrame | None, period: Period) -> pd.DataFrame:
    """Deals won inside ``period`` as far as ``opportunities`` know (cut them at as_of first).

    Parameters
    ----------
    opportunities
        The opportunities as known at the end of as_of (``features.snapshots.cut_export``): a
        deal won after as_of shows open there, so only wins on or before as_of count.
    period
        The forecast period.

    Returns
    -------
    DataFrame
        The won rows (all columns), ``amount`` numeric with missing → 0.
    """
    if opportunities is None or "closed_at" not in opportunities.columns:
        return pd.DataFrame({"amount": pd.Series(dtype="float64")})
    opps = opportunities
    status = opps["status"].astype("string") == "won"
    mask = status.to_numpy(dtype=bool, na_value=False) & in_period(opps["closed_at"], period)
    won = opps.loc[mask].copy()
    won["amount"] = pd.to_numeric(won["amount"], errors="coerce").fillna(0.0)
    return won.reset_index(drop=True)


def in_period(dates: Any, period: Period) -> np.ndarray:
    """Whether each date (a day or a time) falls inside the period's days; NaT → False."""
    d = pd.to_datetime(pd.Series(dates))
    return ((d >= period.start) & (d < period.end_exclusive)).to_numpy(dtype=bool, na_value=False)


# ----------------------------------------------------------------------------------------
# the forecast: won + open + new, in total and by group
# ----------------------------------------------------------------------------------------


@dataclass
class BookingsForecast:
    """The numbers of a forecast (see :func:`forecast_bookings`)."""

    open: Distribution
    total: Distribution
    open_expected: float
    won_to_date: float
    expected_new: float
    groups: pd.DataFrame
    prob_attain_quota: float | None = None
    draws: int = 0
    notes: list[str] = field(default_factory=list)
    #: σ of the factor shared by the open deals' bookings (0: probabilities taken as known)
    model_uncertainty: float = 0.0

    @property
    def method(self) -> str:
        return self.total.method

    @property
    def expected(self) -> float:
        """won to date + Σ amount × p_win_in_period + expected new (exact, not simulated)."""
        return self.won_to_date + self.open_expected + self.expected_new


def probability_category(
    p: Any, *, commit: float = COMMIT_THRESHOLD, best_case: float = BEST_CASE_THRESHOLD
) -> np.ndarray:
    """``commit`` (p ≥ ``commit``), ``best_case`` (p ≥ ``best_case``) or ``pipeline``.

    Meant for ``p_win_in_period``: the category says how likely the deal is to be booked in the
    forecast period.
    """
    if not 0.0 <= best_case <= commit <= 1.0:
        raise ValueError(
            f"category thresholds must satisfy 0 ≤ best case ({best_case}) ≤ commit ({commit}) ≤ 1"
        )
    pv = np.asarray(p, dtype="float64")
    return np.where(pv >= commit, "commit", np.where(pv >= best_case, "best_case", "pipeline"))


def forecast_bookings(
    amounts: Any,
    p_in_period: Any,
    *,
    groups: Any = None,
    won_amounts: Any = (),
    won_groups: Any = None,
    new_business: NewBusiness | None = None,
    new_business_by_group: bool = False,
    quota: float | None = None,
    model_uncertainty: float = 0.0,
    seed: int = 0,
    tolerance: float = TOLERANCE,
    min_draws: int = MIN_DRAWS,
    max_draws: int = MAX_DRAWS,
    max_exact_support: int = MAX_EXACT_SUPPORT,
) -> BookingsForecast:
    """Distribution of a period's bookings: won to date + open deals + new business.

    Parameters
    ----------
    amounts, p_in_period
        Amount (in force at as_of) and probability of being won inside the period of each deal
        open at as_of.
    groups
        Optional roll-up label of each open deal (missing → ``(unassigned)``).
    won_amounts, won_groups
        Amounts (and labels) of the deals already won inside the period by as_of.
    new_business
        :func:`estimate_new_business`; ``None`` for none.
    new_business_by_group
        True when the roll-up column is the new-business segment column: each stream then goes
        to its segment's group; otherwise new business is one ``(new business)`` group, since
        the owner, source … of a deal not yet created is unknown.
    quota
        The period's quota; ``prob_attain_quota`` = P(won + open + new ≥ quota).
    model_uncertainty
        ``σ`` of :func:`estimate_model_uncertainty`: the open deals' bookings of each simulated
        period are multiplied by one gamma factor of mean 1 and standard deviation σ, shared by
        all deals and roll-up groups (expected values unchanged). 0 (the default) treats the
        probabilities as known: the open deals are independent, and their distribution exact
        when it is small enough.
    seed, tolerance, min_draws, max_draws
        Monte Carlo settings (see the module notes).
    max_exact_support
        Largest exact distribution (distinct sums) before Monte Carlo is used.

    Returns
    -------
    BookingsForecast
        ``open`` covers the open deals only; ``total`` adds won and new. ``groups`` has one row
        per label: ``group, expected, p10, p50, p90, open_expected, won_to_date, expected_new,
        n_deals`` (``n_deals`` = open deals), sorted by expected; the group expecteds add up to
        the total's expected.
    """
    a, p = _clean(amounts, p_in_period)
    sigma = float(model_uncertainty)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"model uncertainty must be a finite σ ≥ 0, not {model_uncertainty}")
    wa = np.nan_to_num(np.asarray(won_amounts, dtype="float64"), nan=0.0)
    won = float(wa.sum())
    streams = new_business.streams if new_business is not None else ()
    rated = [s for s in streams if s.expected > 0]

    labels_open = _labels(groups, a.size)
    labels_won = _labels(won_groups, wa.size)
    labels_new = [(s.segment if new_business_by_group else NEW_BUSINESS_GROUP) for s in rated]
    names = sorted(set(labels_open) | set(labels_won) | set(labels_new))
    if len(names) > MAX_GROUPS:
        raise ValueError(f"{len(names)} groups; roll-ups take at most {MAX_GROUPS}")
    index = {n: i for i, n in enumerate(names)}
    g_open = np.array([index[x] for x in labels_open], dtype=np.int64)
    g_won = np.array([index[x] for x in labels_won], dtype=np.int64)
    G = len(names)
    won_by_group = np.bincount(g_won, weights=wa, minlength=G) if G else np.zeros(0)
    open_by_group = np.bincount(g_open, weights=a * p, minlength=G) if G else np.zeros(0)
    new_by_group = np.zeros(G)
    for s, label in zip(rated, labels_new, strict=True):
        new_by_group[index[label]] += s.expected
    n_by_group = np.bincount(g_open, minlength=G) if G else np.zeros(0, dtype=np.int64)
    expected_new = float(sum(s.expected for s in rated))

    notes: list[str] = []
    exact_open = exact_distribution(a, p, max_support=max_exact_support)
    group_dists: list[Distribution] = []
    draws = 0
    if exact_open is not None and not rated and sigma == 0:
        open_dist = exact_open
        total = exact_open.shifted(won)
        for i in range(G):
            d = exact_distribution(a[g_open == i], p[g_open == i], max_support=max_exact_support)
            assert d is not None  # a subset's sums are among the whole set's
            group_dists.append(d.shifted(won_by_group[i]))
    else:
        rng = np.random.default_rng(seed)
        scale = max(won + float(np.dot(a, p)) + expected_new, 1.0)
        # the simulated group sums are kept (float32) for the group percentiles: bound them
        cap = max(min_draws, min(max_draws, KEPT_NUMBERS // max(G, 1)))
        open_parts: list[np.ndarray] = []
        total_parts: list[np.ndarray] = []
        group_parts: list[np.ndarray] = []
        factors = _factor_grid(sigma, rng) if sigma > 0 else None
        new_parts: list[np.ndarray] = []
        while True:
            n = min_draws if not draws else min(draws, cap - draws)
            block = monte_carlo_draws(a, p, draws=n, rng=rng, groups=g_open, n_groups=G)
            open_parts.append(block.sum(axis=1))
            news = np.zeros_like(block)
            for s, label in zip(rated, labels_new, strict=True):
                news[:, index[label]] += s.sample(n, rng)
            new_parts.append(news.sum(axis=1))
            if factors is not None:
                # a roll-up group's percentiles: one factor of the grid per simulated period,
                # the same for every group (they move together)
                block *= factors[rng.integers(0, factors.size, size=n)][:, None]
            block += news
            total_parts.append(block.sum(axis=1) + won)
            group_parts.append(block.astype("float32"))
            draws += n
            if factors is None:
                total_draws = np.concatenate(total_parts)
                err = max(_quantile_se(total_draws, q) for q in PERCENTILES.values())
            else:
                err = _mixture_quantile_se(
                    np.concatenate(open_parts), np.concatenate(new_parts) + won, factors
                )
            if err <= tolerance / 4 * scale or draws >= cap:
                break
        if sigma > 0:
            notes.append(
                f"The range includes the model's own uncertainty: the open deals' bookings move "
                f"together by ±{sigma:.1%} (one standard deviation), as they did around the "
                "model's numbers in past periods."
            )
        if err > tolerance / 4 * scale:
            notes.append(
                f"Monte Carlo stopped at {draws:,} draws with a standard error of "
                f"{err / scale:.2%} of the forecast on its percentiles"
            )
        if factors is None:
            open_dist = (
                exact_open
                if exact_open is not None
                else Distribution.from_draws(np.concatenate(open_parts))
            )
            total = Distribution.from_draws(total_draws)
        else:
            # the factor integrated over its grid for every simulated period: open × each factor
            S = np.concatenate(open_parts)
            rest = np.concatenate(new_parts) + won
            open_dist = Distribution.from_draws(np.outer(S, factors).ravel(), draws_made=draws)
            total = Distribution.from_draws(
                (np.outer(S, factors) + rest[:, None]).ravel(), draws_made=draws
            )
        sims = np.vstack(group_parts)
        group_dists = [Distribution.from_draws(sims[:, i] + won_by_group[i]) for i in range(G)]
    rows = []
    for i, name in enumerate(names):
        pct = group_dists[i].percentiles()
        rows.append(
            {
                "group": name,
                "expected": float(won_by_group[i] + open_by_group[i] + new_by_group[i]),
                **pct,
                "open_expected": float(open_by_group[i]),
                "won_to_date": float(won_by_group[i]),
                "expected_new": float(new_by_group[i]),
                "n_deals": int(n_by_group[i]),
            }
        )
    table = pd.DataFrame(
        rows,
        columns=[
            "group",
            "expected",
            "p10",
            "p50",
            "p90",
            "open_expected",
            "won_to_date",
            "expected_new",
            "n_deals",
        ],
    )
    table = table.sort_values(["expected", "group"], ascending=[False, True], kind="stable")
    result = BookingsForecast(
        open=open_dist,
        total=total,
        open_expected=float(np.dot(a, p)),
        won_to_date=won,
        expected_new=expected_new,
        groups=table.reset_index(drop=True),
        draws=draws,
        notes=notes,
        model_uncertainty=sigma,
    )
    if quota is not None:
        if quota < 0 or not math.isfinite(quota):
            raise ValueError(f"quota must be a finite amount ≥ 0, not {quota}")
        result.prob_attain_quota = total.prob_at_least(float(quota))
    return result


def _labels(values: Any, n: int) -> list[str]:
    if values is None:
        return ["(all)"] * n
    s = pd.Series(values, dtype="string")
    if len(s) != n:
        raise ValueError(f"{len(s)} group labels for {n} deals")
    return s.fillna(UNASSIGNED_GROUP).replace("", UNASSIGNED_GROUP).tolist()


#: points of the shared factor's grid (equal-probability quantiles of its gamma law)
FACTOR_GRID = 64
#: batches the simulated periods are split into to measure the percentiles' standard error
SE_BATCHES = 8


def _factor_grid(sigma: float, rng: np.random.Generator, points: int = FACTOR_GRID) -> np.ndarray:
    """The shared factor (gamma, mean 1, standard deviation ``sigma``) as ``points`` equally
    likely values: the mid-probability quantiles, rescaled to mean 1 and deviation ``sigma``
    exactly. Crossing every simulated period with the whole grid integrates the factor instead
    of sampling it, so the percentiles need only as many periods as without it."""
    shape = 1.0 / sigma**2
    sample = rng.gamma(shape, 1.0 / shape, size=200_000)
    grid = np.quantile(sample, (np.arange(points) + 0.5) / points)
    grid = 1.0 + (grid - grid.mean()) / grid.std() * sigma
    return np.clip(grid, 0.0, None)


def _mixture_quantile_se(open_sums: np.ndarray, rest: np.ndarray, factors: np.ndarray) -> float:
    """The largest standard error of P10/P50/P90 of ``open × factor + rest`` over the factor
    grid: the simulated periods split into batches, the percentiles' spread between batches."""
    batches = np.array_split(np.arange(open_sums.size), SE_BATCHES)
    qs = list(PERCENTILES.values())
    per_batch = np.array(
        [
            np.quantile((np.outer(open_sums[b], factors) + rest[b, None]).ravel(), qs)
            for b in batches
        ]
    )
    return float(per_batch.std(axis=0, ddof=1).max() / math.sqrt(len(batches)))


def _quantile_se(draws: np.ndarray, q: float, h: float = 0.025) -> float:
    """Standard error of the sample q-quantile (Siddiqui–Bloch–Gastwirth sparsity estimate)."""
    n = draws.size
    lo, hi = np.quantile(draws, [max(q - h, 0.0), min(q + h, 1.0)])
    return float(math.sqrt(q * (1 - q) / n) * (hi - lo) / (2 * h))
