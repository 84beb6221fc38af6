"""A request of a few leads is scored from plain arrays (``serving.scoring._score_few_leads``,
``serving.lead_list.apply_few_rules``): the very list, reasons and summary the whole-list way
gives, whatever the leads and the rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from features import lead
from features.io import Export
from models.sqo_likelihood import SQOLikelihoodModel
from pipecast.config import Settings
from serving import lead_list, scoring, service
from serving.champions import Champion
from serving.lead_list import ListRules, Tiering
from serving.store import Store, lead_scores
from tests.serving.conftest import fit_small_sqo_model


@pytest.fixture(scope="module")
def sqo_model(small_export: Export) -> SQOLikelihoodModel:
    return fit_small_sqo_model(
        small_export,
        n_estimators=60,
        learning_rate=0.1,
        min_child_samples=50,
        calibration="none",
    )


def _leads(export: Export, rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Leads of the export and new ones: missing values, categories never seen, several leads
    of one account, do-not-contact yes / no / unknown, contacts before and after the day."""
    pool = export.leads
    assert pool is not None
    rows = pool.iloc[rng.choice(len(pool), size=n, replace=False)].reset_index(drop=True)
    rows = rows.drop(columns=[c for c in ("sqo_at", "is_sqo", "meeting_at") if c in rows])
    ids = rows["lead_id"].astype("string").to_numpy(dtype=object)
    new = rng.random(n) < 0.4
    ids[new] = [f"NEW-{rng.integers(10**9)}" for _ in range(int(new.sum()))]
    rows["lead_id"] = pd.array(ids, dtype="string")
    account = rows["account_id"].astype("string").to_numpy(dtype=object, na_value=None)
    pick = rng.random(n)
    account[pick < 0.15] = None
    account[(pick >= 0.15) & (pick < 0.5)] = account[0] if n > 1 else "ACC-unseen"
    rows["account_id"] = pd.array(account, dtype="string")
    for column in ("industry", "source", "sdr_id", "title"):
        values = rows[column].astype("string").to_numpy(dtype=object, na_value=None)
        pick = rng.random(n)
        values[pick < 0.15] = None
        values[(pick >= 0.15) & (pick < 0.3)] = f"unseen {column}"
        rows[column] = pd.array(values, dtype="string")
    employees = rows["employees"].to_numpy(dtype=np.float64, na_value=np.nan).copy()
    employees[rng.random(n) < 0.2] = np.nan
    rows["employees"] = employees
    dnc = rng.choice(np.array([True, False, None], dtype=object), size=n, p=[0.25, 0.6, 0.15])
    rows["do_not_contact"] = pd.array(dnc.tolist(), dtype="boolean")
    contacted = rows["last_contacted_at"].to_numpy(dtype="datetime64[ns]").copy()
    contacted[rng.random(n) < 0.3] = np.datetime64("2026-06-25T10:00:00", "ns")
    contacted[rng.random(n) < 0.1] = np.datetime64("2027-01-01T00:00:00", "ns")
    rows["last_contacted_at"] = contacted
    if rng.random() < 0.3:
        # two leads of the same probability: ties keep the list's order
        rows.iloc[-1, 1:] = rows.iloc[0, 1:]
    return rows


RULES = [
    ListRules(),
    ListRules(include_do_not_contact=True),
    ListRules(recontact_days=10),
    ListRules(skip_open_accounts=True, skip_customers=True),
    ListRules(max_per_account=1),
    ListRules(top=2, max_per_account=2),
    ListRules(capacity_each=1),
    ListRules(bdr_capacity={"SDR-01": 1, "SDR-02": 2, "SDR-X": 0}),
    ListRules(tiers=Tiering(by="probability", cuts=(0.3, 0.2, 0.1))),
]


def _score(
    model: Any, leads: pd.DataFrame, export: Export | None, rules: ListRules, day: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    return scoring.score_lead_list(
        model, leads, model_version="7", as_of=day, history=export, rules=rules
    )


@pytest.mark.parametrize("day", ["2026-07-01", "2025-10-15"])
def test_a_few_leads_are_scored_as_the_whole_list_way_scores_them(
    small_export: Export, sqo_model: SQOLikelihoodModel, day: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(21)
    compared = excluded = reasons = 0
    for trial in range(90):
        n = int(rng.choice([1, 1, 2, 3, 4, 7, 16]))
        leads = _leads(small_export, rng, n)
        rules = RULES[trial % len(RULES)]
        # the export as history, or the list as its own (then no account rules can run)
        export = small_export if trial % 5 else None
        if export is None and rules.needs_accounts():
            rules = ListRules()
        try:
            few = _score(sqo_model, leads, export, rules, day)
        except Exception as exc:  # the whole-list way must refuse it alike
            with monkeypatch.context() as m:
                m.setattr(scoring, "FEW_ROWS", 0)
                with pytest.raises(type(exc), match=None) as whole_exc:
                    _score(sqo_model, leads, export, rules, day)
            assert str(whole_exc.value) == str(exc)
            continue
        with monkeypatch.context() as m:
            m.setattr(scoring, "FEW_ROWS", 0)
            m.setattr(lead_list, "FEW_ROWS", 0)
            m.setattr(lead, "FEW_LEADS", 0)
            whole = _score(sqo_model, leads, export, rules, day)
        pd.testing.assert_frame_equal(few[0], whole[0], check_exact=True)
        assert few[1] == whole[1]
        compared += n
        excluded += int(few[0]["excluded_reason"].notna().sum())
        reasons += int((few[0]["reasons"] != "").sum())
    # varied enough to mean something: hundreds of leads, some excluded, most explained
    assert compared >= 300 and excluded >= 30 and reasons >= compared // 2


def test_the_rules_alone_give_the_frame_way_answer() -> None:
    rng = np.random.default_rng(5)
    day = pd.Timestamp("2026-07-01")
    for trial in range(300):
        n = int(rng.integers(1, 17))
        p = rng.choice([0.05, 0.1, 0.2, 0.4, np.nan], size=n)
        columns: dict[str, Any] = {
            "lead_id": [f"L{i}" for i in range(n)],
            "sqo_probability": p.astype(np.float64),
            "account_id": [rng.choice(np.array(["A", "B", None], dtype=object)) for _ in range(n)],
            "sdr_id": [rng.choice(np.array(["S1", "S2", None], dtype=object)) for _ in range(n)],
            "do_not_contact": rng.random(n) < 0.2,
            "account_open_opportunities": rng.choice([0.0, 1.0, np.nan], size=n),
            "account_won_opportunities": rng.choice([0.0, 2.0, np.nan], size=n),
            "last_contacted_at": np.array(
                [rng.choice(["2026-06-28", "2026-03-01", "NaT"]) for _ in range(n)],
                dtype="datetime64[ns]",
            ),
        }
        rules = RULES[trial % len(RULES)]
        frame = pd.DataFrame(
            {
                k: pd.array(v, dtype="string") if isinstance(v, list) else v
                for k, v in columns.items()
            }
        )
        try:
            expected, expected_summary = lead_list.apply_list_rules(frame, rules=rules, as_of=day)
        except Exception as exc:
            with pytest.raises(type(exc)) as got:
                lead_list.apply_few_rules(columns, rules=rules, as_of=day)
            assert str(got.value) == str(exc)
            continue
        ranked, summary = lead_list.apply_few_rules(columns, rules=rules, as_of=day)
        got = pd.DataFrame(
            {
                k: pd.array(v, dtype="string") if isinstance(v, list) else v
                for k, v in ranked.items()
            }
        )
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
        # NaN probabilities give NaN in the summary too: compared as JSON text
        assert json.dumps(summary, sort_keys=True) == json.dumps(expected_summary, sort_keys=True)


def _stored(store: Store) -> list[tuple[Any, ...]]:
    columns = [c for c in lead_scores.c if c.name not in ("id", "batch_id")]
    with store.engine.connect() as conn:
        found = conn.execute(sa.select(*columns).order_by(lead_scores.c.id)).all()
    return [tuple(r) for r in found]


@pytest.mark.parametrize("n", [1, 3, 40])
def test_the_api_answer_and_the_stored_rows_are_those_of_the_list_way(
    small_export: Export, sqo_model: SQOLikelihoodModel, tmp_path: Path, n: int
) -> None:
    """``POST /score/leads`` takes its stored rows from its JSON rows: the same rows
    :func:`serving.service.rank_leads` stores, and the JSON rows of its list."""
    rng = np.random.default_rng(n)
    leads = _leads(small_export, rng, n)
    leads["segment"] = pd.array(
        rng.choice(np.array(["SMB", "Enterprise", None], dtype=object), size=n), dtype="string"
    )
    settings = Settings(
        data_dir=tmp_path / "no-export",
        database_url=f"sqlite:///{tmp_path / 'a.db'}",
        var_dir=tmp_path / "var",
    )
    champion = Champion(model=sqo_model, info={"version": "3", "name": "sqo"})
    records = json.loads(leads.to_json(orient="records", date_format="iso"))
    posted, listed = (
        Store(f"sqlite:///{tmp_path / 'a.db'}"),
        Store(f"sqlite:///{tmp_path / 'b.db'}"),
    )
    for store in (posted, listed):
        store.ensure_schema(migrate=True)
    answer = service.score_lead_list(
        settings, champion, posted, records=records, as_of="2026-07-01", request_id="r"
    )
    table, _, _ = service.rank_leads(
        settings,
        champion,
        listed,
        service.leads_from_records(records),
        as_of="2026-07-01",
        request_id="r",
    )
    assert answer["leads"] == service._records(table)
    rows = _stored(posted)
    assert len(rows) == n and rows == _stored(listed)
    assert any(r[-2] is not None for r in rows) or n == 1  # segments stored
