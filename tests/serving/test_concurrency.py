"""Under load: ``pipecast serve --workers 4`` on one PostgreSQL store, 16 clients at once.

The clients post overlapping outcomes (the same ids from many clients, some with changed
values) and deal and lead scores for a bounded time. Afterwards every answer was 2xx, each id
has one outcome row holding the last value, history rows only where a value changed, and every
prediction was stored exactly once under its request id.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from serving.store import (
    deal_outcomes,
    deal_scores,
    lead_outcomes,
    lead_scores,
    outcome_history,
    prediction_batches,
)
from tests.serving.conftest import SCORED_AS_OF, ScoringSetup
from tests.serving.test_server import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CLIENTS = 16
WORKERS = 4
#: the load phase stops after this many seconds or requests per client, whichever comes first
SECONDS = 60.0
REQUESTS_PER_CLIENT = 40
#: the ids every client posts outcomes for (so that the same id comes from many clients)
N_DEALS, N_LEADS = 12, 12


def _deal_outcome(rng: random.Random, i: int) -> dict[str, Any]:
    # two possible values per deal: a client that posts the other one changes it
    won = rng.random() < 0.5
    return {
        "opportunity_id": f"load-o-{i}",
        "status": "won" if won else "lost",
        "closed_at": "2026-08-03" if won else "2026-08-10",
        "amount": 1000.0 * (i + 1) if won else None,
    }


def _lead_outcome(rng: random.Random, i: int) -> dict[str, Any]:
    sqo = rng.random() < 0.5
    return {"lead_id": f"load-l-{i}", "is_sqo": sqo, "sqo_at": "2026-08-05" if sqo else None}


class Load:
    """What the clients sent and got back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.scores: dict[str, int] = {}  # request id → rows in the answer
        self.score_kinds: dict[str, str] = {}
        self.inserted: Counter[str] = Counter()
        self.n_outcome_posts = 0

    def client(self, number: int, base: str, leads: list[dict[str, Any]], stop: float) -> None:
        rng = random.Random(number)
        with httpx.Client(base_url=base, timeout=60) as http:
            for seq in range(REQUESTS_PER_CLIENT):
                if time.monotonic() > stop:
                    return
                request_id = f"load-{number}-{seq}"
                headers = {"X-Request-ID": request_id}
                roll = rng.random()
                try:
                    if roll < 0.6:
                        deals = [_deal_outcome(rng, i) for i in rng.sample(range(N_DEALS), 5)]
                        people = [_lead_outcome(rng, i) for i in rng.sample(range(N_LEADS), 5)]
                        answer = http.post(
                            "/outcomes",
                            json={"opportunities": deals, "leads": people},
                            headers=headers,
                        )
                    elif roll < 0.8:
                        answer = http.post(
                            "/score/opportunities", json={"as_of": SCORED_AS_OF}, headers=headers
                        )
                    else:
                        chosen = rng.sample(leads, 5)
                        answer = http.post(
                            "/score/leads",
                            json={"leads": chosen, "as_of": SCORED_AS_OF},
                            headers=headers,
                        )
                except httpx.TransportError as exc:
                    with self.lock:
                        self.failures.append(f"{request_id}: {type(exc).__name__}: {exc}")
                    continue
                with self.lock:
                    if not answer.is_success:
                        self.failures.append(f"{request_id}: {answer.status_code} {answer.text}")
                    elif roll < 0.6:
                        self.n_outcome_posts += 1
                        body = answer.json()
                        self.inserted["deal"] += body["opportunities"]["inserted"]
                        self.inserted["lead"] += body["leads"]["inserted"]
                    else:
                        body = answer.json()
                        self.scores[request_id] = int(body.get("n_deals", body.get("n_leads", -1)))
                        self.score_kinds[request_id] = "opportunities" if roll < 0.8 else "leads"


def _posted_leads(setup: ScoringSetup) -> list[dict[str, Any]]:
    leads = pd.read_csv(setup.data_dir / "leads.csv", dtype=str)
    late = leads.loc[leads["created_at"].fillna("") > "2026-06-01"].head(40)
    keep = ["lead_id", "account_id", "created_at", "source", "signal_type", "title"]
    frame = late[[c for c in keep if c in late.columns]]
    return [
        {k: v for k, v in row.items() if isinstance(v, str)} for row in frame.to_dict("records")
    ]


def test_sixteen_clients_against_four_workers_on_postgresql(
    scoring_setup: ScoringSetup, postgres_database: str, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": scoring_setup.registry_uri,
        "PIPECAST_DATA_DIR": str(scoring_setup.data_dir),
        "PIPECAST_DATABASE_URL": postgres_database,
    }
    stderr = (tmp_path / "stderr.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "pipecast", "serve", "--port", str(port), "--workers", str(WORKERS)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    load = Load()
    try:
        _wait_until_every_model_is_in_service(base, server, tmp_path)
        leads = _posted_leads(scoring_setup)
        assert len(leads) >= 10
        stop = time.monotonic() + SECONDS
        threads = [
            threading.Thread(target=load.client, args=(n, base, leads, stop))
            for n in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SECONDS + 120)
        assert not any(t.is_alive() for t in threads), "a client did not stop"
        assert load.failures == [], "\n".join(load.failures[:20])

        # a last, sequential round fixes the value every id must end with
        final_deals = [
            {
                "opportunity_id": f"load-o-{i}",
                "status": "won",
                "closed_at": "2026-09-01",
                "amount": 5.0 + i,
            }
            for i in range(N_DEALS)
        ]
        final_leads = [{"lead_id": f"load-l-{i}", "is_sqo": False} for i in range(N_LEADS)]
        with httpx.Client(base_url=base, timeout=60) as http:
            last = http.post("/outcomes", json={"opportunities": final_deals, "leads": final_leads})
            again = http.post(
                "/outcomes", json={"opportunities": final_deals, "leads": final_leads}
            )
        assert last.status_code == 200 and again.status_code == 200, last.text + again.text
        load.inserted["deal"] += last.json()["opportunities"]["inserted"]
        load.inserted["lead"] += last.json()["leads"]["inserted"]
        assert again.json()["opportunities"] == {"inserted": 0, "updated": 0, "unchanged": N_DEALS}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)
        stderr.close()

    assert load.n_outcome_posts > 0 and len(load.scores) > 0
    engine = sa.create_engine(postgres_database)
    try:
        with engine.connect() as conn:
            _check_outcomes(conn, load, final_deals)
            _check_predictions(conn, load)
    finally:
        engine.dispose()


def _wait_until_every_model_is_in_service(
    base: str, server: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    deadline = time.monotonic() + 240
    ready = 0
    while time.monotonic() < deadline and server.poll() is None:
        try:
            health = httpx.get(f"{base}/health", timeout=5).json()
        except (httpx.TransportError, ValueError):
            time.sleep(0.5)
            continue
        # several answers in a row from any worker with both models loaded
        ready = ready + 1 if all(health["models"].values()) else 0
        if ready >= 2 * WORKERS:
            return
        time.sleep(0.1)
    log = (tmp_path / "stderr.log").read_text(errors="replace")
    raise AssertionError(f"the server did not come up (exit {server.poll()}):\n{log[-4000:]}")


def _check_outcomes(conn: sa.Connection, load: Load, final_deals: list[dict[str, Any]]) -> None:
    rows = conn.execute(sa.select(deal_outcomes).order_by(deal_outcomes.c.opportunity_id)).all()
    # one row per deal id, each holding the last value posted
    assert len(rows) == N_DEALS
    current = {r.opportunity_id: r for r in rows}
    for posted in final_deals:
        row = current[posted["opportunity_id"]]
        assert (row.status, str(row.closed_at), row.amount) == (
            "won",
            posted["closed_at"],
            posted["amount"],
        )
    leads = conn.execute(sa.select(lead_outcomes)).all()
    assert len(leads) == N_LEADS and not any(r.is_sqo for r in leads)
    # each id was counted as inserted by exactly one request, however many raced for it (the
    # final round inserts the ids no client drew)
    assert load.inserted == Counter({"deal": N_DEALS, "lead": N_LEADS})
    history = conn.execute(
        sa.select(outcome_history).order_by(outcome_history.c.entity_id, outcome_history.c.id)
    ).all()
    by_id: dict[str, list[Any]] = {}
    for h in history:
        by_id.setdefault(f"{h.entity}:{h.entity_id}", []).append(h)
    assert len(by_id) == N_DEALS + N_LEADS
    for versions in by_id.values():
        values = [(v.status, v.closed_at, v.amount, v.is_sqo, v.sqo_at) for v in versions]
        # a version is recorded only when it differs from the one before
        assert all(a != b for a, b in zip(values, values[1:], strict=False)), values
    for posted in final_deals:
        latest = by_id[f"deal:{posted['opportunity_id']}"][-1]
        assert (latest.status, str(latest.closed_at), latest.amount) == (
            "won",
            posted["closed_at"],
            posted["amount"],
        )


def _check_predictions(conn: sa.Connection, load: Load) -> None:
    batches = conn.execute(
        sa.select(
            prediction_batches.c.id,
            prediction_batches.c.request_id,
            prediction_batches.c.kind,
            prediction_batches.c.n_rows,
        )
    ).all()
    ids = [b.request_id for b in batches]
    # every answered scoring request is stored once, and nothing else is
    assert len(ids) == len(set(ids)) == len(load.scores)
    assert set(ids) == set(load.scores)
    per_batch = dict(
        conn.execute(
            sa.select(deal_scores.c.batch_id, sa.func.count()).group_by(deal_scores.c.batch_id)
        ).all()
    )
    per_batch.update(
        conn.execute(
            sa.select(lead_scores.c.batch_id, sa.func.count()).group_by(lead_scores.c.batch_id)
        ).all()
    )
    for batch in batches:
        assert batch.kind == load.score_kinds[batch.request_id]
        assert per_batch.get(batch.id, 0) == batch.n_rows == load.scores[batch.request_id]
