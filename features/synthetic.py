"""A seeded B2B CRM simulator: the demo export behind ``pipecast simulate``.

The funnel: leads on BDR lists → meetings → SQOs → opportunities that move week by week
through Discovery, Solution, Proposal and Negotiation to Closed Won or Closed Lost. Outcomes
come from a process whose drivers are mostly observable in the export (segment, source,
signal, industry fit, region, amount, stage, weeks in stage, age, quarter end), the AE's skill
(seen through each AE's track record), a per-deal engagement that shows through activity rates
and whether a next step is recorded, and a small hidden remainder. The CRM's fixed stage
probabilities ignore all but the stage, which is what a learned model improves on. As in a
real CRM without pipeline hygiene, some deals are never closed: by default 15% of them
(``stale_share``) quietly die and stay open in the export for ever.

Time runs in weeks ending on Sundays (end of day). Step 0 of a deal runs from its creation
day to the first Sunday on or after it; step ``m`` then covers the seven days ending on the
``m``-th Sunday after that. In each step a deal may be won, lost, advance one stage or stay.
Because the weekly hazards depend only on the deal's fixed quality, its stage, its weeks in
stage, its age and the calendar, the true probabilities written to ``truth/`` are computed
exactly by dynamic programming over the remaining weeks (vectorised across deals):

``truth/opportunity_snapshots``
    one row per deal and Sunday ``as_of`` on which it is open at the end of the day (up to
    the export date): ``p_win`` (eventually won), ``p_win_by_quarter_end`` (won on or before
    the last day of the fiscal quarter containing ``as_of``), ``p_win_by_next_quarter_end``.
``truth/opportunities``
    ``segment``, ``p_win_at_creation``, the deal's ``quality`` (logit scale) and hidden
    ``engagement``, and ``final_status`` / ``final_closed_at``: the outcome, also for deals
    still open at export (it lies after the export date for those).
``truth/leads``
    ``p_sqo``: P(SQO within ``sqo_window_days`` of ``created_at``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.io import DatasetConfig, Export, StageDef, coerce_table, write_export, write_table

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["Simulation", "simulate", "write_simulation", "describe", "quarter_end_rush", "EXPORTED_AT",
           "STAGES", "REALISTIC_STALE_SHARE"]

EXPORTED_AT = pd.Timestamp("2026-11-01")
HISTORY_START = pd.Timestamp("2024-05-01")
FISCAL_YEAR_START_MONTH = 2
SQO_WINDOW_DAYS = 90

STAGES = ("Discovery", "Solution", "Proposal", "Negotiation")
WON, LOST = "Closed Won", "Closed Lost"
STAGE_PROBABILITIES = (0.10, 0.25, 0.50, 0.75)
SEGMENTS = ("SMB", "Mid-Market", "Enterprise")

#: weeks in stage beyond this count as this (the hazards are flat from here on)
WIS_CAP = 20

# --- the world ---------------------------------------------------------------------------
INDUSTRIES = {  # name: (share, fit with the product on the logit scale)
    "Software": (0.22, 0.40),
    "Financial Services": (0.14, 0.20),
    "Professional Services": (0.12, 0.10),
    "Healthcare": (0.12, 0.00),
    "Media": (0.08, -0.10),
    "Manufacturing": (0.14, -0.20),
    "Retail": (0.10, -0.30),
    "Education": (0.08, -0.45),
}
REGIONS = {  # name: (share, effect, countries)
    "NA": (0.45, 0.05, ("US", "US", "US", "CA")),
    "EMEA": (0.32, 0.00, ("GB", "DE", "FR", "NL", "SE", "ES")),
    "APAC": (0.15, -0.10, ("AU", "SG", "JP", "IN")),
    "LATAM": (0.08, -0.20, ("BR", "MX", "AR")),
}
SIGNALS = {  # name: (share among signal-triggered leads, effect on deal quality)
    "funding": (0.22, 0.25),
    "hiring": (0.26, 0.20),
    "new_executive": (0.16, 0.30),
    "intent_surge": (0.20, 0.40),
    "technology_change": (0.16, 0.20),
}
PRODUCTS = {"Core": (0.55, 1.0), "Analytics": (0.25, 1.3), "Platform": (0.20, 2.0)}
OPP_SOURCES = {"inbound": 0.25, "expansion": 0.65, "partner": 0.12, "outbound": 0.0}
NEXT_STEPS = (
    "Demo with the team next week",
    "Send proposal",
    "Security review call",
    "Pricing discussion with finance",
    "Follow-up call with champion",
    "Technical deep dive",
    "Intro to economic buyer",
    "Reference call",
    "Legal review of MSA",
    "Schedule workshop",
)
SENIORITY = {  # name: (share, effect on meeting, effect on SQO given meeting)
    "C-Level": (0.08, -0.30, 0.45),
    "VP": (0.17, 0.05, 0.35),
    "Director": (0.25, 0.20, 0.20),
    "Manager": (0.30, 0.10, -0.10),
    "Individual Contributor": (0.20, -0.10, -0.45),
}
FUNCTIONS = {  # name: (share, ICP effect)
    "Sales": (0.35, 0.30),
    "Revenue Operations": (0.20, 0.45),
    "Marketing": (0.20, -0.05),
    "Finance": (0.10, -0.20),
    "IT": (0.10, -0.25),
    "Customer Success": (0.05, 0.00),
}
TITLE_PREFIX: dict[str, str | dict[str, str]] = {
    "C-Level": {"Sales": "Chief Revenue Officer", "Revenue Operations": "Chief Operating Officer",
                "Marketing": "Chief Marketing Officer", "Finance": "Chief Financial Officer",
                "IT": "Chief Information Officer", "Customer Success": "Chief Customer Officer"},
    "VP": "VP {f}",
    "Director": "Director of {f}",
    "Manager": "{f} Manager",
    "Individual Contributor": "{f} Specialist",
}
LEAD_SOURCES = {"outbound": (0.62, 0.0), "event": (0.14, 0.25), "webinar": (0.10, 0.15), "content": (0.14, 0.05)}
SEQUENCES = ("cold-6-touch", "cold-9-touch", "signal-personal", "event-follow-up")


@dataclass(frozen=True)
class SegmentProcess:
    """Weekly hazards of one segment (logits against "stay" in a step of a full week)."""

    name: str
    share: float
    #: where deals start: P(Discovery), P(Solution), P(Proposal)
    start: tuple[float, float, float]
    advance: tuple[float, float, float]      # Discovery→Solution, Solution→Proposal, Proposal→Negotiation
    win: tuple[float, float]                 # from Proposal, from Negotiation
    loss: tuple[float, float, float, float]  # per open stage
    stale_after: int                         # weeks in stage after which loss rises
    stale_slope: float
    old_after: int                           # age in weeks after which loss rises
    old_slope: float
    max_age: int                             # weeks: a deal open at the end of this age is closed lost
    amount_median: float
    cycle_days: float                        # the rep's first expected close, days after creation
    activity_rate: float                     # activities a week for an average deal


SEGMENT_PROCESSES = {
    "SMB": SegmentProcess(
        "SMB", share=0.45, start=(0.35, 0.45, 0.20), advance=(0.30, 0.20, 0.10), win=(-1.10, 0.40),
        loss=(0.00, -0.35, -0.65, -0.75), stale_after=3, stale_slope=0.30, old_after=8, old_slope=0.12,
        max_age=20, amount_median=12_000, cycle_days=18, activity_rate=3.0),
    "Mid-Market": SegmentProcess(
        "Mid-Market", share=0.35, start=(0.70, 0.30, 0.0), advance=(-0.80, -0.90, -1.00), win=(-3.20, -1.10),
        loss=(-1.20, -1.70, -1.90, -1.90), stale_after=5, stale_slope=0.22, old_after=14, old_slope=0.10,
        max_age=34, amount_median=45_000, cycle_days=38, activity_rate=3.5),
    "Enterprise": SegmentProcess(
        "Enterprise", share=0.20, start=(0.80, 0.20, 0.0), advance=(-2.30, -2.50, -2.60), win=(-4.20, -2.10),
        loss=(-2.35, -3.45, -3.75, -3.75), stale_after=8, stale_slope=0.15, old_after=26, old_slope=0.08,
        max_age=56, amount_median=80_000, cycle_days=95, activity_rate=4.0),
}

#: sensitivity of the weekly hazards to deal quality
B_ADVANCE, B_WIN, B_LOSS = 0.45, 1.20, 0.80
#: weight of the deal's engagement in its quality (engagement ~ N(0, 1) shows in activity rates)
ENGAGEMENT_WEIGHT = 0.30
#: how strongly activity rates follow engagement (log rate per unit of engagement)
ACTIVITY_ENGAGEMENT = 0.80
#: the part of a deal's quality nothing in the export reveals
HIDDEN_SD = 0.05
#: spread of AE skill on the quality scale (seen only through each AE's track record)
AE_SKILL_SD = 0.18
#: weight of what the export shows directly (source, signal, industry, region) in quality
OBSERVED_SCALE = 2.2
#: subtracted from quality so that the average deal has quality about zero
QUALITY_CENTRE = 0.90
#: P(a next step is recorded) = sigmoid(base + weight × engagement): about 80% of deals
NEXT_STEP_BASE, NEXT_STEP_ENGAGEMENT = 1.6, 1.0
#: activities on the day a deal is created (discovery call, follow-up emails) for an average deal
CREATION_ACTIVITIES = 3.0
#: share of deals left open for ever in a CRM without pipeline hygiene (``stale_share``)
REALISTIC_STALE_SHARE = 0.15
#: extra win logit in the last weeks of a fiscal quarter
PULL_IN = 0.70
PULL_IN_DAYS = 13


@dataclass
class Simulation:
    """A simulated CRM export and the generator's true probabilities."""

    export: Export
    truth: dict[str, pd.DataFrame] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _choice(rng: np.random.Generator, table: dict[str, Any], n: int) -> np.ndarray:
    names = list(table)
    shares = np.array([v[0] if isinstance(v, tuple) else v for v in table.values()], dtype=float)
    return np.asarray(names, dtype=object)[rng.choice(len(names), size=n, p=shares / shares.sum())]


def _effect(values: np.ndarray, table: dict[str, Any], pos: int = 1) -> np.ndarray:
    lookup = {k: v[pos] for k, v in table.items()}
    return np.array([lookup.get(v, 0.0) for v in values], dtype=float)


def _title(seniority: str, function: str) -> str:
    form = TITLE_PREFIX[seniority]
    return form[function] if isinstance(form, dict) else form.format(f=function)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _days(values: np.ndarray) -> np.ndarray:
    """Whole days since 1970 as int64 (from datetime64)."""
    return values.astype("datetime64[D]").astype(np.int64)


def _as_date(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[ns]")


def _as_time(days: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    return (days.astype("datetime64[D]").astype("datetime64[s]") + seconds.astype("timedelta64[s]")).astype("datetime64[ns]")


def _work_seconds(rng: np.random.Generator, n: int, lo: float = 8.0, hi: float = 18.5) -> np.ndarray:
    return (rng.uniform(lo, hi, size=n) * 3600).astype(np.int64)


def _quarter_end(days: np.ndarray) -> np.ndarray:
    """Last day of the fiscal quarter containing each day (int days in, int days out)."""
    d = days.astype("datetime64[D]")
    month = d.astype("datetime64[M]")
    m = month.astype(np.int64) % 12 + 1  # calendar month 1..12
    into = (m - FISCAL_YEAR_START_MONTH) % 3
    end = month + (3 - into).astype("timedelta64[M]")
    return end.astype("datetime64[D]").astype(np.int64) - 1


def _tick(progress: Progress | None, task: Any) -> None:
    if progress is not None and task is not None:
        progress.advance(task)


# ----------------------------------------------------------------------------------------
# the weekly process of an opportunity
# ----------------------------------------------------------------------------------------


def _step_probs(
    p: SegmentProcess,
    quality: np.ndarray,
    stage: np.ndarray,
    wis: np.ndarray,
    age: np.ndarray | int,
    pull: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(win), P(loss), P(advance) in one full week; all arguments broadcast together."""
    adv_base = np.array([*p.advance, -np.inf])
    win_base = np.array([-np.inf, -np.inf, *p.win])
    loss_base = np.array(p.loss)
    stale = p.stale_slope * np.maximum(wis - p.stale_after, 0)
    old = p.old_slope * np.maximum(np.asarray(age) - p.old_after, 0)
    e_adv = np.exp(adv_base[stage] + B_ADVANCE * quality - 0.08 * np.maximum(wis - 2, 0))
    e_win = np.exp(win_base[stage] + B_WIN * quality + PULL_IN * pull)
    e_loss = np.exp(loss_base[stage] - B_LOSS * quality + stale + old)
    z = 1.0 + e_adv + e_win + e_loss
    return e_win / z, e_loss / z, e_adv / z


@dataclass
class _Calendar:
    """Per Sunday (index u): the facts the weekly process needs about the week ending then."""

    first_sunday: int  # day number of Sunday index 0
    sunday: np.ndarray
    #: the week ending on this Sunday is in the last PULL_IN_DAYS of its fiscal quarter
    pull: np.ndarray
    #: quarter end of the week's first day (wins that week land on or before it)
    week_quarter_end: np.ndarray
    #: as of this Sunday: 0 = next Sunday is in the same quarter, 1 = the quarter ends during
    #: the next week, 2 = the quarter ends today
    quarter_turn: np.ndarray

    @classmethod
    def build(cls, first_day: int, last_day: int) -> _Calendar:
        first_sunday = first_day - ((first_day - 3) % 7)  # 1970-01-04 was a Sunday (day 3)
        sunday = np.arange(first_sunday, last_day + 8, 7, dtype=np.int64)
        wq = _quarter_end(sunday - 6)
        pull = (wq - sunday) <= PULL_IN_DAYS
        q1 = _quarter_end(sunday)
        turn = np.where(q1 >= sunday + 7, 0, np.where(q1 > sunday, 1, 2))
        return cls(first_sunday, sunday, pull.astype(float), wq, turn)

    def index(self, day: np.ndarray) -> np.ndarray:
        """Index of the first Sunday on or after each day."""
        return (day - self.first_sunday + 6) // 7


@dataclass
class _Lives:
    """The simulated lives of one segment's deals (all arrays by deal unless said)."""

    close_step: np.ndarray        # step in which the deal closed
    won: np.ndarray
    close_day: np.ndarray
    stage_after: np.ndarray       # (n, steps) stage at the end of each step (open deals)
    wis_after: np.ndarray         # (n, steps)
    adv_deal: np.ndarray          # stage advances: deal, step, new stage, day
    adv_step: np.ndarray
    adv_stage: np.ndarray
    adv_day: np.ndarray


def _live(p: SegmentProcess, rng: np.random.Generator, cal: _Calendar, created: np.ndarray,
          quality: np.ndarray, start_stage: np.ndarray) -> _Lives:
    """Run the weekly process forward for one segment's deals."""
    n = len(created)
    u0 = cal.index(created)
    steps = p.max_age + 2
    first_frac = ((cal.sunday[u0] - created) + 1) / 7.0
    stage = start_stage.astype(np.int64).copy()
    wis = np.zeros(n, dtype=np.int64)
    open_ = np.ones(n, dtype=bool)
    close_step = np.full(n, steps, dtype=np.int64)
    won = np.zeros(n, dtype=bool)
    close_day = np.zeros(n, dtype=np.int64)
    stage_after = np.full((n, steps), -1, dtype=np.int8)
    wis_after = np.zeros((n, steps), dtype=np.int8)
    adv: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for m in range(steps):
        idx = np.flatnonzero(open_)
        if not len(idx):
            break
        u = u0[idx] + m
        week_end = cal.sunday[u]
        week_start = np.maximum(week_end - 6, created[idx])
        ndays = week_end - week_start + 1
        draw = rng.random(len(idx))
        if m == p.max_age + 1:
            # too old: closed lost this week
            pw = np.zeros(len(idx))
            pl = np.ones(len(idx))
            pa = np.zeros(len(idx))
        else:
            pw, pl, pa = _step_probs(p, quality[idx], stage[idx], wis[idx], max(m - 1, 0), cal.pull[u])
            if m == 0:
                f = first_frac[idx]
                pw, pl, pa = pw * f, pl * f, pa * f
        is_win = draw < pw
        is_loss = ~is_win & (draw < pw + pl)
        is_adv = ~is_win & ~is_loss & (draw < pw + pl + pa)
        stay = ~(is_win | is_loss | is_adv)
        day = week_start + np.floor(rng.random(len(idx)) * ndays).astype(np.int64)
        # wins in a week that straddles the quarter end are pulled in before it
        wq = cal.week_quarter_end[u]
        win_last = np.where((wq >= week_start) & (wq < week_end), wq, week_end)
        win_day = week_start + np.floor(rng.random(len(idx)) * (win_last - week_start + 1)).astype(np.int64)
        closed = is_win | is_loss
        ci = idx[closed]
        open_[ci] = False
        close_step[ci] = m
        won[idx[is_win]] = True
        close_day[ci] = np.where(is_win[closed], win_day[closed], day[closed])
        ai = idx[is_adv]
        stage[ai] += 1
        wis[ai] = 0
        si = idx[stay]
        wis[si] = np.minimum(wis[si] + 1, WIS_CAP)
        adv.append((ai, np.full(len(ai), m), stage[ai].copy(), day[is_adv]))
        still = idx[~closed]
        stage_after[still, m] = stage[still]
        wis_after[still, m] = wis[still]
    cat = [np.concatenate(x) if adv else np.zeros(0, dtype=np.int64) for x in zip(*adv, strict=True)]
    return _Lives(close_step, won, close_day, stage_after, wis_after, *cat)


def _truth(p: SegmentProcess, cal: _Calendar, created: np.ndarray, quality: np.ndarray,
           start_stage: np.ndarray, lives: _Lives, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact P(win), P(win by quarter end), P(win by next quarter end) at every age.

    Backward induction over the weeks left, on the grid of (stage, weeks in stage), for
    blocks of deals at a time. Returns arrays (n, max_age + 1) valued at the deal's realised
    state at the end of each age (NaN where the deal is closed), and P(win) at creation.
    The weekly probabilities are those of :func:`_step_probs`, with its exponentials split
    into a per-deal factor and a per-state factor (the same numbers, computed faster).
    """
    n = len(created)
    u0 = cal.index(created)
    A = p.max_age
    K = WIS_CAP + 1
    w = np.arange(K)
    adv_base = np.array([*p.advance, -np.inf])[:, None]
    win_base = np.array([-np.inf, -np.inf, *p.win])[:, None]
    loss_base = np.array(p.loss)[:, None]
    g_adv = np.exp(adv_base - 0.08 * np.maximum(w - 2, 0))
    g_win = np.broadcast_to(np.exp(win_base), (4, K))
    g_loss = np.exp(loss_base + p.stale_slope * np.maximum(w - p.stale_after, 0))
    stay_to = np.minimum(w + 1, K - 1)
    out_v = np.full((n, A + 1), np.nan)
    out_b1 = np.full((n, A + 1), np.nan)
    out_b2 = np.full((n, A + 1), np.nan)
    first_values = []  # V at age 0 for weeks in stage 0 and 1, per block
    for lo in range(0, n, chunk):
        c = slice(lo, min(lo + chunk, n))
        m = c.stop - c.start
        d_adv = np.exp(B_ADVANCE * quality[c])[:, None, None]
        d_win = np.exp(B_WIN * quality[c])
        d_loss = np.exp(-B_LOSS * quality[c])
        V = np.zeros((m, 4, K))
        B1 = np.zeros((m, 4, K))
        B2 = np.zeros((m, 4, K))
        zero = np.zeros((m, 1, 1))
        rows = np.arange(m)

        def carry(X: np.ndarray, ps: np.ndarray, pa: np.ndarray, zero: np.ndarray = zero) -> np.ndarray:
            nxt = np.concatenate([X[:, 1:, :1], zero], axis=1)
            return ps * X[:, :, stay_to] + pa * nxt

        for j in range(A, -1, -1):
            if j < A:
                u = u0[c] + j + 1
                old = np.exp(p.old_slope * max(j - p.old_after, 0))
                e_adv = d_adv * g_adv
                e_win = (d_win * np.exp(PULL_IN * cal.pull[u]))[:, None, None] * g_win
                e_loss = (d_loss * old)[:, None, None] * g_loss
                ps = 1.0 / (1.0 + e_adv + e_win + e_loss)  # "stay" has logit 0
                pw = e_win * ps
                pa = e_adv * ps
                turn = cal.quarter_turn[u0[c] + j][:, None, None]
                cont_b1 = carry(B1, ps, pa)
                cont_b2 = carry(B2, ps, pa)
                V = pw + carry(V, ps, pa)
                B2 = pw + np.where(turn == 0, cont_b2, cont_b1)
                B1 = np.where(turn == 0, pw + cont_b1, np.where(turn == 1, pw, 0.0))
            open_at = lives.close_step[c] > j
            i = rows[open_at]
            k = lives.stage_after[lo + i, j].astype(np.int64)
            s = lives.wis_after[lo + i, j].astype(np.int64)
            out_v[lo + i, j] = V[i, k, s]
            out_b1[lo + i, j] = B1[i, k, s]
            out_b2[lo + i, j] = B2[i, k, s]
        first_values.append(V[:, :, :2])
    V0 = np.concatenate(first_values) if n else np.zeros((0, 4, 2))
    # the creation step: a partial week from the creation day to the first Sunday
    rows = np.arange(n)
    f = ((cal.sunday[u0] - created) + 1) / 7.0
    k0 = start_stage.astype(np.int64)
    pw, pl, pa = _step_probs(p, quality, k0, np.zeros(n, dtype=np.int64), 0, cal.pull[u0])
    pw, pl, pa = pw * f, pl * f, pa * f
    nxt = np.where(k0 < 3, V0[rows, np.minimum(k0 + 1, 3), 0], 0.0)
    at_creation = pw + pa * nxt + (1.0 - pw - pl - pa) * V0[rows, k0, 1]
    return out_v, out_b1, out_b2, at_creation


# ----------------------------------------------------------------------------------------
# the simulation
# ----------------------------------------------------------------------------------------


def _accounts(rng: np.random.Generator, n: int, segment: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Firmographics; ``segment`` given, the sizes are drawn within it."""
    if segment is None:
        segment = _choice(rng, {s: p.share for s, p in SEGMENT_PROCESSES.items()}, n)
    lo = np.select([segment == "SMB", segment == "Mid-Market"], [20, 200], 2000)
    hi = np.select([segment == "SMB", segment == "Mid-Market"], [199, 1999], 60000)
    employees = np.round(np.exp(rng.uniform(np.log(lo), np.log(hi + 1)))).clip(lo, hi)
    revenue = np.round(employees * 180_000 * np.exp(rng.normal(0, 0.45, n)), -3)
    industry = _choice(rng, INDUSTRIES, n)
    region = _choice(rng, REGIONS, n)
    country = np.array([REGIONS[r][2][i % len(REGIONS[r][2])] for r, i in zip(region, rng.integers(0, 60, n), strict=True)], dtype=object)
    return {"segment": segment, "employees": employees, "annual_revenue": revenue,
            "industry": industry, "region": region, "country": country}


def _sqo_delay_pmf() -> tuple[np.ndarray, np.ndarray, float]:
    """Days lead→meeting and meeting→SQO (support 1..365) and P(sum ≤ SQO window)."""
    days = np.arange(1, 366)
    meet = np.exp(-days / 16.0)
    meet /= meet.sum()
    sqo = np.exp(-days / 9.0)
    sqo /= sqo.sum()
    total = np.convolve(meet, sqo)  # index i ↔ i + 2 days
    within = float(total[: SQO_WINDOW_DAYS - 1].sum())
    return meet, sqo, within


def _leads(rng: np.random.Generator, n: int, first_day: int, last_day: int, n_sdr: int) -> dict[str, np.ndarray]:
    """Leads on BDR lists: attributes, meetings, SQOs and the true P(SQO within the window)."""
    acc_n = max(n // 3, 1)
    acc = _accounts(rng, acc_n)
    acc_of = rng.integers(0, acc_n, n)
    created = rng.integers(first_day, last_day + 1, n)
    source = _choice(rng, LEAD_SOURCES, n)
    has_signal = rng.random(n) < np.where(source == "outbound", 0.33, 0.25)
    signal = np.where(has_signal, _choice(rng, SIGNALS, n), "")
    seniority = _choice(rng, SENIORITY, n)
    function = _choice(rng, FUNCTIONS, n)
    title = np.asarray([_title(s, f) for s, f in zip(seniority, function, strict=True)], dtype=object)
    sdr_skill = rng.normal(0, 0.30, n_sdr)
    sdr = rng.integers(0, n_sdr, n)
    sequence = np.where(signal != "", "signal-personal",
                        np.where(source == "event", "event-follow-up",
                                 np.where(rng.random(n) < 0.5, "cold-6-touch", "cold-9-touch")))
    seg = acc["segment"][acc_of]
    size = np.select([seg == "SMB", seg == "Mid-Market"], [0.0, 0.10], -0.15)
    fit = _effect(acc["industry"][acc_of], INDUSTRIES) + _effect(function, FUNCTIONS)
    sig = has_signal.astype(float)
    meet_logit = (-1.90 + 0.75 * sig + _effect(seniority, SENIORITY, 1) + 0.8 * fit + size
                  + _effect(source, LEAD_SOURCES) + sdr_skill[sdr]
                  + np.where(sequence == "cold-9-touch", 0.10, 0.0) + rng.normal(0, 0.20, n))
    sqo_logit = (-1.30 + 0.90 * sig + _effect(seniority, SENIORITY, 2) + 0.9 * fit
                 + 0.6 * sdr_skill[sdr] + rng.normal(0, 0.20, n))
    dnc = rng.random(n) < 0.012
    p_meet = np.where(dnc, 0.0, _sigmoid(meet_logit))
    p_sqo_meet = _sigmoid(sqo_logit)
    meet_pmf, sqo_pmf, within = _sqo_delay_pmf()
    meets = rng.random(n) < p_meet
    sqos = meets & (rng.random(n) < p_sqo_meet)
    meeting_day = np.where(meets, created + 1 + rng.choice(len(meet_pmf), n, p=meet_pmf), -1)
    sqo_day = np.where(sqos, meeting_day + 1 + rng.choice(len(sqo_pmf), n, p=sqo_pmf), -1)
    prior = rng.random(n) < 0.22
    last_contacted = np.where(prior & ~dnc, created - rng.integers(45, 420, n), -1)
    return {
        "account": acc_of, "created": created, "source": source, "signal": signal,
        "seniority": seniority, "title": title, "sdr": sdr, "sdr_skill": sdr_skill,
        "sequence": sequence, "dnc": dnc, "meeting_day": meeting_day, "sqo_day": sqo_day,
        "last_contacted": last_contacted, "p_sqo": p_meet * p_sqo_meet * within,
        "fit": fit, "accounts": acc,  # type: ignore[dict-item]
    }


def simulate(*, seed: int = 7, n_opportunities: int = 16000, n_leads: int = 60000,
             stale_share: float = REALISTIC_STALE_SHARE, progress: Progress | None = None) -> Simulation:
    """Simulate a CRM export of about ``n_opportunities`` deals and ``n_leads`` list leads.

    About 2.5 years of history end at the export date (2026-11-01, in ``dataset.yaml``).
    The same seed gives the same export and truth.

    Parameters
    ----------
    seed
        Random seed.
    n_opportunities
        About how many opportunities (SQO'd list leads plus inbound, expansion and partner).
    n_leads
        How many list leads.
    stale_share
        Share of all deals that are never closed (default :data:`REALISTIC_STALE_SHARE`, 15%;
        0 = none). Real CRMs hold many deals that quietly died: the rep stopped working them and
        never marked them lost.
        Such a deal is a would-be loss left open: from the week it died it has no activity, no
        stage change and no close-date push, its expected close date drifts into the past, and
        it stays ``open`` in the export for ever (``truth/opportunities`` says ``stale``; its
        snapshots after that week have true probabilities 0). About 10-20% is typical; it
        cannot exceed the share of deals lost.
    progress
        Optional rich progress display to advance.
    """
    task = progress.add_task("Simulating a CRM export", total=7) if progress is not None else None
    root = np.random.SeedSequence(seed)
    r_leads, r_opps, r_life, r_hist, r_act, r_lact, r_misc = (np.random.default_rng(s) for s in root.spawn(7))
    first_day = int(_days(np.array([HISTORY_START.to_datetime64()]))[0])
    export_day = int(_days(np.array([EXPORTED_AT.to_datetime64()]))[0])

    # --- leads and their SQOs ------------------------------------------------------------
    n_sdr = max(4, round(n_leads / 2500))
    L = _leads(r_leads, n_leads, first_day, export_day, n_sdr)
    _tick(progress, task)

    # --- opportunities -----------------------------------------------------------------
    from_lead = np.flatnonzero((L["sqo_day"] >= 0) & (L["sqo_day"] <= export_day))
    n_out = len(from_lead)
    n_other = max(n_opportunities - n_out, round(0.3 * n_opportunities))
    rng = r_opps
    other_source = _choice(rng, {"inbound": 0.55, "expansion": 0.27, "partner": 0.18}, n_other)
    other_acc = _accounts(rng, n_other)
    lacc = L["accounts"]
    la = L["account"][from_lead]
    n = n_out + n_other
    seg = np.concatenate([lacc["segment"][la], other_acc["segment"]])
    industry = np.concatenate([lacc["industry"][la], other_acc["industry"]])
    region = np.concatenate([lacc["region"][la], other_acc["region"]])
    source = np.concatenate([np.full(n_out, "outbound", dtype=object), other_source])
    inbound_signal = np.where(rng.random(n_other) < 0.3, "intent_surge", "")
    signal = np.concatenate([L["signal"][from_lead], np.where(other_source == "inbound", inbound_signal, "")])
    created = np.concatenate([L["sqo_day"][from_lead], rng.integers(first_day, export_day + 1, n_other)])
    account = np.concatenate([la, lacc["segment"].shape[0] + np.arange(n_other)])
    lead_index = np.concatenate([from_lead, np.full(n_other, -1)])
    sdr = np.concatenate([L["sdr"][from_lead], np.where(other_source == "inbound", rng.integers(0, n_sdr, n_other), -1)])
    product = _choice(rng, PRODUCTS, n)
    n_ae = {s: max(3, round(np.sum(seg == s) / 220)) for s in SEGMENTS}
    owner = np.empty(n, dtype=object)
    owner_skill = np.zeros(n)
    ae_offset = 0
    for s in SEGMENTS:
        at = np.flatnonzero(seg == s)
        skill = rng.normal(0, AE_SKILL_SD, n_ae[s])
        skill -= skill.mean()  # a team's average AE is average: keeps rates stable across seeds
        pick = rng.integers(0, n_ae[s], len(at))
        owner[at] = np.array([f"AE-{ae_offset + i + 1:03d}" for i in range(n_ae[s])], dtype=object)[pick]
        owner_skill[at] = skill[pick]
        ae_offset += n_ae[s]
    seg_median = np.array([SEGMENT_PROCESSES[s].amount_median for s in seg])
    amount_z = rng.normal(0, 0.55, n)
    amount = np.round(seg_median * _effect(product, PRODUCTS) * np.exp(amount_z), -2).clip(500, None)
    engagement = rng.normal(0, 1, n) + np.where(source == "inbound", 0.25, 0.0)
    # A next step is recorded far more often on engaged deals: an empty one is a red flag
    # because of what it says about engagement, not a cause of its own. (next_step has no
    # history in the contract, so a model may read it only for the live pipeline.)
    has_next_step = rng.random(n) < _sigmoid(NEXT_STEP_BASE + NEXT_STEP_ENGAGEMENT * engagement)
    next_step = np.where(has_next_step, np.asarray(NEXT_STEPS, dtype=object)[rng.integers(0, len(NEXT_STEPS), n)], "")
    # what the export shows directly: the deal's source, signal, industry and region
    firmographic = (
        _effect(source, {k: (0, v) for k, v in OPP_SOURCES.items()})
        + _effect(signal, SIGNALS)
        + _effect(industry, INDUSTRIES)
        + _effect(region, REGIONS)
    )
    quality = (
        OBSERVED_SCALE * firmographic
        + owner_skill  # seen only through each AE's track record
        - 0.25 * amount_z
        + ENGAGEMENT_WEIGHT * engagement
        + rng.normal(0, HIDDEN_SD, n)
    )
    quality -= QUALITY_CENTRE  # centre: the average deal has quality about zero
    start_u = rng.random(n)
    _tick(progress, task)

    # --- lives, truth --------------------------------------------------------------------
    last_step_day = export_day + 7 * (max(p.max_age for p in SEGMENT_PROCESSES.values()) + 4)
    cal = _Calendar.build(first_day - 14, last_step_day)
    close_step = np.zeros(n, dtype=np.int64)
    won = np.zeros(n, dtype=bool)
    close_day = np.zeros(n, dtype=np.int64)
    start_stage = np.zeros(n, dtype=np.int64)
    p_at_creation = np.zeros(n)
    adv_parts: list[tuple[np.ndarray, ...]] = []
    snap_parts: list[pd.DataFrame] = []
    stage_at: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for s in SEGMENTS:
        p = SEGMENT_PROCESSES[s]
        at = np.flatnonzero(seg == s)
        start_stage[at] = np.searchsorted(np.cumsum(p.start[:2]), start_u[at], side="right")
        lives = _live(p, r_life, cal, created[at], quality[at], start_stage[at])
        v, b1, b2, pc = _truth(p, cal, created[at], quality[at], start_stage[at], lives)
        close_step[at] = lives.close_step
        won[at] = lives.won
        close_day[at] = lives.close_day
        p_at_creation[at] = pc
        stage_at[s] = (at, lives.stage_after)
        adv_parts.append((at[lives.adv_deal], lives.adv_step, lives.adv_stage, lives.adv_day))
        # snapshots: Sundays on which the deal is open at the end of the day, up to export
        ii, jj = np.nonzero(~np.isnan(v))
        as_of = cal.sunday[cal.index(created[at])[ii] + jj]
        keep = as_of <= export_day
        ii, jj, as_of = ii[keep], jj[keep], as_of[keep]
        snap_parts.append(pd.DataFrame({
            "deal": at[ii], "as_of": as_of,
            "stage": np.asarray(STAGES, dtype=object)[lives.stage_after[ii, jj].astype(np.int64)],
            "p_win": v[ii, jj], "p_win_by_quarter_end": b1[ii, jj], "p_win_by_next_quarter_end": b2[ii, jj],
        }))
    _tick(progress, task)

    # --- deals that die quietly: would-be losses never closed in the CRM -----------------
    stale = _stale_deals(seed, won, stale_share)

    # --- history: creation, advances (with amount changes), pushes, close -----------------
    rng = r_hist
    seg_cycle = np.array([SEGMENT_PROCESSES[s].cycle_days for s in seg])
    ecd0 = created + np.maximum(7, np.round(seg_cycle * np.exp(rng.normal(0, 0.35, n)))).astype(np.int64)
    adv_deal, adv_step, adv_stage, adv_day = (np.concatenate(x) for x in zip(*adv_parts, strict=True))
    pushes_deal, pushes_day, pushes_ecd = _pushes(rng, cal, created, close_step, ecd0, engagement)
    fc_by_stage = np.array(["pipeline", "pipeline", "best_case", "commit"], dtype=object)

    def fc_for(stage_idx: np.ndarray) -> np.ndarray:
        out = fc_by_stage[stage_idx].copy()
        noise = rng.random(len(stage_idx))
        out[(stage_idx == 3) & (noise < 0.25)] = "best_case"
        out[(stage_idx == 2) & (noise < 0.35)] = "pipeline"
        return out

    n_adv = len(adv_deal)
    adv_mult = np.where(rng.random(n_adv) < 0.30, np.exp(rng.normal(0, 0.18, n_adv)), 1.0)
    win_mult = np.where(rng.random(n) < 0.25, np.exp(rng.normal(-0.05, 0.12, n)), 1.0)
    ev = pd.DataFrame({
        "deal": np.concatenate([np.arange(n), adv_deal, pushes_deal, np.arange(n)]),
        "day": np.concatenate([created, adv_day, pushes_day, close_day]),
        "seconds": np.concatenate([
            _work_seconds(rng, n, 8.0, 10.0), _work_seconds(rng, n_adv, 10.0, 17.0),
            _work_seconds(rng, len(pushes_deal), 10.0, 17.0), _work_seconds(rng, n, 17.0, 18.9)]),
        "kind": np.concatenate([np.zeros(n), np.ones(n_adv), np.full(len(pushes_deal), 2), np.full(n, 3)]).astype(np.int8),
        "stage": np.concatenate([start_stage, adv_stage, np.full(len(pushes_deal), -1), np.where(won, 4, 5)]).astype(np.int64),
        "mult": np.concatenate([np.ones(n), adv_mult, np.ones(len(pushes_deal)), np.where(won, win_mult, 1.0)]),
        "ecd": np.concatenate([ecd0, np.full(n_adv, -1), pushes_ecd, close_day]).astype(np.int64),
    })
    ev["fc"] = np.concatenate([fc_for(start_stage), fc_for(adv_stage), np.full(len(pushes_deal), None),
                               np.where(won, "closed", "omitted")])
    # creation rows come first in their day and closing rows last (by their hours); an advance
    # and a close never share a week, nor do a push and a close: time order is event order
    if stale.any():  # a stale deal has no closing row: it died without anyone closing it
        ev = ev.loc[~((ev["kind"].to_numpy() == 3) & stale[ev["deal"].to_numpy()])]
    ev = ev.sort_values(["deal", "day", "seconds", "kind"], kind="stable").reset_index(drop=True)
    ev["stage"] = ev["stage"].where(ev["stage"] >= 0).groupby(ev["deal"]).ffill().astype(np.int64)
    ev["fc"] = ev["fc"].groupby(ev["deal"]).ffill()
    ev["ecd"] = ev["ecd"].where(ev["ecd"] >= 0).groupby(ev["deal"]).ffill().astype(np.int64)
    cum = ev["mult"].groupby(ev["deal"]).cumprod()
    ev["amount"] = np.round(amount[ev["deal"].to_numpy()] * cum.to_numpy(), -2).clip(100, None)
    ev["changed_at"] = _as_time(ev["day"].to_numpy(), ev["seconds"].to_numpy())
    all_stages = np.asarray([*STAGES, WON, LOST], dtype=object)
    _tick(progress, task)

    # --- activities --------------------------------------------------------------------
    opp_acts = _opportunity_activities(r_act, cal, seg, created, close_step, close_day, start_stage,
                                       adv_deal, adv_step, engagement)
    lead_acts = _lead_activities(r_lact, L)
    _tick(progress, task)

    # --- the export: everything as known at the end of the export day --------------------
    export_end = _as_time(np.array([export_day + 1]), np.array([0]))[0]
    in_export = created <= export_day
    # number the deals by creation so that ids read in time order
    order = np.lexsort((np.arange(n), created))
    order = order[in_export[order]]
    opp_id = np.empty(n, dtype=object)
    opp_id[order] = np.array([f"OPP-{i + 1:06d}" for i in range(len(order))], dtype=object)
    lead_order = np.lexsort((np.arange(n_leads), L["created"]))
    lead_id = np.empty(n_leads, dtype=object)
    lead_id[lead_order] = np.array([f"L-{i + 1:06d}" for i in range(n_leads)], dtype=object)
    n_lacc = len(lacc["segment"])
    acc_id = np.array([f"ACC-{i + 1:06d}" for i in range(n_lacc + n_other)], dtype=object)
    sdr_names = np.array([f"SDR-{i + 1:02d}" for i in range(n_sdr)], dtype=object)

    hist = ev.loc[ev["changed_at"].to_numpy() < export_end]
    hist = hist.loc[in_export[hist["deal"].to_numpy()]]
    last = hist.groupby("deal").tail(1).set_index("deal")
    closed_by_export = (close_day <= export_day) & ~stale
    o = order
    status = np.where(closed_by_export[o], np.where(won[o], "won", "lost"), "open")
    opportunities = pd.DataFrame({
        "opportunity_id": opp_id[o],
        "account_id": acc_id[account[o]],
        "created_at": _as_date(created[o]),
        "stage": all_stages[last.loc[o, "stage"].to_numpy()],
        "status": status,
        "closed_at": np.where(closed_by_export[o], _as_date(close_day[o]), np.datetime64("NaT", "ns")).astype("datetime64[ns]"),
        "amount": last.loc[o, "amount"].to_numpy(),
        "expected_close_date": _as_date(last.loc[o, "ecd"].to_numpy()),
        "segment": seg[o],
        "source": source[o],
        "owner_id": owner[o],
        "sdr_id": np.where(sdr[o] >= 0, sdr_names[np.maximum(sdr[o], 0)], ""),
        "signal_type": signal[o],
        "lead_id": np.where(lead_index[o] >= 0, lead_id[np.maximum(lead_index[o], 0)], ""),
        "industry": industry[o],
        "region": region[o],
        "product": product[o],
        "next_step": next_step[o],
    })
    stage_history = pd.DataFrame({
        "opportunity_id": opp_id[hist["deal"].to_numpy()],
        "changed_at": hist["changed_at"].to_numpy(),
        "stage": all_stages[hist["stage"].to_numpy()],
        "amount": hist["amount"].to_numpy(),
        "expected_close_date": _as_date(hist["ecd"].to_numpy()),
        "forecast_category": hist["fc"].to_numpy(),
    })
    oa = opp_acts.loc[(opp_acts["occurred_at"].to_numpy() < export_end) & in_export[opp_acts["deal"].to_numpy()]]
    la_ = lead_acts.loc[lead_acts["occurred_at"].to_numpy() < export_end]
    # activities in time order (ties: by opportunity, then lead, in id order), sorted on numbers
    deal_rank = np.empty(n, dtype=np.int64)
    deal_rank[order] = np.arange(len(order))
    lead_rank = np.empty(n_leads, dtype=np.int64)
    lead_rank[lead_order] = np.arange(n_leads)
    act_deal = np.concatenate([oa["deal"].to_numpy(), np.full(len(la_), -1)])
    act_lead = np.concatenate([np.full(len(oa), -1), la_["lead"].to_numpy()])
    act_time = np.concatenate([oa["occurred_at"].to_numpy(), la_["occurred_at"].to_numpy()])
    tie = np.where(act_deal >= 0, deal_rank[np.maximum(act_deal, 0)], n + lead_rank[np.maximum(act_lead, 0)])
    ao = np.lexsort((tie, act_time))
    act_deal, act_lead = act_deal[ao], act_lead[ao]
    activities = pd.DataFrame({
        "opportunity_id": np.where(act_deal >= 0, opp_id[np.maximum(act_deal, 0)], ""),
        "lead_id": np.where(act_lead >= 0, lead_id[np.maximum(act_lead, 0)], ""),
        "occurred_at": act_time[ao],
        "type": np.concatenate([oa["type"].to_numpy(), la_["type"].to_numpy()])[ao],
        "direction": np.concatenate([oa["direction"].to_numpy(), la_["direction"].to_numpy()])[ao],
    })
    lo = lead_order
    la_acc = L["account"][lo]
    meet_known = (L["meeting_day"][lo] >= 0) & (L["meeting_day"][lo] <= export_day)
    sqo_known = (L["sqo_day"][lo] >= 0) & (L["sqo_day"][lo] <= export_day)
    leads = pd.DataFrame({
        "lead_id": lead_id[lo],
        "account_id": acc_id[la_acc],
        "created_at": _as_date(L["created"][lo]),
        "sqo_at": np.where(sqo_known, _as_date(L["sqo_day"][lo]), np.datetime64("NaT", "ns")).astype("datetime64[ns]"),
        "meeting_at": np.where(meet_known, _as_date(L["meeting_day"][lo]), np.datetime64("NaT", "ns")).astype("datetime64[ns]"),
        "employees": lacc["employees"][la_acc].astype(float),
        "annual_revenue": lacc["annual_revenue"][la_acc].astype(float),
        "industry": lacc["industry"][la_acc],
        "region": lacc["region"][la_acc],
        "country": lacc["country"][la_acc],
        "source": L["source"][lo],
        "signal_type": L["signal"][lo],
        "title": L["title"][lo],
        "seniority": L["seniority"][lo],
        "sdr_id": sdr_names[L["sdr"][lo]],
        "sequence": L["sequence"][lo],
        "do_not_contact": pd.array(L["dnc"][lo], dtype="boolean"),
        "last_contacted_at": np.where(L["last_contacted"][lo] >= 0, _as_date(L["last_contacted"][lo]),
                                      np.datetime64("NaT", "ns")).astype("datetime64[ns]"),
    })
    _tick(progress, task)

    config = DatasetConfig(
        exported_at=EXPORTED_AT,
        fiscal_year_start_month=FISCAL_YEAR_START_MONTH,
        sqo_window_days=SQO_WINDOW_DAYS,
        stages=[*(StageDef(s, pr) for s, pr in zip(STAGES, STAGE_PROBABILITIES, strict=True)),
                StageDef(WON, 1.0, won=True), StageDef(LOST, 0.0, lost=True)],
    )
    tables = {}
    for name, df in (("opportunities", opportunities), ("stage_history", stage_history),
                     ("activities", activities), ("leads", leads)):
        typed, problems = coerce_table(df, name, Path(f"{name}.csv"))
        if problems:  # a bug in the simulator, not bad input
            raise AssertionError("; ".join(p.render() for p in problems))
        tables[name] = typed
    export = Export(**tables, config=config)

    # --- truth ---------------------------------------------------------------------------
    if stale.any():
        snap_parts.append(_stale_snapshots(cal, start_stage, close_day, stale, stage_at, export_day))
    snaps = pd.concat(snap_parts, ignore_index=True)
    snaps = snaps.loc[in_export[snaps["deal"].to_numpy()]]
    snaps = snaps.iloc[np.lexsort((snaps["as_of"].to_numpy(), deal_rank[snaps["deal"].to_numpy()]))]
    snaps.insert(0, "opportunity_id", opp_id[snaps["deal"].to_numpy()])
    snaps["as_of"] = _as_date(snaps["as_of"].to_numpy())
    snaps = snaps.drop(columns="deal").reset_index(drop=True)
    truth_opps = pd.DataFrame({
        "opportunity_id": opp_id[o],
        "segment": seg[o],
        "p_win_at_creation": p_at_creation[o],
        "quality": quality[o],
        "engagement": engagement[o],
        "final_status": np.where(won[o], "won", np.where(stale[o], "stale", "lost")),
        # for a stale deal: the day it died (nothing is recorded after it)
        "final_closed_at": _as_date(close_day[o]),
    })
    truth_leads = pd.DataFrame({"lead_id": lead_id[lo], "p_sqo": L["p_sqo"][lo]})
    for df in (snaps, truth_opps, truth_leads):  # text as the export's text: pandas strings
        for col in df.columns:
            if df[col].dtype == object or pd.api.types.is_string_dtype(df[col]):
                df[col] = df[col].astype("string")
    _tick(progress, task)
    return Simulation(export=export, truth={"opportunities": truth_opps,
                                           "opportunity_snapshots": snaps, "leads": truth_leads})


def _stale_deals(seed: int, won: np.ndarray, stale_share: float) -> np.ndarray:
    """Which deals are never closed: a random ``stale_share`` of all deals, taken among losses.

    A stream of its own (not the simulation's), so that with ``stale_share=0`` the export is
    the same as without the option, and with it everything but these deals is unchanged.
    """
    n = len(won)
    if not 0.0 <= stale_share < 1.0:
        raise ValueError(f"stale_share must be in [0, 1), got {stale_share}")
    if stale_share == 0.0 or n == 0:
        return np.zeros(n, dtype=bool)
    lost = ~won
    share_of_losses = min(1.0, stale_share * n / max(int(lost.sum()), 1))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57A1E]))
    return lost & (rng.random(n) < share_of_losses)


def _stale_snapshots(cal: _Calendar, start_stage: np.ndarray, died: np.ndarray, stale: np.ndarray,
                     stage_at: dict[str, tuple[np.ndarray, np.ndarray]], export_day: int) -> pd.DataFrame:
    """Truth rows of stale deals on the Sundays after they died, up to the export: all zero."""
    deals, days, stages = [], [], []
    for at, stage_after in stage_at.values():
        for j in np.flatnonzero(stale[at]):
            d = at[j]
            first = cal.index(np.array([died[d]]))[0]
            sundays = cal.sunday[first:]
            sundays = sundays[(sundays >= died[d]) & (sundays <= export_day)]
            if not len(sundays):
                continue
            open_steps = stage_after[j][stage_after[j] >= 0]
            last = int(open_steps[-1]) if len(open_steps) else int(start_stage[d])
            deals.append(np.full(len(sundays), d))
            days.append(sundays)
            stages.append(np.full(len(sundays), last))
    if not deals:
        return pd.DataFrame(columns=["deal", "as_of", "stage", "p_win", "p_win_by_quarter_end",
                                     "p_win_by_next_quarter_end"])
    k = np.concatenate(stages)
    z = np.zeros(len(k))
    return pd.DataFrame({"deal": np.concatenate(deals), "as_of": np.concatenate(days),
                         "stage": np.asarray(STAGES, dtype=object)[k],
                         "p_win": z, "p_win_by_quarter_end": z, "p_win_by_next_quarter_end": z})


def _pushes(rng: np.random.Generator, cal: _Calendar, created: np.ndarray, close_step: np.ndarray,
            ecd0: np.ndarray, engagement: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Close-date pushes: when the expected close date has passed, and slips of disengaged deals.

    Pushes happen only in weeks a deal survives (it is still open at the end of the week).
    """
    u0 = cal.index(created)
    ecd = ecd0.copy()
    slip = 0.035 * np.exp(-0.6 * engagement)
    deals, days, values = [], [], []
    for m in range(int(close_step.max())):
        idx = np.flatnonzero(close_step > m)
        if not len(idx):
            break
        week_end = cal.sunday[u0[idx] + m]
        week_start = np.maximum(week_end - 6, created[idx])
        passed = ecd[idx] < week_end
        push = passed & (rng.random(len(idx)) < 0.75)
        slips = ~passed & (rng.random(len(idx)) < slip[idx])
        any_ = push | slips
        lo = np.where(push, np.maximum(week_start, ecd[idx] + 1), week_start)
        day = lo + np.floor(rng.random(len(idx)) * (week_end - lo + 1)).astype(np.int64)
        new = np.where(push, day + 7 + rng.integers(0, 35, len(idx)), ecd[idx] + 14 + rng.integers(0, 40, len(idx)))
        i = idx[any_]
        ecd[i] = new[any_]
        deals.append(i)
        days.append(day[any_])
        values.append(new[any_])
    if not deals:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(deals), np.concatenate(days), np.concatenate(values)


ACTIVITY_TYPES = np.array(["email", "call", "meeting", "other"], dtype=object)
#: activity type mix by stage (email, call, meeting, other)
TYPE_MIX = np.array([
    [0.55, 0.25, 0.10, 0.10],
    [0.50, 0.22, 0.18, 0.10],
    [0.48, 0.22, 0.20, 0.10],
    [0.45, 0.25, 0.22, 0.08],
])
STAGE_ACTIVITY = np.array([0.85, 1.0, 1.15, 1.25])


def _opportunity_activities(rng: np.random.Generator, cal: _Calendar, seg: np.ndarray, created: np.ndarray,
                            close_step: np.ndarray, close_day: np.ndarray, start_stage: np.ndarray,
                            adv_deal: np.ndarray, adv_step: np.ndarray, engagement: np.ndarray) -> pd.DataFrame:
    """Emails, calls and meetings of each deal: a Poisson process whose weekly rate depends on
    the deal's engagement and its stage at the start of the week (never on what comes later)."""
    n = len(created)
    u0 = cal.index(created)
    # exp(a·e - a²/2) has mean one over deals: the segment rate is the average deal's rate
    level = np.exp(ACTIVITY_ENGAGEMENT * engagement - ACTIVITY_ENGAGEMENT**2 / 2)
    base = np.array([SEGMENT_PROCESSES[s].activity_rate for s in seg]) * level
    # stage at the start of each step = start stage + advances in earlier steps
    n_steps = close_step + 1
    deal = np.repeat(np.arange(n), n_steps)
    step = np.arange(len(deal)) - np.repeat(np.cumsum(n_steps) - n_steps, n_steps)
    adv_count = np.zeros(len(deal), dtype=np.int64)
    row_of = np.cumsum(n_steps) - n_steps
    np.add.at(adv_count, row_of[adv_deal] + adv_step + 1, 1)
    adv_count[row_of] = 0  # step 0 starts at the start stage (advances in the last step spill nowhere)
    adv_before = np.cumsum(adv_count) - np.repeat(np.cumsum(adv_count)[row_of] - adv_count[row_of], n_steps)
    stage = np.minimum(start_stage[deal] + adv_before, 3)
    week_end = cal.sunday[u0[deal] + step]
    start = np.maximum(week_end - 6, created[deal])
    end = np.where(step == close_step[deal], close_day[deal], week_end)
    ndays = end - start + 1
    lam = base[deal] * STAGE_ACTIVITY[stage] * ndays / 7.0
    count = rng.poisson(lam)
    row = np.repeat(np.arange(len(deal)), count)
    day = start[row] + np.floor(rng.random(len(row)) * ndays[row]).astype(np.int64)
    # the creation day: discovery call and follow-ups, more of them for engaged buyers
    burst = rng.poisson(CREATION_ACTIVITIES * level)
    first = np.repeat(row_of, burst)
    row = np.concatenate([row, first])
    day = np.concatenate([day, created[deal[first]]])
    d = deal[row]
    cum = TYPE_MIX.cumsum(axis=1)[stage[row]]
    kind = (rng.random(len(row))[:, None] > cum).sum(axis=1).clip(0, 3)
    p_in = _sigmoid(-0.7 + 0.5 * engagement[d])
    direction = np.where(rng.random(len(row)) < p_in, "inbound", "outbound")
    direction = np.where(kind == 2, "outbound", direction)
    return pd.DataFrame({"deal": d, "occurred_at": _as_time(day, _work_seconds(rng, len(row), 7.5, 19.0)),
                         "type": ACTIVITY_TYPES[kind], "direction": direction})


def _lead_activities(rng: np.random.Generator, L: dict[str, np.ndarray]) -> pd.DataFrame:
    """The BDR sequence: outbound touches until a meeting is booked, a reply, the meeting."""
    contacted = np.flatnonzero(~L["dnc"])
    touches = 3 + rng.poisson(np.where(L["sequence"][contacted] == "cold-9-touch", 4.0, 2.5))
    lead = np.repeat(contacted, touches)
    offset = np.floor(rng.random(len(lead)) * 24).astype(np.int64)
    day = L["created"][lead] + offset
    meet = L["meeting_day"][lead]
    keep = (meet < 0) | (day < meet)
    lead, day = lead[keep], day[keep]
    kind = np.where(rng.random(len(lead)) < 0.7, 0, np.where(rng.random(len(lead)) < 0.85, 1, 3))
    met = np.flatnonzero(L["meeting_day"] >= 0)
    reply_day = np.maximum(L["meeting_day"][met] - rng.integers(0, 3, len(met)), L["created"][met])
    lead_all = np.concatenate([lead, met, met])
    day_all = np.concatenate([day, reply_day, L["meeting_day"][met]])
    kind_all = np.concatenate([kind, np.zeros(len(met), np.int64), np.full(len(met), 2)])
    direction = np.concatenate([np.full(len(lead), "outbound"), np.full(len(met), "inbound"), np.full(len(met), "outbound")])
    secs = np.concatenate([_work_seconds(rng, len(lead)), _work_seconds(rng, len(met), 7.0, 11.0),
                           _work_seconds(rng, len(met), 11.0, 17.0)])
    return pd.DataFrame({"lead": lead_all, "occurred_at": _as_time(day_all, secs),
                         "type": ACTIVITY_TYPES[kind_all], "direction": direction})


# ----------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------


def write_simulation(sim: Simulation, out: Path, *, fmt: str = "csv") -> None:
    """Write the export (contract layout + ``dataset.yaml``) and ``truth/<name>.<fmt>``."""
    out = Path(out)
    write_export(sim.export, out, fmt=fmt)
    for name, df in sim.truth.items():
        write_table(df, out / "truth" / f"{name}.{fmt}")


def quarter_end_rush(export: Export, *, days: int = 14) -> dict[str, float]:
    """How much the quarter end pulls wins in: the share of won deals closed in the last
    ``days`` days of their fiscal quarter, beside the share a uniform calendar would give.

    Returns
    -------
    dict
        ``wins``, ``share_in_last_days`` (observed), ``uniform_share`` (the last ``days`` days'
        share of the calendar days those quarters hold) and ``lift`` (observed / uniform).
    """
    opps = export.opportunities
    if opps is None:
        raise ValueError("the export has no opportunities")
    won = opps.loc[(opps["status"] == "won") & opps["closed_at"].notna(), "closed_at"]
    day = _days(won.to_numpy(dtype="datetime64[ns]"))
    q_end = _quarter_end_fy(day, export.config.fiscal_year_start_month)
    observed = float(np.mean(q_end - day < days)) if len(day) else float("nan")
    q_len = q_end - _quarter_end_fy(q_end - 100, export.config.fiscal_year_start_month)
    uniform = float(np.mean(days / q_len)) if len(day) else float("nan")
    return {
        "wins": float(len(day)),
        "share_in_last_days": observed,
        "uniform_share": uniform,
        "lift": observed / uniform if uniform else float("nan"),
    }


def _quarter_end_fy(days: np.ndarray, fiscal_year_start_month: int) -> np.ndarray:
    """Last day of the fiscal quarter containing each day, for any fiscal year start."""
    month = days.astype("datetime64[D]").astype("datetime64[M]")
    m = month.astype(np.int64) % 12 + 1
    into = (m - fiscal_year_start_month) % 3
    end = month + (3 - into).astype("timedelta64[M]")
    return end.astype("datetime64[D]").astype(np.int64) - 1


def describe(sim: Simulation) -> str:
    """One line: counts, date range and win rate of the export."""
    e = sim.export
    opps = e.opportunities
    leads = e.leads
    assert opps is not None and leads is not None
    decided = opps["status"].isin(["won", "lost"])
    win_rate = float((opps["status"] == "won").sum() / max(int(decided.sum()), 1))
    n_acts = 0 if e.activities is None else len(e.activities)
    first = opps["created_at"].min().date().isoformat()
    return (f"{len(opps):,} opportunities ({int((opps['status'] == 'open').sum()):,} open), "
            f"{len(leads):,} leads, {n_acts:,} activities, {first} to "
            f"{e.exported_at.date().isoformat()}, win rate {win_rate:.1%}")
