"""The prediction store on SQLite and on a real PostgreSQL: migrations, scores, outcome upserts."""

from __future__ import annotations

import socket
import threading
from datetime import date
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from features.errors import InputError
from serving.store import (
    Batch,
    DealOutcome,
    LeadOutcome,
    Store,
    StoreUnavailable,
    UpsertCounts,
    deal_outcomes,
    lead_outcomes,
    metadata,
    outcome_history,
    utcnow,
)


def migrated(url: str) -> Store:
    store = Store(url)
    store.upgrade()
    return store


def test_migrations_build_the_schema_the_code_queries(store_url: str) -> None:
    store = Store(store_url)
    assert store.revision() is None
    assert store.upgrade() == "0001"
    # a second run (every start-up runs it) changes nothing
    assert store.upgrade() == "0001"
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    store.dispose()


def test_concurrent_start_ups_migrate_once(store_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            migrated(store_url).dispose()
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Store(store_url).revision() == "0001"


def test_the_same_deal_outcome_twice_changes_nothing(store_url: str) -> None:
    store = migrated(store_url)
    won = DealOutcome("o-1", "won", date(2026, 2, 3), 12_000.0)
    lost = DealOutcome("o-2", "lost", date(2026, 2, 4))
    assert store.upsert_deal_outcomes([won, lost]) == UpsertCounts(inserted=2)
    assert store.upsert_deal_outcomes([won, lost]) == UpsertCounts(unchanged=2)
    # the same outcome from another source is still the same outcome
    assert store.upsert_deal_outcomes([won], source="sync") == UpsertCounts(unchanged=1)
    assert store.count(deal_outcomes) == 2
    assert len(store.outcome_history("deal", "o-1")) == 1


def test_a_changed_outcome_is_updated_and_its_history_kept(store_url: str) -> None:
    store = migrated(store_url)
    store.upsert_deal_outcomes([DealOutcome("o-1", "won", date(2026, 2, 3), 12_000.0)])
    corrected = DealOutcome("o-1", "won", date(2026, 2, 3), 15_500.0)
    assert store.upsert_deal_outcomes([corrected], source="sync") == UpsertCounts(updated=1)
    history = store.outcome_history("deal", "o-1")
    assert [(h["amount"], h["source"]) for h in history] == [(12_000.0, "api"), (15_500.0, "sync")]
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(deal_outcomes)).mappings().one()
    assert row["amount"] == 15_500.0 and row["status"] == "won"
    assert row["first_recorded_at"] <= row["updated_at"]
    # an amount that goes back to unknown is a change too
    unknown = DealOutcome("o-1", "won", date(2026, 2, 3), None)
    assert store.upsert_deal_outcomes([unknown]) == UpsertCounts(updated=1)
    assert store.outcome_history("deal", "o-1")[-1]["amount"] is None


def test_lead_outcomes_upsert(store_url: str) -> None:
    store = migrated(store_url)
    first = [LeadOutcome("l-1", True, date(2026, 1, 9)), LeadOutcome("l-2", False)]
    assert store.upsert_lead_outcomes(first) == UpsertCounts(inserted=2)
    assert store.upsert_lead_outcomes(first) == UpsertCounts(unchanged=2)
    late = [LeadOutcome("l-2", True, date(2026, 3, 1)), LeadOutcome("l-3", False)]
    assert store.upsert_lead_outcomes(late) == UpsertCounts(inserted=1, updated=1)
    assert store.count(lead_outcomes) == 3
    assert [h["is_sqo"] for h in store.outcome_history("lead", "l-2")] == [False, True]


def test_concurrent_writers_record_each_version_once(store_url: str) -> None:
    store = migrated(store_url)
    outcomes = [
        DealOutcome(f"o-{i}", "won", date(2026, 1, 1 + i % 28), float(i)) for i in range(300)
    ]
    results: list[UpsertCounts] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def write() -> None:
        try:
            writer = Store(store_url)
            barrier.wait()
            results.append(writer.upsert_deal_outcomes(outcomes))
            writer.dispose()
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count(deal_outcomes) == 300
    assert store.count(outcome_history) == 300
    assert sum(r.inserted for r in results) == 300
    assert sum(r.updated for r in results) == 0


def test_repeated_ids_in_one_upsert_are_refused(store_url: str) -> None:
    store = migrated(store_url)
    same = DealOutcome("o-1", "won", date(2026, 2, 3))
    with pytest.raises(ValueError, match="repeat"):
        store.upsert_deal_outcomes([same, same])
    assert store.count(deal_outcomes) == 0


def _batch(kind: str, model: str, version: str, as_of: date) -> Batch:
    return Batch(
        kind=kind,
        model=model,
        model_name=f"pipecast-{model}",
        model_version=version,
        as_of=as_of,
        requested_at=utcnow(),
    )


def test_scores_meet_their_outcomes(store_url: str) -> None:
    store = migrated(store_url)
    day = date(2026, 1, 15)
    store.save_scores(
        _batch("opportunities", "close_probability", "3", day),
        [
            {"opportunity_id": "o-1", "p_win": 0.9, "segment": "SMB", "week_of_quarter": 3},
            {"opportunity_id": "o-2", "p_win": 0.2, "segment": "Enterprise", "week_of_quarter": 3},
            {"opportunity_id": "o-3", "p_win": 0.5, "segment": "SMB", "week_of_quarter": 3},
        ],
    )
    # the same deal scored again the same day by the same version counts once (the latest)
    store.save_scores(
        _batch("opportunities", "close_probability", "3", day),
        [{"opportunity_id": "o-1", "p_win": 0.8, "segment": "SMB", "week_of_quarter": 3}],
    )
    store.save_scores(
        _batch("opportunities", "close_probability", "4", date(2026, 2, 20)),
        [{"opportunity_id": "o-1", "p_win": 0.6, "segment": "SMB", "week_of_quarter": 8}],
    )
    store.upsert_deal_outcomes(
        [DealOutcome("o-1", "won", date(2026, 3, 1)), DealOutcome("o-2", "lost", date(2026, 3, 2))]
    )
    rows, pending = store.scored_outcomes("close_probability")
    assert pending == 1  # o-3 is still open
    got = sorted(zip(rows["entity_id"], rows["model_version"], rows["p"], rows["y"], strict=True))
    assert got == [("o-1", "3", 0.8, 1), ("o-1", "4", 0.6, 1), ("o-2", "3", 0.2, 0)]
    since, _ = store.scored_outcomes("close_probability", since=date(2026, 2, 1))
    assert list(since["model_version"]) == ["4"]
    smb, pending_smb = store.scored_outcomes("close_probability", segment="SMB")
    assert sorted(smb["p"]) == [0.6, 0.8] and pending_smb == 1
    # lead predictions are apart, and leads kept off the list are not judged
    store.save_scores(
        _batch("leads", "sqo_likelihood", "1", day),
        [
            {"lead_id": "l-1", "sqo_probability": 0.3, "rank": 1},
            {"lead_id": "l-2", "sqo_probability": 0.1, "excluded_reason": "do not contact"},
        ],
    )
    store.upsert_lead_outcomes([LeadOutcome("l-1", True, day), LeadOutcome("l-2", False)])
    leads, lead_pending = store.scored_outcomes("sqo_likelihood")
    assert list(zip(leads["entity_id"], leads["y"], strict=True)) == [("l-1", 1)]
    assert lead_pending == 0


def test_a_missing_schema_says_to_upgrade(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'fresh.db'}")
    with pytest.raises(StoreUnavailable, match="pipecast db upgrade"):
        store.upsert_deal_outcomes([DealOutcome("o-1", "won", date(2026, 2, 3))])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////nonexistent-folder/pipecast.db",
        f"postgresql+psycopg://pipecast:secret@127.0.0.1:{_closed_port()}/pipecast",
    ],
)
def test_a_store_that_is_down_is_named_not_crashed(url: str) -> None:
    store = Store(url)
    why = store.ping()
    assert why is not None and "prediction store" in why
    assert "secret" not in why  # the password never reaches a message
    with pytest.raises(StoreUnavailable):
        store.upgrade()


@pytest.mark.parametrize("url", ["not a url", "oracle+nodriver://x@y/z"])
def test_a_bad_database_url_is_an_input_error(url: str) -> None:
    with pytest.raises(InputError, match="PIPECAST_DATABASE_URL"):
        Store(url)


def test_a_sqlite_store_keeps_a_write_ahead_log(tmp_path: Path) -> None:
    """Readers do not wait for a writer, and a commit does not rewrite the file."""
    store = migrated(f"sqlite:///{tmp_path / 'wal.db'}")
    store.upsert_deal_outcomes([DealOutcome("o-1", "won", date(2026, 2, 3))])
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        # NORMAL (1): consistent after a crash, no sync at every commit
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    assert (tmp_path / "wal.db-wal").exists()
    assert store.count(deal_outcomes) == 1
