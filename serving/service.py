"""What the API does, without the web: plain functions the routers call (no FastAPI here).

Every score the API returns is stored first (model version, request time, as-of, period, ids),
so that it can be checked against the outcome later; a store that cannot take it makes the
request fail with 503 rather than hand out a score nobody can check.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from features.contract import ContractError, Problem
from features.errors import InputError
from features.io import DatasetConfig, Export, coerce_table, read_export, read_leads_file
from features.labels import lead_labels
from features.periods import parse_date, quarter_start
from models import calibration as metrics
from models.registry import champion_info, registry_client, registry_problem
from pipecast.config import Settings
from serving import scoring
from serving.champions import MODELS, NO_MODEL, Champion, ChampionHolder
from serving.errors import RegistryUnavailable, RequestTooLarge
from serving.lead_list import ListRules
from serving.store import Batch, DealOutcome, LeadOutcome, Store, UpsertCounts, utcnow

log = logging.getLogger(__name__)

__all__ = ["MODELS", "NO_MODEL"]


def models_overview(
    settings: Settings, in_service: Mapping[str, str | None] | None = None
) -> list[dict[str, Any]]:
    """The champion of each model (version, metrics, training data range), or that there is none.

    ``in_service``: the version of each model this server has loaded, reported beside it.
    """
    overview = []
    served = dict(in_service or {})
    for model, name in MODELS.items():
        try:
            info = champion_info(settings, name)
            if info is not None:
                info.update(_training_tags(settings, name, str(info["version"])))
        except Exception as exc:  # noqa: BLE001 — MLflow, SQL and network errors alike
            raise RegistryUnavailable(
                f"the model registry at {settings.mlflow_tracking_uri} cannot be read: "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            ) from exc
        if info is None:
            overview.append(
                {"model": model, "name": name, "status": NO_MODEL, "in_service": served.get(model)}
            )
        else:
            overview.append(
                {"model": model, "status": "champion", "in_service": served.get(model), **info}
            )
    return overview


def _training_tags(settings: Settings, name: str, version: str) -> dict[str, str | None]:
    """How a champion version was trained, from its registry tags: the split ("time", or
    "random" for an export without dates, with what that means) and the kind of model."""
    tags = registry_client(settings).get_model_version(name, version).tags or {}
    return {
        "split": tags.get("split") or "time",
        "split_note": tags.get("split_note"),
        "kind": tags.get("kind") or tags.get("model_kind"),
    }


def reload_models(champions: ChampionHolder) -> dict[str, Any]:
    """Swap in the current champion of both models (``ReloadFailed`` keeps the old ones)."""
    current = champions.reload()
    return {"models": current.versions(), "loaded_at": current.loaded_at}


class HealthProbe:
    """``/health``: store and registry reachability, re-checked at most every ``ttl`` seconds.

    Polled often by load balancers, so it never loads a model and caches its answer briefly.
    """

    def __init__(
        self, settings: Settings, store: Store, champions: ChampionHolder, ttl: float = 5.0
    ) -> None:
        self._settings, self._store, self._champions, self._ttl = settings, store, champions, ttl
        self._lock = threading.Lock()
        self._checked_at = -math.inf
        self._answer: tuple[str, str] = ("ok", "ok")

    def check(self) -> dict[str, Any]:
        with self._lock:
            if time.monotonic() - self._checked_at > self._ttl:
                store = self._store.ping() or "ok"
                registry = registry_problem(self._settings) or "ok"
                self._answer = (store, registry)
                self._checked_at = time.monotonic()
            store, registry = self._answer
        return {
            "status": "ok" if store == registry == "ok" else "degraded",
            "store": store,
            "registry": registry,
            "models": self._champions.current.versions(),
        }


def check_rows(n: int, settings: Settings, what: str) -> None:
    """Refuse more than ``PIPECAST_MAX_ROWS`` rows of ``what`` in one request (413)."""
    if n > settings.max_rows:
        raise RequestTooLarge(
            f"{what}: {n} rows, more than the {settings.max_rows} one request may hold "
            "(PIPECAST_MAX_ROWS). Send them in several requests."
        )


def week_of_quarter(day: date | pd.Timestamp, fiscal_year_start_month: int) -> int:
    """1 for the first seven days of the fiscal quarter of ``day``, 2 for the next seven, …"""
    start = quarter_start(pd.Timestamp(day).normalize(), fiscal_year_start_month)
    return int((pd.Timestamp(day).normalize() - start).days // 7 + 1)


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready rows: NaN and NA become null, numpy scalars Python ones."""
    if len(table) <= SMALL_REQUEST_ROWS and table.columns.is_unique:
        return _few_records(table)
    rows = table.astype(object).where(table.notna(), None).to_dict("records")
    return [{str(k): _plain(v) for k, v in row.items()} for row in rows]


def _few_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """:func:`_records` of a few rows, cell by cell: the same values, without the
    whole-frame conversions (or per-column ones) that cost milliseconds however few the rows."""
    names = [str(k) for k in table.columns]
    if not names:
        return [{} for _ in range(len(table))]
    # one conversion of the whole frame to Python objects, then a plain loop over the cells
    cells = table.to_numpy(dtype=object).tolist()
    return [
        {name: None if _is_missing(v) else _plain(v) for name, v in zip(names, row, strict=True)}
        for row in cells
    ]


def _is_missing(value: Any) -> bool:
    """Whether a cell is missing as ``DataFrame.notna`` sees it (a list in a cell is not)."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _texts(values: pd.Series) -> list[str | None]:
    """A column as Python strings (None where missing)."""
    texts: list[str | None] = values.astype("string").to_numpy(dtype=object, na_value=None).tolist()
    return texts


def _text_column(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NA, index=frame.index, dtype="string")
    return frame[column].astype("string")


# ----------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------


#: the pipeline tables a request may carry inline (contract columns)
INLINE_TABLES = ("opportunities", "stage_history", "activities")


def inline_export(settings: Settings, tables: Mapping[str, Sequence[dict[str, Any]]]) -> Export:
    """An export from tables posted in a request, checked as an export folder would be.

    The rows are written as CSV to a temporary folder (with the server's ``dataset.yaml``, for
    its stages and fiscal year) and read by the contract reader, so they get the same checks and
    quarantine as a file; a problem is reported by table and row (counted from 0), not by line.
    """
    n_rows = sum(len(rows) for rows in tables.values())
    check_rows(n_rows, settings, "inline pipeline rows")
    with tempfile.TemporaryDirectory(prefix="pipecast-inline-") as folder:
        root = Path(folder)
        for config in ("dataset.yaml", "dataset.yml"):
            if (settings.data_dir / config).is_file():
                shutil.copyfile(settings.data_dir / config, root / config)
        for name, rows in tables.items():
            frame = pd.DataFrame.from_records(list(rows)).map(_cell_text)
            frame.to_csv(root / f"{name}.csv", index=False)
        try:
            return read_export(root, require=("opportunities",))
        except ContractError as exc:
            raise ContractError(
                [_inline_problem(p) for p in exc.problems], subject="posted pipeline"
            ) from None


def _inline_problem(problem: Problem) -> Problem:
    name = problem.file.removesuffix(".csv")
    if name in INLINE_TABLES:
        return _as_rows(problem, name)
    return problem


def score_pipeline(
    settings: Settings,
    champion: Champion,
    store: Store,
    *,
    as_of: str | None = None,
    period: str | None = None,
    tables: Mapping[str, Sequence[dict[str, Any]]] | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Every deal open at ``as_of`` scored, stored, returned.

    The pipeline is ``tables`` when given (:func:`inline_export`), else the server's export.
    ``as_of`` defaults to the export date and ``period`` to the fiscal quarter of ``as_of``.
    """
    if tables:
        export = inline_export(settings, tables)
    else:
        export = server_export(settings, require=("opportunities",))
    return score_export_pipeline(
        settings, champion, store, export, as_of=as_of, period=period, request_id=request_id
    )


def score_export_pipeline(
    settings: Settings,
    champion: Champion,
    store: Store,
    export: Export,
    *,
    as_of: str | pd.Timestamp | None = None,
    period: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Every deal of ``export`` open at the end of day ``as_of`` scored, stored, returned.

    ``as_of`` defaults to the export date and ``period`` to the fiscal quarter of ``as_of``.
    """
    if isinstance(as_of, pd.Timestamp):
        as_of = as_of.date().isoformat()
    day, chosen = scoring.pipeline_day_and_period(export, as_of=as_of, period=period)
    table, features = scoring.score_open_pipeline(
        champion.model, export, as_of=day, period=chosen, model_version=champion.version
    )
    check_rows(len(table), settings, "open opportunities to score")
    ids = table["opportunity_id"].astype("string")
    segment = _text_column(features, "segment").reindex(ids.to_numpy())
    amount = pd.to_numeric(
        features["amount"] if "amount" in features.columns else pd.Series(np.nan, features.index),
        errors="coerce",
    ).reindex(ids.to_numpy())
    week = week_of_quarter(day, export.config.fiscal_year_start_month)
    rows = [
        {
            "opportunity_id": oid,
            "p_win": p,
            "p_win_in_period": pp,
            "expected_value": ev,
            "amount": a,
            "segment": seg,
            "week_of_quarter": week,
        }
        for oid, p, pp, ev, a, seg in zip(
            ids.to_numpy(),
            table["p_win"].to_numpy(),
            table["p_win_in_period"].to_numpy(),
            table["expected_value"].to_numpy(),
            amount.to_numpy(),
            segment.to_numpy(),
            strict=True,
        )
    ]
    store.save_scores(
        Batch(
            kind="opportunities",
            model="close_probability",
            model_name=champion.name,
            model_version=champion.version,
            as_of=day.date(),
            requested_at=utcnow(),
            request_id=request_id,
            period_label=chosen.label,
            period_start=chosen.start.date(),
            period_end=chosen.end.date(),
        ),
        rows,
    )
    return {
        "as_of": day.date(),
        "period": {"label": chosen.label, "start": chosen.start.date(), "end": chosen.end.date()},
        "model_version": champion.version,
        "n_deals": len(table),
        "deals": _records(table),
    }


def leads_from_records(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Posted leads as a contract ``leads`` table; a bad value names the field and the row.

    Rows are counted from 0, as in the posted list.
    """
    if 0 < len(records) <= SMALL_REQUEST_ROWS:
        small = _small_leads_frame(records)
        if small is not None:
            return small
    raw = pd.DataFrame.from_records(list(records))
    if raw.empty or "lead_id" not in raw.columns:
        raise InputError("leads: every lead needs a lead_id (the list is empty or has none).")
    # strings as the contract reader gets them from a file: it parses dates, numbers, flags
    raw = raw.map(_cell_text)
    body = Path("leads")  # no suffix: coerce_table numbers rows from 2 (a CSV's first line)
    frame, problems = coerce_table(raw.astype("string"), "leads", body)
    if not problems:
        dup = frame["lead_id"].duplicated(keep=False).to_numpy(dtype=bool)
        if dup.any():
            problems.append(
                Problem(
                    file="leads",
                    column="lead_id",
                    message="some lead ids appear more than once",
                    lines=tuple(int(i) + 2 for i in np.flatnonzero(dup)[:20]),
                    n_rows=int(dup.sum()),
                    expected="each lead once",
                )
            )
    if problems:
        raise ContractError([_as_rows(p, "leads") for p in problems], subject="lead list")
    return frame


#: posted leads up to this many are typed cell by cell (:func:`_small_leads_frame`): for a
#: handful of leads, whole-column machinery costs far more than the cells themselves
SMALL_REQUEST_ROWS = 16
#: a number as a small request may hold it in text (anything else takes the full checks)
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
#: a date, or a date and time to the second without a zone, as a small request may hold it
_PLAIN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2})?")


class _NeedsChecks(Exception):
    """A posted cell that only the full checks may judge (they name it if it is wrong)."""


def _small_leads_frame(records: Sequence[dict[str, Any]]) -> pd.DataFrame | None:
    """A few posted leads as ``coerce_table`` types them, cell by cell; ``None`` as soon as a
    cell is anything but a plainly valid value (unparsable, empty where required, a date with a
    zone or fractions, a repeated id, a column name with spaces …): the full checks then judge
    the request and word its errors, so a fast answer never differs from theirs."""
    from features.contract import FALSE_WORDS, TRUE_WORDS, columns_of

    spec = columns_of("leads")
    names: dict[str, None] = {}
    for record in records:
        if not isinstance(record, dict):
            return None
        names.update(dict.fromkeys(record))
    if "lead_id" not in names or any(not isinstance(n, str) or n != n.strip() for n in names):
        return None
    n = len(records)
    columns: dict[str, Any] = {}
    try:
        for name in names:
            column_values = [record.get(name) for record in records]
            texts = [_cell_text(v) for v in column_values]
            col = spec.get(name)
            kind = col.kind if col is not None else "string"
            if col is not None and col.choices is not None:
                return None
            if kind == "number":
                values = [_small_number(v, t) for v, t in zip(column_values, texts, strict=True)]
                columns[name] = np.array(values, dtype="float64")
            elif kind in ("date", "datetime"):
                stamps = [_small_date(t) for t in texts]
                columns[name] = np.array(stamps, dtype="datetime64[ns]")
            elif kind == "bool":
                flags: list[bool | None] = []
                for t in texts:
                    word = None if t is None else _stripped(t).lower()
                    if word is None:
                        flags.append(None)
                    elif word in TRUE_WORDS or word in FALSE_WORDS:
                        flags.append(word in TRUE_WORDS)
                    else:
                        raise _NeedsChecks
                columns[name] = pd.array(flags, dtype="boolean")
            else:
                # a number or flag in a text column is written as pandas would infer its
                # column (7 beside a missing value becomes "7.0"): the full checks do that
                if any(v is not None and not isinstance(v, str) for v in column_values):
                    return None
                kept = [None if t is None else _stripped(t) or None for t in texts]
                columns[name] = pd.array(kept, dtype="string")
            if col is not None and col.not_null and pd.isna(pd.Series(columns[name])).any():
                return None
    except _NeedsChecks:
        return None
    ids = columns["lead_id"]
    if len(set(ids.tolist())) != n:
        return None
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


#: the white space a small request's cells may carry around a value (any other: full checks)
_PLAIN_SPACE = " \t\r\n"


def _stripped(text: str) -> str:
    """``text`` without surrounding white space, as the full checks strip it; a cell whose
    edges hold any other space (no-break, ideographic …) is left to the full checks."""
    shown = text.strip(_PLAIN_SPACE)
    if shown != text.strip() or (shown and not (shown[0].isascii() and shown[-1].isascii())):
        raise _NeedsChecks
    return shown


def _small_number(value: Any, text: str | None) -> float:
    if text is None:
        return math.nan
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
        number = float(value)
    elif isinstance(value, float):
        number = value
    elif _PLAIN_NUMBER.fullmatch(_stripped(text)):
        number = float(_stripped(text))
    else:
        raise _NeedsChecks
    if not math.isfinite(number):
        raise _NeedsChecks
    return number


def _small_date(text: str | None) -> np.datetime64:
    if text is None:
        return np.datetime64("NaT", "ns")
    shown = _stripped(text)
    if not _PLAIN_DATE.fullmatch(shown):
        raise _NeedsChecks
    try:
        return np.datetime64(shown, "ns")
    except ValueError:
        raise _NeedsChecks from None


def _cell_text(value: Any) -> str | None:
    """A posted JSON value as the text a CSV cell would hold (a key left out is empty)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _as_rows(problem: Problem, what: str) -> Problem:
    """A problem in a posted list: file → the list's name, line numbers → row indexes."""
    rows = tuple(line - 2 for line in problem.lines)
    shown = ", ".join(str(r) for r in rows[:5]) + (" …" if problem.n_rows > 5 else "")
    where = f" (row{'s' if len(rows) != 1 else ''} {shown}, counted from 0)" if rows else ""
    return Problem(
        file=f"{what} in the request body",
        column=problem.column,
        message=problem.message + where,
        lines=(),
        n_rows=problem.n_rows,
        expected=problem.expected,
    )


def rank_leads(
    settings: Settings,
    champion: Champion,
    store: Store,
    leads: pd.DataFrame,
    *,
    as_of: str | None = None,
    rules: ListRules | None = None,
    request_id: str | None = None,
    history: Export | None = None,
) -> tuple[pd.DataFrame, dict[str, Any], pd.Timestamp]:
    """A lead list scored, tiered and cut by the list rules (``scoring.score_lead_list``), stored.

    Account history and similar-lead rates come from ``history`` when given, else from the
    server's export when it has one; the scoring day is ``as_of``, else the export date or the
    newest ``created_at`` of the list. Returns the ranked list, the list rules' summary and the
    scoring day.
    """
    table, summary, day, _ = _rank_leads(
        settings,
        champion,
        store,
        leads,
        as_of=as_of,
        rules=rules,
        request_id=request_id,
        history=history,
        as_records=False,
    )
    return table, summary, day


def _rank_leads(
    settings: Settings,
    champion: Champion,
    store: Store,
    leads: pd.DataFrame,
    *,
    as_of: str | None,
    rules: ListRules | None,
    request_id: str | None,
    history: Export | None,
    as_records: bool,
    wait: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any], pd.Timestamp, list[dict[str, Any]] | None]:
    """:func:`rank_leads`, and with ``as_records`` the ranked list's JSON-ready rows too
    (:func:`_records`): the stored rows are then taken from them, for a few leads one
    conversion of the list instead of one per stored column."""
    check_rows(len(leads), settings, "leads to score")
    export = history if history is not None else _history_export(settings)
    day = _lead_scoring_day(as_of, export, leads)
    table, summary = scoring.score_lead_list(
        champion.model,
        leads,
        model_version=champion.version,
        as_of=day,
        history=export if export.tables() else None,
        rules=rules,
    )
    week = week_of_quarter(day, export.config.fiscal_year_start_month)
    records = _records(table) if as_records else None
    if records is not None:
        rows = [_stored_lead(r, week) for r in records]
        _save_lead_scores(store, champion, day, request_id, rows, wait=wait)
        return table, summary, day, records
    # each lead's segment as its list gives it, looked up by id (the ids are unique): a plain
    # dict, where re-indexing a series costs a millisecond for a single lead
    segment_of = dict(
        zip(
            _texts(leads["lead_id"]),
            _texts(leads["segment"]) if "segment" in leads.columns else [None] * len(leads),
            strict=True,
        )
    )
    rows = [
        {
            "lead_id": lid,
            "sqo_probability": p,
            "rank": None if pd.isna(rank) else int(rank),
            "tier": None if tier is None or tier == "" else tier,
            "excluded_reason": reason,
            "segment": segment_of.get(lid),
            "week_of_quarter": week,
        }
        for lid, p, rank, tier, reason in zip(
            _texts(table["lead_id"]),
            table["sqo_probability"].to_numpy(),
            table["rank"].to_numpy(),
            _texts(table["tier"]),
            _texts(table["excluded_reason"]),
            strict=True,
        )
    ]
    _save_lead_scores(store, champion, day, request_id, rows)
    return table, summary, day, None


def _stored_lead(record: dict[str, Any], week: int) -> dict[str, Any]:
    """The stored row of a ranked lead from its JSON-ready row: the values the columns give
    (the list's own ``segment`` is carried in it under its name)."""
    tier = record["tier"]
    return {
        "lead_id": record["lead_id"],
        "sqo_probability": record["sqo_probability"],
        "rank": record["rank"],
        "tier": None if tier is None or tier == "" else tier,
        "excluded_reason": record["excluded_reason"],
        "segment": record.get("segment"),
        "week_of_quarter": week,
    }


def _save_lead_scores(
    store: Store,
    champion: Champion,
    day: pd.Timestamp,
    request_id: str | None,
    rows: list[dict[str, Any]],
    *,
    wait: bool = True,
) -> None:
    store.save_scores(
        Batch(
            kind="leads",
            model="sqo_likelihood",
            model_name=champion.name,
            model_version=champion.version,
            as_of=day.date(),
            requested_at=utcnow(),
            request_id=request_id,
        ),
        rows,
        wait=wait,
    )


def score_lead_list(
    settings: Settings,
    champion: Champion,
    store: Store,
    *,
    records: Sequence[dict[str, Any]],
    as_of: str | None = None,
    rules: ListRules | None = None,
    request_id: str | None = None,
    history: Export | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """``POST /score/leads``: posted leads ranked best first (see :func:`rank_leads`);
    ``history`` as there (e.g. :func:`current_export`, already checked by the caller).
    ``wait=False``: a SQLite store another process is writing to is not waited for
    (``StoreBusy``, nothing stored; see ``Store.save_scores``)."""
    check_rows(len(records), settings, "leads to score")
    table, summary, day, rows = _rank_leads(
        settings,
        champion,
        store,
        leads_from_records(records),
        as_of=as_of,
        rules=rules,
        request_id=request_id,
        history=history,
        as_records=True,
        wait=wait,
    )
    return {
        "as_of": day.date(),
        "model_version": champion.version,
        "n_leads": len(table),
        "summary": _plain_tree(summary),
        "leads": rows if rows is not None else _records(table),
    }


def score_lead_upload(
    settings: Settings,
    champion: Champion,
    store: Store,
    upload: BinaryIO,
    filename: str,
    *,
    as_of: str | None = None,
    rules: ListRules | None = None,
    request_id: str | None = None,
) -> Iterator[str]:
    """``POST /score/leads.csv``: an uploaded list file ranked, as CSV text in pieces.

    The upload is copied to a temporary file in blocks and read with the contract reader, so a
    bad value is named by its line in the user's file; a ``.parquet`` name is read as Parquet.
    """
    suffix = ".parquet" if filename.lower().endswith(".parquet") else ".csv"
    with tempfile.TemporaryDirectory(prefix="pipecast-upload-") as folder:
        path = Path(folder) / f"{Path(filename).stem or 'leads'}{suffix}"
        with path.open("wb") as out:
            shutil.copyfileobj(upload, out, length=1 << 20)
        leads = read_leads_file(path)
    table, _, _ = rank_leads(
        settings, champion, store, leads, as_of=as_of, rules=rules, request_id=request_id
    )
    return _csv_chunks(table)


def _csv_chunks(table: pd.DataFrame, rows_per_chunk: int = 5000) -> Iterator[str]:
    """The table as CSV (header first), a few thousand rows at a time, for a streamed answer."""
    for start in range(0, max(len(table), 1), rows_per_chunk):
        part = table.iloc[start : start + rows_per_chunk]
        yield part.to_csv(index=False, header=start == 0, date_format="%Y-%m-%d")


def _plain_tree(value: Any) -> Any:
    """A summary made JSON-ready, nested dicts and lists included."""
    if isinstance(value, dict):
        return {str(k): _plain_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_tree(v) for v in value]
    return _plain(value)


class _ExportCache:
    """The server's export, read once and read again only when a file of its folder changes.

    Every lead list and pipeline request reads it; reading a CRM export of some thousand deals
    takes seconds, far more than scoring one lead. One per process (a module-level instance):
    the folder is the same for every app of a process, and a changed file (a new size or
    modification time) is read again on the next request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[tuple[tuple[str, int, int], ...], Export]] = {}

    def get(self, folder: Path) -> Export:
        folder = folder.resolve()
        if not folder.is_dir():
            # nothing to cache: the reader refuses it, naming the folder
            return read_export(folder)
        key = _folder_signature(folder)
        with self._lock:
            cached = self._entries.get(folder)
            if cached is not None and cached[0] == key:
                return cached[1]
            export = read_export(folder)
            self._entries[folder] = (key, export)
            return export

    def current(self, folder: Path) -> Export | None:
        """``folder``'s export when it is read and none of its files changed since, else None
        (one scan of the folder)."""
        folder = folder.resolve()
        with self._lock:
            cached = self._entries.get(folder)
        if cached is not None and cached[0] == _folder_signature(folder):
            return cached[1]
        return None


def _folder_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, modification time and size of each file of the folder: any rewrite, new file or
    removed one changes it. Checked on every request, so one ``stat`` per file and nothing
    else (the directory listing says which entries are files without another call)."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                stat = entry.stat()
                found.append((entry.name, stat.st_mtime_ns, stat.st_size))
    found.sort()
    return tuple(found)


_EXPORTS = _ExportCache()


def server_export(settings: Settings, *, require: Sequence[str] = ()) -> Export:
    """The server's CRM export (``PIPECAST_DATA_DIR``), read again only when its files change.

    ``require``: tables the caller needs; a missing one is refused as ``read_export`` does.
    """
    export = _EXPORTS.get(Path(settings.data_dir))
    if any(getattr(export, name, None) is None for name in require):
        # the reader's own refusal names the file that is missing
        return read_export(settings.data_dir, require=tuple(require))
    return export


def current_export(settings: Settings) -> Export | None:
    """The history a lead request would use, when it needs no file read: the server's export
    read already and unchanged, or an empty one when there is no export folder. None when the
    export must be read (again) first. Scoring a few leads with it takes milliseconds, and the
    folder is scanned once per request (this is the scan)."""
    folder = Path(settings.data_dir)
    if not folder.is_dir():
        return Export(config=DatasetConfig())
    return _EXPORTS.current(folder)


def _history_export(settings: Settings) -> Export:
    if settings.data_dir.is_dir():
        try:
            return server_export(settings)
        except InputError:
            log.warning(
                "the export %s cannot be read; scoring leads on their own columns",
                settings.data_dir,
            )
    return Export(config=DatasetConfig())


def _lead_scoring_day(as_of: str | None, export: Export, leads: pd.DataFrame) -> pd.Timestamp:
    if as_of:
        return parse_date(as_of, "as_of")
    candidates = []
    if export.tables():
        with contextlib.suppress(InputError):
            candidates.append(export.exported_at)
    if "created_at" in leads.columns and leads["created_at"].notna().any():
        candidates.append(pd.Timestamp(leads["created_at"].max()).normalize())
    if candidates:
        return max(candidates)
    return pd.Timestamp(utcnow()).normalize()


# ----------------------------------------------------------------------------------------
# outcomes
# ----------------------------------------------------------------------------------------


def _day(value: date | datetime | None) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    return value


def record_outcomes(
    settings: Settings,
    store: Store,
    *,
    opportunities: Sequence[dict[str, Any]] = (),
    leads: Sequence[dict[str, Any]] = (),
    source: str = "api",
) -> dict[str, Any]:
    """Store how deals ended and whether leads became SQOs (idempotent upserts).

    ``opportunities``: ``opportunity_id, status (won|lost), closed_at, amount``; ``leads``:
    ``lead_id`` with ``sqo_at`` and/or ``is_sqo``. The same id twice in one request is taken
    once when both rows say the same, and refused (naming both rows) when they disagree.
    """
    check_rows(len(opportunities) + len(leads), settings, "outcomes")
    deals = [
        DealOutcome(
            opportunity_id=str(o["opportunity_id"]),
            status=str(o["status"]),
            closed_at=_day(o["closed_at"]),  # type: ignore[arg-type]
            amount=None if o.get("amount") is None else float(o["amount"]),
        )
        for o in opportunities
    ]
    people = [
        LeadOutcome(
            lead_id=str(lead["lead_id"]),
            is_sqo=bool(lead["is_sqo"]) if lead.get("is_sqo") is not None else True,
            sqo_at=_day(lead.get("sqo_at")),
        )
        for lead in leads
    ]
    deals = _unique(deals, "opportunity_id", "opportunities")
    people = _unique(people, "lead_id", "leads")
    return {
        "opportunities": _counts(store.upsert_deal_outcomes(deals, source=source)),
        "leads": _counts(store.upsert_lead_outcomes(people, source=source)),
    }


def _unique(items: list[Any], key: str, what: str) -> list[Any]:
    first: dict[str, tuple[int, Any]] = {}
    for row, item in enumerate(items):
        ident = getattr(item, key)
        if ident not in first:
            first[ident] = (row, item)
        elif first[ident][1] != item:
            raise InputError(
                f"{what}: rows {first[ident][0]} and {row} (counted from 0) give different "
                f"outcomes for {key} {ident!r}; send one outcome per {key}."
            )
    return [item for _, item in first.values()]


def _counts(counts: UpsertCounts) -> dict[str, int]:
    return {"inserted": counts.inserted, "updated": counts.updated, "unchanged": counts.unchanged}


def sync_outcomes(settings: Settings, store: Store, export: Export) -> dict[str, Any]:
    """Read the outcomes an export knows into the store (idempotent).

    Deals: every won or lost opportunity with its ``closed_at`` and final amount. Leads: every
    lead whose SQO label the export date settles (``features.labels.lead_labels``: an SQO
    within the window, or the window passed without one), with its ``sqo_at``.
    """
    deals: list[DealOutcome] = []
    opps = export.opportunities
    if opps is not None and len(opps):
        status = opps["status"].astype("string")
        closed = (status.isin(["won", "lost"]) & opps["closed_at"].notna()).to_numpy(
            dtype=bool, na_value=False
        )
        done = opps.loc[closed]
        amounts = pd.to_numeric(done["amount"], errors="coerce")
        deals = [
            DealOutcome(str(i), str(s), pd.Timestamp(c).date(), None if pd.isna(a) else float(a))
            for i, s, c, a in zip(
                done["opportunity_id"].astype("string").to_numpy(),
                done["status"].astype("string").to_numpy(),
                done["closed_at"].to_numpy(),
                amounts.to_numpy(),
                strict=True,
            )
        ]
    people: list[LeadOutcome] = []
    if export.leads is not None and len(export.leads):
        labels = lead_labels(export)
        sqo_at = (
            pd.Series(
                export.leads["sqo_at"].to_numpy(),
                index=export.leads["lead_id"].astype("string").to_numpy(),
            )
            if "sqo_at" in export.leads.columns
            else None
        )
        decided = labels.loc[labels["decided"].to_numpy(dtype=bool)]
        for lead_id, is_sqo in zip(decided.index, decided["is_sqo"].to_numpy(), strict=True):
            when = sqo_at.get(lead_id) if sqo_at is not None and is_sqo == 1 else None
            people.append(
                LeadOutcome(
                    str(lead_id),
                    bool(is_sqo == 1),
                    None if when is None or pd.isna(when) else pd.Timestamp(when).date(),
                )
            )
    return {
        "opportunities": _counts(store.upsert_deal_outcomes(deals, source="sync")),
        "leads": _counts(store.upsert_lead_outcomes(people, source="sync")),
    }


# ----------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------


def calibration_report(
    store: Store,
    *,
    model: str,
    since: date | None = None,
    segment: str | None = None,
    n_bins: int = 10,
) -> dict[str, Any]:
    """Stored predictions of ``model`` against the outcomes known so far.

    Overall headline numbers (``models.calibration.summarize``: n, base rate, mean predicted,
    AUC, log loss, Brier, ECE), the reliability table, and the same numbers by model version,
    segment and week of the fiscal quarter of the prediction's as-of day. ``pending`` counts
    predictions whose outcome is not known yet. For the close-probability model (without a
    segment), ``forecasts``: each stored forecast of a period that has ended beside the amount
    won in it according to the outcomes known (``actual_won``, ``error``, ``within_p10_p90``).
    """
    rows, pending = store.scored_outcomes(model, since=since, segment=segment)
    y = rows["y"].to_numpy(dtype="float64")
    p = rows["p"].to_numpy(dtype="float64")
    overall = metrics.summarize(y, p, n_bins=n_bins)
    overall.pop("top_decile_lift", None)
    table = metrics.reliability_table(y, p, n_bins=n_bins) if len(rows) else None

    def by(column: str) -> list[dict[str, Any]]:
        if rows.empty:
            return []
        keys = rows[column]
        if column == "week_of_quarter":
            keys = pd.to_numeric(keys, errors="coerce").astype("Int64")
        frame = metrics.summarize_by(y, p, keys.astype("string"))
        frame = frame.drop(columns=["top_decile_lift"], errors="ignore")
        if column == "week_of_quarter":
            # week 10 after week 9, not after week 1
            week = pd.to_numeric(frame["group"], errors="coerce")
            frame = frame.assign(group=week.astype("Int64")).sort_values("group", kind="stable")
        return _records(frame.rename(columns={"group": column}))

    forecasts: list[dict[str, Any]] = []
    if model == "close_probability" and segment is None:
        made = store.forecasts_against_actuals(ended_before=utcnow().date(), since=since)
        if not made.empty:
            actual = made["actual_won"].to_numpy(dtype="float64")
            made = made.assign(
                error=actual - made["expected"].to_numpy(dtype="float64"),
                within_p10_p90=(made["p10"] <= actual) & (actual <= made["p90"]),
            )
            forecasts = _records(made.drop(columns=["batch_id"]))
    return {
        "model": model,
        "since": since,
        "segment": segment,
        "forecasts": forecasts,
        "n_predictions": len(rows) + pending,
        "n_with_outcome": len(rows),
        "pending": pending,
        "overall": {k: _plain(v) for k, v in overall.items()},
        "reliability": [] if table is None else _records(table),
        "by_model_version": by("model_version"),
        "by_segment": by("segment"),
        "by_week_of_quarter": by("week_of_quarter"),
    }
