"""A few leads scored on the event loop never wait there for another process's SQLite write."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.store import Batch, Store, StoreBusy, lead_scores, utcnow
from tests.serving.conftest import ScoringSetup, posted_leads, settings_for


def _batch() -> Batch:
    return Batch(
        kind="leads",
        model="sqo_likelihood",
        model_name="pipecast-sqo-likelihood",
        model_version="1",
        as_of=date(2026, 7, 1),
        requested_at=utcnow(),
        request_id="busy",
    )


def _rows(n: int) -> list[dict[str, object]]:
    return [{"lead_id": f"L-{i}", "sqo_probability": 0.1, "rank": i + 1} for i in range(n)]


@pytest.fixture
def writing(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A store file and another process's connection, ready to hold its write lock."""
    path = tmp_path / "store.db"
    Store(f"sqlite:///{path}").ensure_schema(migrate=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        yield path, other
    finally:
        other.close()


def test_a_write_that_may_not_wait_is_refused_at_once_and_writes_nothing(
    writing: tuple[Path, sqlite3.Connection],
) -> None:
    path, other = writing
    store = Store(f"sqlite:///{path}")
    other.execute("BEGIN IMMEDIATE")  # another process is storing a list
    with pytest.raises(StoreBusy, match="locked"):
        store.save_scores(_batch(), _rows(3), wait=False)
    # a write that may wait does, and lands once the other one is done
    done: list[int] = []
    waiting = threading.Thread(target=lambda: done.append(store.save_scores(_batch(), _rows(3))))
    waiting.start()
    waiting.join(timeout=0.5)
    assert waiting.is_alive() and not done  # still waiting for the lock
    other.execute("COMMIT")
    waiting.join(timeout=30)
    assert len(done) == 1
    assert store.count(lead_scores) == 3  # the refused write left nothing behind
    # with nobody else writing, a write that may not wait simply writes
    store.save_scores(_batch(), _rows(2), wait=False)
    assert store.count(lead_scores) == 5


def test_while_another_process_writes_the_worker_answers_health_and_the_leads_are_stored_once(
    scoring_setup: ScoringSetup, tmp_path: Path
) -> None:
    settings = settings_for(scoring_setup.registry_uri, tmp_path, data_dir=scoring_setup.data_dir)
    records = posted_leads(scoring_setup.data_dir, 3)
    body = {"leads": records, "as_of": scoring_setup.as_of}
    with TestClient(create_app(settings)) as client:
        first = client.post("/score/leads", json=body)  # reads the export: later ones need not
        assert first.status_code == 200, first.text
        db = Path(settings.database_url.removeprefix("sqlite:///"))
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        answers: list[object] = []
        try:
            other.execute("BEGIN IMMEDIATE")
            posting = threading.Thread(
                target=lambda: answers.append(client.post("/score/leads", json=body))
            )
            posting.start()
            posting.join(timeout=0.5)
            assert posting.is_alive()  # the leads wait for the lock ...
            health = client.get("/health")  # ... in a worker thread: the loop answers
            assert health.status_code == 200
            assert posting.is_alive() and not answers
        finally:
            other.execute("COMMIT")
            other.close()
        posting.join(timeout=30)
        assert len(answers) == 1
        again = answers[0]
        assert again.status_code == 200, again.text  # type: ignore[attr-defined]
        assert again.json()["leads"] == first.json()["leads"]  # type: ignore[attr-defined]
    store = Store(settings.database_url)
    assert store.count(lead_scores) == 2 * len(records)  # each request's rows, once
