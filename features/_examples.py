"""Tiny hand-made CRM exports for tests and examples (not the simulator: no realism intended).

``example_export(randint, ...)`` draws every choice through ``randint(lo, hi)`` (inclusive), so
the same builder serves seeded numpy randomness (:func:`random_export`) and hypothesis
strategies (``draw(st.integers(lo, hi))``), which can then shrink a failing export.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from features.io import DatasetConfig, Export, StageDef

STAGES = ["Discovery", "Solution", "Proposal", "Negotiation"]
START = pd.Timestamp("2025-01-01")
EXPORTED_AT = pd.Timestamp("2025-12-31")
SPAN_DAYS = int((EXPORTED_AT - START).days)


def _config(declared_stages: bool, extras: bool) -> DatasetConfig:
    stages = []
    if declared_stages:
        stages = [
            StageDef(name=s, probability=p)
            for s, p in zip(STAGES, (0.1, 0.25, 0.5, 0.75), strict=True)
        ]
        stages += [StageDef("Closed Won", 1.0, won=True), StageDef("Closed Lost", 0.0, lost=True)]
    features = {"opportunities": ["competitor"], "leads": ["landing_page"]} if extras else {}
    return DatasetConfig(
        exported_at=EXPORTED_AT,
        fiscal_year_start_month=2,
        sqo_window_days=60,
        stages=stages,
        features=features,
    )


def example_export(
    randint: Callable[[int, int], int],
    *,
    n_opportunities: int = 8,
    n_leads: int = 10,
    history: bool = True,
    activities: bool = True,
    declared_stages: bool = True,
    extras: bool = True,
) -> Export:
    """A small export with deals, stage history, activities and leads at random dates in 2025.

    Exported at the end of 2025-12-31 (``dataset.yaml``: fiscal year from February, SQO window
    60 days). Accounts, owners and SDRs come from small pools so that rates and account
    history have something to count.
    """
    opp_rows: list[dict[str, Any]] = []
    hist_rows: list[tuple[Any, ...]] = []
    act_rows: list[tuple[Any, ...]] = []
    lead_rows: list[dict[str, Any]] = []
    for i in range(n_opportunities):
        created = START + pd.Timedelta(days=randint(0, SPAN_DAYS - 5))
        outcome = randint(0, 2)  # 0 open, 1 won, 2 lost
        life = randint(0, 200)
        closed = created + pd.Timedelta(days=life)
        if outcome == 0 or closed > EXPORTED_AT:
            status, closed_at = "open", pd.NaT
            end = EXPORTED_AT
        else:
            status, closed_at = ("won", "lost")[outcome - 1], closed
            end = closed
        stage_i = randint(0, 1)
        amount = float(randint(1, 50) * 1000)
        ecd = created + pd.Timedelta(days=randint(10, 120))
        category = ["pipeline", "best_case", "commit"][randint(0, 2)]
        t = created + pd.Timedelta(hours=randint(8, 18))
        hist_rows.append((f"O{i}", t, STAGES[stage_i], amount, ecd, category))
        for _ in range(randint(0, 4)):
            t = t + pd.Timedelta(hours=randint(1, 24 * 40))
            if t.normalize() > end:
                break
            what = randint(0, 3)
            if what == 0:
                stage_i = max(0, min(3, stage_i + (1 if randint(0, 3) else -1)))
            elif what == 1:
                amount = float(randint(1, 50) * 1000)
            elif what == 2:
                ecd = ecd + pd.Timedelta(days=randint(-20, 45))
            else:
                category = ["pipeline", "best_case", "commit", "omitted"][randint(0, 3)]
            # empty cells mean "unchanged", as some CRMs write them
            blank = randint(0, 3) == 0
            hist_rows.append(
                (
                    f"O{i}",
                    t,
                    STAGES[stage_i],
                    np.nan if blank and what != 1 else amount,
                    pd.NaT if blank and what != 2 else ecd,
                    None if blank and what != 3 else category,
                )
            )
        stage = STAGES[stage_i]
        if status != "open":
            stage = "Closed Won" if status == "won" else "Closed Lost"
            hist_rows.append(
                (
                    f"O{i}",
                    closed_at + pd.Timedelta(hours=17),
                    stage,
                    amount,
                    ecd,
                    "closed" if status == "won" else "omitted",
                )
            )
        for _ in range(randint(0, 5)):
            when = created + pd.Timedelta(
                hours=randint(-48, 24 * max(1, int((end - created).days) + 1) - 1)
            )
            if when.normalize() > end:
                continue
            act_rows.append(
                (
                    f"O{i}",
                    None,
                    when,
                    ["email", "call", "meeting", "other"][randint(0, 3)],
                    ["inbound", "outbound", None][randint(0, 2)],
                )
            )
        opp_rows.append(
            {
                "opportunity_id": f"O{i}",
                "account_id": f"A{randint(0, 4)}",
                "created_at": created,
                "stage": stage,
                "status": status,
                "closed_at": closed_at,
                "amount": amount,
                "expected_close_date": ecd,
                "segment": ["SMB", "Mid-Market", "Enterprise"][randint(0, 2)],
                "source": ["outbound", "inbound", "partner"][randint(0, 2)],
                "owner_id": [f"AE{randint(0, 2)}", None][int(randint(0, 9) == 0)],
                "sdr_id": f"SDR{randint(0, 2)}",
                "signal_type": ["funding", "hiring", None][randint(0, 2)],
                "lead_id": f"L{randint(0, max(0, n_leads - 1))}"
                if n_leads and randint(0, 1)
                else None,
                "industry": ["software", "retail"][randint(0, 1)],
                "region": ["NA", "EMEA"][randint(0, 1)],
                "product": ["core", "plus"][randint(0, 1)],
                "next_step": ["demo on Tuesday", None][randint(0, 1)],
                "competitor": ["none", "acme", None][randint(0, 2)],
            }
        )
    for j in range(n_leads):
        created = START + pd.Timedelta(days=randint(0, SPAN_DAYS))
        sqo_days = randint(0, 120)
        sqo = created + pd.Timedelta(days=sqo_days) if randint(0, 2) == 0 else pd.NaT
        if pd.notna(sqo) and sqo > EXPORTED_AT:
            sqo = pd.NaT
        meeting = created + pd.Timedelta(days=randint(0, 30)) if randint(0, 1) else pd.NaT
        if pd.notna(meeting) and meeting > EXPORTED_AT:
            meeting = pd.NaT
        contacted = created + pd.Timedelta(days=randint(-60, 60)) if randint(0, 1) else pd.NaT
        if pd.notna(contacted) and contacted > EXPORTED_AT:
            contacted = pd.NaT
        lead_rows.append(
            {
                "lead_id": f"L{j}",
                "account_id": f"A{randint(0, 4)}",
                "created_at": created,
                "sqo_at": sqo,
                "meeting_at": meeting,
                "employees": float(randint(5, 5000)),
                "annual_revenue": float(randint(0, 100) * 1e5) if randint(0, 4) else np.nan,
                "industry": ["software", "retail", None][randint(0, 2)],
                "region": ["NA", "EMEA"][randint(0, 1)],
                "country": ["US", "DE", "FR"][randint(0, 2)],
                "source": ["outbound", "inbound"][randint(0, 1)],
                "signal_type": ["funding", "hiring", None][randint(0, 2)],
                "title": ["VP Sales", "Head of IT", "Marketing Manager", "CFO", "Engineer", None][
                    randint(0, 5)
                ],
                "seniority": ["vp", "director", "manager", "ic"][randint(0, 3)],
                "sdr_id": f"SDR{randint(0, 2)}",
                "sequence": ["seq-a", "seq-b"][randint(0, 1)],
                "last_contacted_at": contacted,
                "landing_page": ["pricing", "blog"][randint(0, 1)],
            }
        )
        for _ in range(randint(0, 2)):
            when = created + pd.Timedelta(hours=randint(0, 24 * 30))
            if when.normalize() <= EXPORTED_AT:
                act_rows.append(
                    (
                        None,
                        f"L{j}",
                        when,
                        ["email", "call"][randint(0, 1)],
                        ["inbound", "outbound"][randint(0, 1)],
                    )
                )
    return _assemble(
        opp_rows,
        hist_rows,
        act_rows,
        lead_rows,
        history=history,
        activities=activities,
        declared_stages=declared_stages,
        extras=extras,
    )


def _assemble(
    opp_rows: list,
    hist_rows: list,
    act_rows: list,
    lead_rows: list,
    *,
    history: bool,
    activities: bool,
    declared_stages: bool,
    extras: bool,
) -> Export:
    opps = pd.DataFrame(opp_rows)
    if not len(opps):
        opps = pd.DataFrame(
            columns=[
                "opportunity_id",
                "account_id",
                "created_at",
                "stage",
                "status",
                "closed_at",
                "amount",
                "expected_close_date",
            ]
        )
    if not extras and "competitor" in opps.columns:
        opps = opps.drop(columns="competitor")
    hist = pd.DataFrame(
        hist_rows,
        columns=[
            "opportunity_id",
            "changed_at",
            "stage",
            "amount",
            "expected_close_date",
            "forecast_category",
        ],
    )
    acts = pd.DataFrame(
        act_rows, columns=["opportunity_id", "lead_id", "occurred_at", "type", "direction"]
    )
    leads = pd.DataFrame(lead_rows)
    if len(leads) and not extras:
        leads = leads.drop(columns="landing_page")
    return Export(
        opportunities=typed(opps),
        stage_history=typed(hist) if history else None,
        activities=typed(acts) if activities else None,
        leads=typed(leads) if len(leads) else None,
        config=_config(declared_stages, extras),
    )


_DATES = {
    "created_at",
    "closed_at",
    "expected_close_date",
    "changed_at",
    "occurred_at",
    "sqo_at",
    "meeting_at",
    "last_contacted_at",
}
_NUMBERS = {"amount", "employees", "annual_revenue"}


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """Give a hand-made table the dtypes :func:`features.io.read_export` produces."""
    out = df.copy()
    for name in out.columns:
        if name in _DATES:
            out[name] = pd.to_datetime(out[name]).astype("datetime64[ns]")
        elif name in _NUMBERS:
            out[name] = out[name].astype("float64")
        elif name in ("is_sqo", "do_not_contact"):
            out[name] = out[name].astype("boolean")
        else:
            out[name] = out[name].astype("string")
    return out


def random_export(seed: int = 0, **options: object) -> Export:
    """:func:`example_export` with seeded numpy randomness."""
    rng = np.random.default_rng(seed)

    def randint(lo: int, hi: int) -> int:
        return int(rng.integers(lo, hi + 1))

    return example_export(randint, **options)  # type: ignore[arg-type]
