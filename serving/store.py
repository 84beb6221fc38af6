"""The prediction store: every score and forecast the API gives, and the outcomes that followed.

SQLAlchemy 2 Core on SQLite (a file, the default) or PostgreSQL (by URL). The schema belongs to
the Alembic migrations in ``serving/migrations/`` (:func:`Store.upgrade` runs them); the tables
below describe it for queries and must agree with the latest migration (a test checks).

Outcomes are upserts keyed by the deal or lead id: the same outcome twice changes nothing, a
changed one replaces the current row and every version is kept in ``outcome_history``. The
upsert is one ``INSERT … ON CONFLICT DO UPDATE … WHERE changed RETURNING`` statement, so that
concurrent writers on PostgreSQL never lose an update or record a version twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)

from features.errors import InputError
from serving import logs
from serving.errors import Unavailable

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
#: a PostgreSQL advisory-lock key: one migration run at a time across workers and hosts
_MIGRATION_LOCK = 0x70697065  # "pipe"
#: rows per INSERT statement (SQLite allows 32766 bound values per statement)
_CHUNK = 500

#: how long a ``wait=False`` write waits for another writer of a SQLite store (seconds)
NO_WAIT_SECONDS = 0.005

metadata = sa.MetaData()

prediction_batches = sa.Table(
    "prediction_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # opportunities / leads / forecast
    sa.Column("kind", sa.String(16), nullable=False),
    # close_probability / sqo_likelihood
    sa.Column("model", sa.String(32), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(50), nullable=False),
    sa.Column("requested_at", sa.DateTime, nullable=False),
    sa.Column("request_id", sa.String(64)),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("period_label", sa.String(40)),
    sa.Column("period_start", sa.Date),
    sa.Column("period_end", sa.Date),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Index("ix_prediction_batches_model", "model", "model_version"),
    sa.Index("ix_prediction_batches_as_of", "as_of"),
)

deal_scores = sa.Table(
    "deal_scores",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "batch_id",
        sa.Integer,
        sa.ForeignKey("prediction_batches.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("opportunity_id", sa.String(200), nullable=False),
    sa.Column("p_win", sa.Float, nullable=False),
    sa.Column("p_win_in_period", sa.Float),
    sa.Column("expected_value", sa.Float),
    sa.Column("amount", sa.Float),
    sa.Column("segment", sa.String(200)),
    sa.Column("week_of_quarter", sa.Integer),
    sa.Index("ix_deal_scores_batch", "batch_id"),
    sa.Index("ix_deal_scores_opportunity", "opportunity_id"),
)

lead_scores = sa.Table(
    "lead_scores",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "batch_id",
        sa.Integer,
        sa.ForeignKey("prediction_batches.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("lead_id", sa.String(200), nullable=False),
    sa.Column("sqo_probability", sa.Float, nullable=False),
    sa.Column("rank", sa.Integer),
    sa.Column("tier", sa.String(40)),
    sa.Column("excluded_reason", sa.String(400)),
    sa.Column("segment", sa.String(200)),
    sa.Column("week_of_quarter", sa.Integer),
    sa.Index("ix_lead_scores_batch", "batch_id"),
    sa.Index("ix_lead_scores_lead", "lead_id"),
)

#: the statements of a score write, made once (SQLAlchemy then reuses their compiled form)
_INSERT_BATCH = prediction_batches.insert().returning(prediction_batches.c.id)
_SCORE_INSERTS: dict[str, tuple[sa.Insert, tuple[str, ...]]] = {
    kind: (table.insert(), tuple(c.name for c in table.columns if c.name not in ("id", "batch_id")))
    for kind, table in (("opportunities", deal_scores), ("leads", lead_scores))
}

forecasts = sa.Table(
    "forecasts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "batch_id",
        sa.Integer,
        sa.ForeignKey("prediction_batches.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("expected", sa.Float),
    sa.Column("p10", sa.Float),
    sa.Column("p50", sa.Float),
    sa.Column("p90", sa.Float),
    sa.Column("stage_weighted", sa.Float),
    sa.Column("quota", sa.Float),
    sa.Column("prob_attain_quota", sa.Float),
    # the whole forecast response, for the forecast-vs-actual report
    sa.Column("body", sa.JSON),
    sa.Index("ix_forecasts_batch", "batch_id"),
)

deal_outcomes = sa.Table(
    "deal_outcomes",
    metadata,
    sa.Column("opportunity_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("closed_at", sa.Date, nullable=False),
    sa.Column("amount", sa.Float),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("first_recorded_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

lead_outcomes = sa.Table(
    "lead_outcomes",
    metadata,
    sa.Column("lead_id", sa.String(200), primary_key=True),
    sa.Column("is_sqo", sa.Boolean, nullable=False),
    sa.Column("sqo_at", sa.Date),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("first_recorded_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)

outcome_history = sa.Table(
    "outcome_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # deal / lead
    sa.Column("entity", sa.String(8), nullable=False),
    sa.Column("entity_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(8)),
    sa.Column("closed_at", sa.Date),
    sa.Column("amount", sa.Float),
    sa.Column("is_sqo", sa.Boolean),
    sa.Column("sqo_at", sa.Date),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.DateTime, nullable=False),
    sa.Index("ix_outcome_history_entity", "entity", "entity_id"),
)


class StoreUnavailable(Unavailable):
    """The prediction store cannot be reached or used right now (the API answers 503)."""

    component = "prediction store"


class StoreBusy(StoreUnavailable):
    """A write that was asked not to wait found another process writing to the SQLite store
    (``save_scores(..., wait=False)``); nothing of it was written."""


@dataclass(frozen=True)
class DealOutcome:
    """How a deal ended: ``won`` or ``lost`` on ``closed_at`` (final ``amount`` if known)."""

    opportunity_id: str
    status: str
    closed_at: date
    amount: float | None = None


@dataclass(frozen=True)
class LeadOutcome:
    """Whether a lead became an SQO (on ``sqo_at`` when known)."""

    lead_id: str
    is_sqo: bool
    sqo_at: date | None = None


@dataclass(frozen=True)
class UpsertCounts:
    """What an outcome upsert did: new rows, changed rows, rows that were already so."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


@dataclass(frozen=True)
class Batch:
    """One scoring or forecast request as stored: which model, when, for which day and period."""

    kind: str
    model: str
    model_name: str
    model_version: str
    as_of: date
    requested_at: datetime
    request_id: str | None = None
    period_label: str | None = None
    period_start: date | None = None
    period_end: date | None = None


def utcnow() -> datetime:
    """Now in UTC, naive (as every time in the store)."""
    return datetime.now(UTC).replace(tzinfo=None)


def safe_url(url: str) -> str:
    """``url`` with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def _sqlite_path(engine_url: sa.URL) -> Path | None:
    if engine_url.get_backend_name() != "sqlite":
        return None
    database = engine_url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_write_ahead_log(dbapi_connection: Any, _record: Any) -> None:
    """A SQLite file in write-ahead-log mode: readers do not wait for a writer, and a commit
    appends to the log instead of rewriting pages and syncing twice (a one-lead request's
    commit: p99 40 ms → under 1 ms). ``synchronous=NORMAL`` keeps the file consistent after a
    crash; a power cut may lose the last commits, never corrupt the store."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class Store:
    """The prediction and outcome store at ``url`` (a SQLAlchemy URL).

    Nothing is connected or created until first used. ``create_parent`` creates the folder of a
    SQLite file (for the default ``var/pipecast.db``); a configured location is the operator's.
    """

    def __init__(self, url: str, *, create_parent: bool = False) -> None:
        self.url = url
        self.display_url = safe_url(url)
        try:
            parsed = make_url(url)
        except ArgumentError:
            # echoed only when it cannot hold a password (no user@host part)
            shown = repr(url) if "@" not in url else "(hidden: it holds credentials)"
            raise InputError(
                f"PIPECAST_DATABASE_URL {shown} is not a database URL; give one such as "
                "sqlite:///var/pipecast.db or postgresql+psycopg://user@host/db."
            ) from None
        self._sqlite = _sqlite_path(parsed)
        self._create_parent = create_parent
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            # wait for another writer instead of failing at once ("database is locked")
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # a server that is down answers within seconds, not the OS's TCP timeout
            kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            self.engine: Engine = sa.create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ImportError) as exc:
            raise InputError(
                f"PIPECAST_DATABASE_URL {self.display_url}: no driver for it here ({exc}). "
                "Use sqlite:///FILE or postgresql+psycopg://… (pip install 'pipecast[postgres]')."
            ) from None
        self.dialect = parsed.get_backend_name()
        #: SQLite connections that wait at most :data:`NO_WAIT_SECONDS` for another writer
        #: (``wait=False`` writes: on the event loop, where a wait would hold every request)
        self._brief_engine: Engine | None = None
        if self._sqlite is not None:
            sa.event.listen(self.engine, "connect", _sqlite_write_ahead_log)
            self._brief_engine = sa.create_engine(
                parsed, pool_pre_ping=True, connect_args={"timeout": NO_WAIT_SECONDS}
            )
            sa.event.listen(self._brief_engine, "connect", _sqlite_write_ahead_log)
        self._ready = False

    # --- connections ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self, *, write: bool, wait: bool = True) -> Iterator[Connection]:
        """A connection in a transaction (committed when ``write``); store failures → 503.

        ``wait=False`` (SQLite): another process's write is waited for only briefly, then
        :class:`StoreBusy` is raised and the transaction is rolled back."""
        if self._sqlite is not None and self._create_parent:
            self._sqlite.parent.mkdir(parents=True, exist_ok=True)
        engine = self.engine if wait or self._brief_engine is None else self._brief_engine
        try:
            with engine.connect() as conn:
                yield conn
                if write:
                    conn.commit()
        except (OperationalError, InterfaceError) as exc:
            if engine is self._brief_engine and "locked" in str(exc.orig):
                raise StoreBusy(self._why(exc)) from exc
            raise StoreUnavailable(self._why(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(self._why(exc)) from exc
            raise

    def _why(self, exc: DBAPIError) -> str:
        reason = _first_line(exc.orig) if exc.orig is not None else _first_line(exc)
        hint = ""
        if "no such table" in reason or "does not exist" in reason:
            hint = " (its schema is not created: run `pipecast db upgrade`)"
        return f"the prediction store at {self.display_url} cannot be used: {reason}{hint}"

    def ping(self) -> str | None:
        """``None`` when the store answers a trivial query, else why not (one line)."""
        try:
            with self._connect(write=False) as conn:
                conn.execute(sa.text("SELECT 1"))
        except StoreUnavailable as exc:
            return str(exc)
        return None

    def dispose(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()
        if self._brief_engine is not None:
            self._brief_engine.dispose()

    # --- schema ---------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> str | None:
        """Create or migrate the schema to ``revision``; return the revision now in place.

        Safe to run from several processes at once: on PostgreSQL an advisory lock serialises
        them (held until the migration commits), on SQLite a lock file beside the database.
        """
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._migration_lock(), self._connect(write=True) as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        self._ready = revision == "head"
        return self.revision()

    @property
    def ready(self) -> bool:
        """Whether this process has found (or made) the schema current already."""
        return self._ready

    @property
    def is_local(self) -> bool:
        """Whether the store is a SQLite database of this machine (no network in a write)."""
        return self.dialect == "sqlite"

    def ensure_schema(self, *, migrate: bool) -> None:
        """Make sure the schema is current before first use (once per process).

        With ``migrate`` the migrations run (start-up does this by default); without, a store
        whose schema is not current is refused with what to run.
        """
        if self._ready:
            return
        if migrate:
            self.upgrade()
        else:
            current, head = self.revision(), self.head_revision()
            if current != head:
                raise StoreUnavailable(
                    f"the prediction store at {self.display_url} has schema revision "
                    f"{current or 'none'}, this version needs {head}: run `pipecast db upgrade`"
                )
        self._ready = True

    @staticmethod
    def head_revision() -> str | None:
        """The latest revision the shipped migrations define."""
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        return ScriptDirectory.from_config(config).get_current_head()

    def revision(self) -> str | None:
        """The schema revision of the store (``None``: never migrated)."""
        from alembic.runtime.migration import MigrationContext

        with self._connect(write=False) as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self._sqlite is None or os.name != "posix":
            yield
            return
        import fcntl

        if self._create_parent:
            self._sqlite.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self._sqlite.with_name(self._sqlite.name + ".migrate-lock")
        try:
            handle = lock_path.open("a")
        except OSError as exc:
            raise StoreUnavailable(
                f"the prediction store at {self.display_url} cannot be used: {exc}"
            ) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- predictions ----------------------------------------------------------------------

    def save_scores(
        self, batch: Batch, rows: Sequence[dict[str, Any]], *, wait: bool = True
    ) -> int:
        """Store one scoring request and its rows (deal or lead scores); return the batch id.

        ``batch.kind`` decides the table: ``opportunities`` → deal scores, ``leads`` → lead
        scores. The batch and its rows are written in one transaction. ``wait=False``: on
        SQLite, when another process is writing, :class:`StoreBusy` at once (within
        :data:`NO_WAIT_SECONDS`) instead of waiting for it; nothing is written then.
        """
        prepared = _SCORE_INSERTS.get(batch.kind)
        if prepared is None:
            raise ValueError(f"batch kind {batch.kind!r}: expected opportunities or leads")
        insert, names = prepared
        with self._connect(write=True, wait=wait) as conn:
            batch_id = self._insert_batch(conn, batch, len(rows))
            # every row carries every column: an executemany binds the same parameters per row
            clean = [
                {"batch_id": batch_id, **{k: _plain(row.get(k)) for k in names}} for row in rows
            ]
            for start in range(0, len(clean), _CHUNK):
                conn.execute(insert, clean[start : start + _CHUNK])
        logs.note_rows(len(rows), model=batch.model, model_version=batch.model_version)
        return batch_id

    def save_forecast(self, batch: Batch, summary: dict[str, Any], body: Any) -> int:
        """Store one forecast (headline numbers and the whole response); return the batch id.

        ``summary`` holds ``expected, p10, p50, p90`` of the period's TOTAL bookings (won to
        date + open + new, what the actual is compared with), ``stage_weighted``, ``quota`` and
        ``prob_attain_quota``; ``batch.kind`` is ``forecast`` with the period set.
        """
        names = {c.name for c in forecasts.columns} - {"id", "batch_id", "body"}
        with self._connect(write=True) as conn:
            batch_id = self._insert_batch(conn, batch, 1)
            conn.execute(
                forecasts.insert(),
                {
                    "batch_id": batch_id,
                    "body": body,
                    **{k: _plain(v) for k, v in summary.items() if k in names},
                },
            )
        logs.note_rows(1, model=batch.model, model_version=batch.model_version)
        return batch_id

    @staticmethod
    def _insert_batch(conn: Connection, batch: Batch, n_rows: int) -> int:
        result = conn.execute(
            _INSERT_BATCH,
            {
                "kind": batch.kind,
                "model": batch.model,
                "model_name": batch.model_name,
                "model_version": batch.model_version,
                "requested_at": batch.requested_at,
                "request_id": batch.request_id,
                "as_of": batch.as_of,
                "period_label": batch.period_label,
                "period_start": batch.period_start,
                "period_end": batch.period_end,
                "n_rows": n_rows,
            },
        )
        return int(result.scalar_one())

    def request_ids(self, prefix: str) -> set[str]:
        """The request ids of the stored batches that start with ``prefix``."""
        b = prediction_batches
        with self._connect(write=False) as conn:
            found = conn.execute(
                sa.select(b.c.request_id).where(b.c.request_id.startswith(prefix, autoescape=True))
            ).scalars()
            return {str(r) for r in found}

    def count(self, table: sa.Table) -> int:
        """Rows in ``table`` (for reports and tests)."""
        with self._connect(write=False) as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    # --- outcomes -------------------------------------------------------------------------

    def upsert_deal_outcomes(
        self, outcomes: Sequence[DealOutcome], *, source: str = "api"
    ) -> UpsertCounts:
        """Record how deals ended; the same outcome twice changes nothing (see module doc)."""
        rows = [
            {
                "opportunity_id": o.opportunity_id,
                "status": o.status,
                "closed_at": o.closed_at,
                "amount": _plain(o.amount),
            }
            for o in outcomes
        ]
        return self._upsert(deal_outcomes, "deal", "opportunity_id", rows, source)

    def upsert_lead_outcomes(
        self, outcomes: Sequence[LeadOutcome], *, source: str = "api"
    ) -> UpsertCounts:
        """Record whether leads became SQOs; the same outcome twice changes nothing."""
        rows = [
            {"lead_id": o.lead_id, "is_sqo": bool(o.is_sqo), "sqo_at": o.sqo_at} for o in outcomes
        ]
        return self._upsert(lead_outcomes, "lead", "lead_id", rows, source)

    def _upsert(
        self,
        table: sa.Table,
        entity: str,
        key: str,
        rows: list[dict[str, Any]],
        source: str,
    ) -> UpsertCounts:
        if not rows:
            return UpsertCounts()
        ids = [r[key] for r in rows]
        if len(set(ids)) != len(ids):
            # ON CONFLICT cannot touch a row twice in one statement: callers deduplicate
            raise ValueError(f"{key}s repeat within one upsert")
        # rows locked in one order by every writer: two requests upserting overlapping ids in
        # different orders would otherwise deadlock on PostgreSQL (and one of them fail)
        rows = sorted(rows, key=lambda r: str(r[key]))
        values = [c for c in rows[0] if c != key]
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        else:
            raise StoreUnavailable(
                f"the prediction store at {self.display_url} is neither SQLite nor PostgreSQL"
            )
        counts = UpsertCounts()
        now = utcnow()
        upsert = insert(table)
        excluded = upsert.excluded
        # only a row whose values differ is rewritten (and returned, and historied)
        changed = sa.or_(*(table.c[c].is_distinct_from(excluded[c]) for c in values))
        # one statement, executed with many parameter sets: compiled once (and cached), where a
        # multi-VALUES statement of 500 literal rows is compiled anew for every chunk
        stmt = upsert.on_conflict_do_update(
            index_elements=[table.c[key]],
            set_={
                **{c: excluded[c] for c in values},
                "source": excluded.source,
                "updated_at": excluded.updated_at,
            },
            where=changed,
        ).returning(*(table.c[c] for c in [key, *values]), _was_inserted(table, self.dialect))
        with self._connect(write=True) as conn:
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                chunk_ids = [r[key] for r in chunk]
                existing = set(
                    conn.execute(
                        sa.select(table.c[key]).where(table.c[key].in_(chunk_ids))
                    ).scalars()
                )
                params = [
                    {**r, "source": source, "first_recorded_at": now, "updated_at": now}
                    for r in chunk
                ]
                written = [dict(r._mapping) for r in conn.execute(stmt, params)]
                # PostgreSQL says which rows the statement inserted (a row another writer
                # inserted meanwhile and this one changed is an update); SQLite has one writer
                # at a time, so the rows seen before the statement tell it
                n_new = sum(
                    1
                    for w in written
                    if (w[key] not in existing if w["_inserted"] is None else w["_inserted"])
                )
                for w in written:
                    del w["_inserted"]
                if written:
                    conn.execute(
                        outcome_history.insert(),
                        [
                            {
                                "entity": entity,
                                "entity_id": w.pop(key),
                                "source": source,
                                "recorded_at": now,
                                **w,
                            }
                            for w in written
                        ],
                    )
                counts += UpsertCounts(
                    inserted=n_new,
                    updated=len(written) - n_new,
                    unchanged=len(chunk) - len(written),
                )
        logs.note_rows(len(rows))
        return counts

    def outcome_history(self, entity: str, entity_id: str) -> list[dict[str, Any]]:
        """Every version recorded for one deal (``entity="deal"``) or lead, oldest first."""
        with self._connect(write=False) as conn:
            result = conn.execute(
                sa.select(outcome_history)
                .where(outcome_history.c.entity == entity, outcome_history.c.entity_id == entity_id)
                .order_by(outcome_history.c.id)
            )
            return [dict(r._mapping) for r in result]

    # --- calibration ----------------------------------------------------------------------

    def scored_outcomes(
        self, model: str, *, since: date | None = None, segment: str | None = None
    ) -> tuple[pd.DataFrame, int]:
        """Stored predictions of ``model`` whose outcome is known, and how many are still pending.

        Parameters
        ----------
        model
            ``close_probability`` (deal scores: ``p_win`` against won/lost) or
            ``sqo_likelihood`` (lead scores not excluded from the list: ``sqo_probability``
            against became-an-SQO).
        since
            Only predictions made as of this day or later.
        segment
            Only predictions of deals / leads in this segment.

        Returns
        -------
        (DataFrame, int)
            One row per prediction with a known outcome: ``entity_id, model_version, as_of,
            segment, week_of_quarter, p, y``. When the same deal or lead was scored more than once
            by one model version as of the same day, only the latest request counts. The int is
            the number of such predictions still without an outcome.
        """
        b = prediction_batches
        if model == "close_probability":
            s, o = deal_scores, deal_outcomes
            entity, prob = s.c.opportunity_id, s.c.p_win
            label = sa.case((o.c.status == "won", 1), else_=0)
            join = o.c.opportunity_id == s.c.opportunity_id
            kind = "opportunities"
            extra: list[Any] = []
        elif model == "sqo_likelihood":
            s, o = lead_scores, lead_outcomes
            entity, prob = s.c.lead_id, s.c.sqo_probability
            label = sa.case((o.c.is_sqo, 1), else_=0)
            join = o.c.lead_id == s.c.lead_id
            kind = "leads"
            extra = [s.c.excluded_reason.is_(None)]
        else:
            raise ValueError(f"model {model!r}: expected close_probability or sqo_likelihood")
        known = (
            sa.case((o.c.status.is_not(None), 1), else_=0)
            if model == "close_probability"
            else (sa.case((o.c.is_sqo.is_not(None), 1), else_=0))
        )
        query = (
            sa.select(
                b.c.id.label("batch_id"),
                entity.label("entity_id"),
                b.c.model_version,
                b.c.as_of,
                s.c.segment,
                s.c.week_of_quarter,
                prob.label("p"),
                label.label("y"),
                known.label("known"),
            )
            .select_from(s.join(b, s.c.batch_id == b.c.id).outerjoin(o, join))
            .where(b.c.kind == kind, b.c.model == model, *extra)
        )
        if since is not None:
            query = query.where(b.c.as_of >= since)
        if segment is not None:
            query = query.where(s.c.segment == segment)
        with self._connect(write=False) as conn:
            frame = pd.DataFrame(conn.execute(query).mappings().all())
        columns = ["entity_id", "model_version", "as_of", "segment", "week_of_quarter", "p", "y"]
        if frame.empty:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in columns}), 0
        # a prediction repeated for the same deal, version and day is counted once: the latest
        frame = frame.sort_values("batch_id", kind="stable").drop_duplicates(
            ["entity_id", "model_version", "as_of"], keep="last"
        )
        known_rows = frame["known"].astype(bool).to_numpy()
        pending = int((~known_rows).sum())
        return frame.loc[known_rows, columns].reset_index(drop=True), pending

    def forecasts_against_actuals(
        self, *, ended_before: date, since: date | None = None
    ) -> pd.DataFrame:
        """Stored forecasts of periods that ended before ``ended_before``, beside what was won.

        ``actual_won`` is the amount of the deals whose outcome says won with ``closed_at`` in
        the period (``deals_won`` of them; an unknown amount counts 0), as far as outcomes have
        been posted or synced. ``since`` keeps forecasts made as of that day or later.
        """
        b, f, o = prediction_batches, forecasts, deal_outcomes
        query = (
            sa.select(
                b.c.id.label("batch_id"),
                b.c.model_version,
                b.c.as_of,
                b.c.period_label,
                b.c.period_start,
                b.c.period_end,
                f.c.expected,
                f.c.p10,
                f.c.p50,
                f.c.p90,
                f.c.stage_weighted,
                f.c.quota,
            )
            .select_from(f.join(b, f.c.batch_id == b.c.id))
            .where(b.c.kind == "forecast", b.c.period_end < ended_before)
            .order_by(b.c.period_end, b.c.as_of, b.c.id)
        )
        if since is not None:
            query = query.where(b.c.as_of >= since)
        with self._connect(write=False) as conn:
            made = pd.DataFrame(conn.execute(query).mappings().all())
            if made.empty:
                return made
            won = pd.DataFrame(
                conn.execute(
                    sa.select(o.c.closed_at, o.c.amount).where(
                        o.c.status == "won",
                        o.c.closed_at >= made["period_start"].min(),
                        o.c.closed_at <= made["period_end"].max(),
                    )
                )
                .mappings()
                .all(),
                columns=["closed_at", "amount"],
            )
        closed = pd.to_datetime(won["closed_at"]).to_numpy(dtype="datetime64[ns]")
        amount = pd.to_numeric(won["amount"], errors="coerce").fillna(0.0).to_numpy()
        starts = pd.to_datetime(made["period_start"]).to_numpy(dtype="datetime64[ns]")
        ends = pd.to_datetime(made["period_end"]).to_numpy(dtype="datetime64[ns]")
        inside = (closed[None, :] >= starts[:, None]) & (closed[None, :] <= ends[:, None])
        return made.assign(
            actual_won=(inside * amount[None, :]).sum(axis=1), deals_won=inside.sum(axis=1)
        )


def _was_inserted(table: sa.Table, dialect: str) -> sa.ColumnElement[Any]:
    """In ``INSERT … ON CONFLICT … RETURNING``: whether the row was inserted (not updated).

    On PostgreSQL an inserted row version has no deleting transaction (``xmax = 0``); an
    updated one has. Elsewhere ``NULL`` (unknown).
    """
    if dialect == "postgresql":
        return sa.literal_column(f"({table.name}.xmax = 0)", sa.Boolean).label("_inserted")
    return sa.null().label("_inserted")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _plain(value: Any) -> Any:
    """A value the database driver takes: numpy scalars → Python, NaN/NA → None."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
