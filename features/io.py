"""Reading and writing a CRM export (data-contract.md): typed, checked, all-or-nothing.

``read_export(path)`` returns an :class:`Export` whose tables carry contract dtypes:
text columns as pandas strings (``NA`` stays the text "NA"; only an empty cell is missing),
dates as naive UTC ``datetime64``, numbers as ``float64``, booleans as nullable ``boolean``.
A broken export raises :class:`~features.contract.ContractError` listing every problem; rows
that contradict themselves are quarantined (left out, and listed in ``Export.quarantine``).

The export's three rooms: this module reads files, coerces types and writes exports;
:mod:`features.config` parses ``dataset.yaml``; :mod:`features.checks` holds the checks across
rows and files (what refuses an export, what is quarantined and why).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

# check_leads, check_relations, StageDef, parse_config and unreadable_yaml moved to the checks
# and config rooms; they are re-exported here ("X as X") for code that imports them from io
from features.checks import (
    DEFAULT_THRESHOLD,
    duplicate_ids,
    empty_quarantine,
    find_quarantine,
    ids_are_unique,
    quarantine_problems,
    quarantined_rows,
    refusals,
    threshold_problems,
    without_quarantined,
)
from features.checks import check_leads as check_leads
from features.checks import check_relations as check_relations
from features.config import DatasetConfig, read_config
from features.config import StageDef as StageDef
from features.config import parse_config as parse_config
from features.config import unreadable_yaml as unreadable_yaml
from features.contract import (
    FALSE_WORDS,
    TABLES,
    TRUE_WORDS,
    ContractError,
    Problem,
    columns_of,
)
from features.contract import problem_at as _problem
from features.errors import InputError

log = logging.getLogger(__name__)

#: what ``read_leads_file`` calls its input in a refusal
LEAD_LIST = "lead list"

TABLE_NAMES = ("opportunities", "stage_history", "activities", "leads")
DATE_DTYPE = "datetime64[ns]"
#: the files of an export folder: what ``read_export`` reads and ``write_export`` writes or removes
EXPORT_FILES = frozenset(
    {f"{name}.{ext}" for name in TABLE_NAMES for ext in ("csv", "parquet")}
    | {"dataset.yaml", "dataset.yml"}
)
#: per table, the date that says when a row happened (what :meth:`Export.has_dates` looks at)
EVENT_DATE_COLUMNS = {
    "opportunities": "created_at",
    "stage_history": "changed_at",
    "activities": "occurred_at",
    "leads": "created_at",
}
#: spreadsheet workbooks, which are not read: a sheet has to be saved as CSV first
SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xls", ".ods", ".numbers"})


@dataclass
class Export:
    """A CRM export in memory. Tables that the export does not have are ``None``.

    ``quarantine`` lists the rows :func:`read_export` left out of the tables because they
    contradict themselves (columns :data:`features.checks.QUARANTINE_COLUMNS`); empty for an
    export built in memory.
    """

    opportunities: pd.DataFrame | None = None
    stage_history: pd.DataFrame | None = None
    activities: pd.DataFrame | None = None
    leads: pd.DataFrame | None = None
    config: DatasetConfig = field(default_factory=DatasetConfig)
    path: Path | None = None
    quarantine: pd.DataFrame = field(default_factory=empty_quarantine)

    def table(self, name: str) -> pd.DataFrame | None:
        return getattr(self, name)  # type: ignore[no-any-return]

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables present, by name."""
        return {n: t for n in TABLE_NAMES if (t := self.table(n)) is not None}

    def replace(self, **changes: Any) -> Export:
        return replace(self, **changes)

    def quarantined_rows(self, *, by: str = "file") -> dict[str, int]:
        """Quarantined rows per file name, or per table with ``by="table"``; {} if none.

        A row quarantined for two reasons counts once.
        """
        return quarantined_rows(self.quarantine, by=by)

    def has_dates(self, table: str | None = None) -> bool:
        """Whether ``table`` (default: any table) holds a date that places its rows in time.

        The dates that count are when a row happened: ``created_at`` (opportunities, leads),
        ``changed_at`` (history), ``occurred_at`` (activities). A lead table with only
        ``is_sqo`` labels is undated: its rows can be learned from, but not in time order
        (no time split, no as-of). A table partly dated is dated: use the dates it has.
        """
        names = TABLE_NAMES if table is None else (table,)
        for name in names:
            df = self.table(name)
            column = EVENT_DATE_COLUMNS[name]
            if df is not None and column in df.columns and bool(df[column].notna().any()):
                return True
        return False

    @property
    def export_date(self) -> pd.Timestamp | None:
        """:attr:`exported_at`, or None when the export holds no dates at all."""
        if self.config.exported_at is not None:
            return self.config.exported_at
        return latest_date(self)

    @property
    def exported_at(self) -> pd.Timestamp:
        """The export date: ``dataset.yaml``'s ``exported_at``, else the latest date in the files.

        Raises
        ------
        InputError
            The export holds no dates at all (e.g. leads with ``is_sqo`` labels only) and
            ``dataset.yaml`` gives none: what asked for the date cannot be done on it. Check
            :meth:`has_dates` (or use :attr:`export_date`) where undated data has a meaning.
        """
        day = self.export_date
        if day is None:
            raise InputError(
                "The export holds no dates (no created_at, closed_at or other date in any "
                "file), so it has no export date to work from. This needs dated rows: add "
                "created_at to the files, or exported_at to dataset.yaml."
            )
        return day

    def check_as_of(self, day: pd.Timestamp, what: str = "--as-of") -> pd.Timestamp:
        """``day`` when the export can describe it: not after the export date.

        Features as of a later day would take the days after the export for days in which
        nothing happened (no activity, no stage move), so such a day is refused. An export
        without any date cannot place ``day`` and accepts it.
        """
        if self.export_date is None:
            return day
        exported = self.exported_at.normalize()
        if day.normalize() > exported:
            raise InputError(
                f"{what} {day.date()} is after the export date {exported.date()}: the export "
                "cannot tell what happened since (those days would look like days without "
                f"activity). Give a day on or before {exported.date()}, or a newer export."
            )
        return day

    # --- stages -------------------------------------------------------------------------
    @property
    def won_stages(self) -> set[str]:
        return {s.name for s in self.config.stages if s.won}

    @property
    def lost_stages(self) -> set[str]:
        return {s.name for s in self.config.stages if s.lost}

    def stage_order(self) -> list[str]:
        """Open stages in funnel order: from ``dataset.yaml``, else inferred from the history.

        Inference orders stages by the median share of a deal's life at which it is entered
        (from stage_history, or the current stage of open deals if there is no history).
        """
        declared = [s.name for s in self.config.stages if not (s.won or s.lost)]
        if declared:
            return declared
        return infer_stage_order(self)

    def stage_probabilities(self) -> dict[str, float]:
        """The CRM's own probability per declared stage (empty if ``dataset.yaml`` has none)."""
        return {
            s.name: float(s.probability) for s in self.config.stages if s.probability is not None
        }


def latest_date(export: Export) -> pd.Timestamp | None:
    """The latest date or timestamp found in any date column of the export, floored to the day."""
    latest: pd.Timestamp | None = None
    for name, df in export.tables().items():
        for col in TABLES[name]:
            if col.kind in ("date", "datetime") and col.name in df.columns:
                # expected close dates lie in the future by design: they do not date the export
                if col.name == "expected_close_date":
                    continue
                value = df[col.name].max()
                if pd.notna(value) and (latest is None or value > latest):
                    latest = value
    return None if latest is None else pd.Timestamp(latest).normalize()


def infer_stage_order(export: Export) -> list[str]:
    """Open stages ordered by when in a deal's life they are typically entered."""
    closed = export.won_stages | export.lost_stages
    opps = export.opportunities
    hist = export.stage_history
    if hist is not None and len(hist) and opps is not None:
        span = opps.set_index("opportunity_id")
        end = span["closed_at"].fillna(export.exported_at)
        start = span["created_at"]
        life = (end - start).dt.total_seconds().clip(lower=86400.0)
        h = hist[["opportunity_id", "changed_at", "stage"]].copy()
        h["share"] = (h["changed_at"] - h["opportunity_id"].map(start)).dt.total_seconds() / h[
            "opportunity_id"
        ].map(life)
        first = h.groupby(["opportunity_id", "stage"], observed=True)["share"].min().reset_index()
        order = first.groupby("stage", observed=True)["share"].median().sort_values()
        stages = [str(s) for s in order.index]
    elif opps is not None:
        stages = [str(s) for s in opps.loc[opps["status"] == "open", "stage"].value_counts().index]
        if not stages:
            stages = [str(s) for s in opps["stage"].unique()]
    else:
        return []
    closed_like = closed | _closed_stage_names(export)
    return [s for s in stages if s not in closed_like]


def _closed_stage_names(export: Export) -> set[str]:
    """Stages that only ever appear on closed deals' final rows (e.g. 'Closed Won')."""
    opps = export.opportunities
    if opps is None:
        return set()
    open_stages = set(opps.loc[opps["status"] == "open", "stage"].astype(str))
    closed_stages = set(opps.loc[opps["status"] != "open", "stage"].astype(str))
    return {
        s
        for s in closed_stages - open_stages
        if "closed" in s.lower() or s.lower() in {"won", "lost"}
    }


# ----------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------


def find_table_file(folder: Path, name: str) -> Path | None:
    """The file holding table ``name`` in ``folder`` (``.csv`` or ``.parquet``), if any."""
    candidates = [folder / f"{name}.csv", folder / f"{name}.parquet"]
    found = [p for p in candidates if p.exists()]
    if len(found) > 1:
        raise ContractError(
            [
                Problem(
                    file=f"{name}.csv / {name}.parquet",
                    message="both files exist, so it is unclear which one to read",
                    expected="one file per table",
                )
            ]
        )
    return found[0] if found else None


def not_utf8(path: Path, exc: UnicodeDecodeError, *, expected: str) -> ContractError:
    """The refusal of a text file that is not UTF-8, naming the first bad byte."""
    byte = exc.object[exc.start : exc.start + 1]
    return ContractError(
        [
            Problem(
                file=path.name,
                message=f"is not UTF-8 text (byte {byte!r} at position {exc.start})",
                expected=expected,
            )
        ]
    )


def read_raw(path: Path) -> pd.DataFrame:
    """A table file as text, untouched: every cell a string, empty cells missing."""
    if path.suffix.lower() in SPREADSHEET_SUFFIXES:
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message="is a spreadsheet workbook, which pipecast does not read",
                    expected="the sheet saved as CSV (UTF-8) or Parquet",
                )
            ]
        )
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
            # pandas keeps a named index (e.g. lead_id) as the index, not a column
            if any(name is not None for name in df.index.names):
                df = df.reset_index()
            return df
        return pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skipinitialspace=False,
            encoding="utf-8-sig",
        )
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, expected="a CSV saved as UTF-8, or a Parquet file") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message=f"cannot be read as a table ({exc})",
                    expected="a CSV with a header row or a Parquet file",
                )
            ]
        ) from None


#: the first and last days a date may fall on (what ``datetime64[ns]`` holds)
FIRST_DAY = pd.Timestamp.min.ceil("D")
LAST_DAY = pd.Timestamp.max.floor("D") - pd.Timedelta(days=1)


def _to_datetime(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse ISO 8601 dates/timestamps; aware ones converted to UTC then made naive.

    Returns the dates, the cells that are not dates, and the dates outside
    :data:`FIRST_DAY` … :data:`LAST_DAY` (left missing: a year mistyped, as 1025 for 2025).
    """
    none = np.zeros(len(values), dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(values):
        out = values
        if getattr(out.dt, "tz", None) is not None:
            out = out.dt.tz_convert("UTC").dt.tz_localize(None)
        far = _out_of_range(out)
        return out.mask(far).astype(DATE_DTYPE), none, far
    plain = _plain_dates(values)
    if plain is not None:
        return plain, none, none
    text = values.astype("string").str.strip()
    present = text.notna().to_numpy()
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    bad = present & parsed.isna().to_numpy()
    parsed = parsed.dt.tz_localize(None)
    far = _out_of_range(parsed)
    return parsed.mask(far).astype(DATE_DTYPE), bad, far


def _out_of_range(dates: pd.Series) -> np.ndarray:
    """The dates before :data:`FIRST_DAY` or after :data:`LAST_DAY` (naive dates)."""
    after = LAST_DAY + pd.Timedelta(days=1)
    return ((dates < FIRST_DAY) | (dates >= after)).to_numpy(dtype=bool)


def _to_number(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64"), np.zeros(len(values), dtype=bool)
    plain = _plain_numbers(values)
    if plain is not None:
        return plain, np.zeros(len(values), dtype=bool)
    text = values.astype("string").str.strip()
    present = text.notna().to_numpy()
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = present & parsed.isna().to_numpy()
    return parsed, bad


# Text read by Arrow's CSV reader is typed by Arrow's kernels where they give what pandas'
# parsers give (several times faster, no Python objects): a column whose every value has the
# plain shape below; any other value sends the whole column to pandas, which says what is
# wrong with it as it always has.

#: digits with an optional fraction, at most 15 characters: below 2**53 as an integer, so
#: both parsers round it once, to the same float (a sign, exponent or "nan" goes to pandas)
_PLAIN_NUMBER = r"^[0-9]+(\.[0-9]+)?$"
_PLAIN_NUMBER_CHARS = 15
#: a day, optionally with a time of day to the minute or second, in years 1700-2199 (inside
#: datetime64[ns]); Arrow refuses an impossible day or hour (2023-02-29, 24:00) and then
#: pandas reads the column
_PLAIN_DATE = r"^(1[7-9]|2[01])[0-9]{2}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?$"


def _arrow_text(values: pd.Series) -> Any:
    """``values`` as an Arrow array of their text, blanks trimmed; None unless they are held
    as Arrow strings (the text columns of a CSV)."""
    if not isinstance(values.array, pd.arrays.ArrowStringArray):
        return None
    import pyarrow.compute as pc

    # the column's own Arrow data, not a copy (``pa.chunked_array`` would take each string
    # for a chunk)
    return pc.utf8_trim_whitespace(values.array.__arrow_array__())


def _all_match(text: Any, pattern: str, *, max_chars: int | None = None) -> bool:
    """Whether every present value of ``text`` matches ``pattern`` (an empty column does)."""
    import pyarrow.compute as pc

    shaped = pc.match_substring_regex(text, pattern)
    if max_chars is not None:
        shaped = pc.and_(shaped, pc.less_equal(pc.utf8_length(text), max_chars))
    return bool(pc.all(shaped).as_py() is not False)


def _plain_numbers(values: pd.Series) -> pd.Series | None:
    """``values`` as float64 when every value is a plain number (:data:`_PLAIN_NUMBER`), read
    by Arrow; None otherwise."""
    text = _arrow_text(values)
    if text is None or not _all_match(text, _PLAIN_NUMBER, max_chars=_PLAIN_NUMBER_CHARS):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    numbers = pc.cast(text, pa.float64()).to_numpy()
    return pd.Series(numbers, index=values.index, name=values.name, dtype="float64")


def _plain_dates(values: pd.Series) -> pd.Series | None:
    """``values`` as naive datetime64[ns] when every value is a plain ISO 8601 day or time
    (:data:`_PLAIN_DATE`) that Arrow reads; None otherwise."""
    text = _arrow_text(values)
    if text is None or not _all_match(text, _PLAIN_DATE):
        return None
    import pyarrow as pa

    try:
        stamps = text.cast(pa.timestamp("ns"))
    except pa.ArrowInvalid:  # an impossible day or time: pandas finds and names it
        return None
    return pd.Series(stamps.to_numpy(), index=values.index, name=values.name, dtype=DATE_DTYPE)


def _to_bool(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_bool_dtype(values):
        return values.astype("boolean"), np.zeros(len(values), dtype=bool)
    text = values.astype("string").str.strip().str.lower()
    is_true = text.isin(TRUE_WORDS).fillna(False).to_numpy(dtype=bool)
    is_false = text.isin(FALSE_WORDS).fillna(False).to_numpy(dtype=bool)
    present = text.notna().to_numpy()
    bad = present & ~is_true & ~is_false
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    out[is_true] = True
    out[is_false] = False
    return out, bad


def _to_string(values: pd.Series) -> pd.Series:
    text = _arrow_text(values)
    if text is not None:
        # what the pandas steps below give, in two Arrow kernels
        import pyarrow as pa
        import pyarrow.compute as pc

        kept = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
        return pd.Series(kept, index=values.index, name=values.name, dtype="string")
    if pd.api.types.is_string_dtype(values) or values.dtype == object:
        out = values.astype("string")
    else:  # numbers in a Parquet text column: keep them as their text
        out = values.astype("string")
    return out.str.strip().replace("", pd.NA)


def _is_nested(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict, set, np.ndarray))


def _nested_values(values: pd.Series) -> str | None:
    """What a column holds when its cells are lists or records (Parquet list/struct/map)."""
    if values.dtype != object:
        return None
    # a Parquet column has one type: its first present cell tells whether it is nested
    first = next(
        (v for v in values if _is_nested(v) or not pd.api.types.is_scalar(v) or pd.notna(v)), None
    )
    if isinstance(first, dict):
        return "records"
    return "lists" if _is_nested(first) else None


def coerce_table(
    raw: pd.DataFrame, table: str, path: Path, extra_required: Iterable[str] = ()
) -> tuple[pd.DataFrame, list[Problem]]:
    """Give ``raw`` the contract dtypes of ``table``; collect every per-cell problem."""
    problems: list[Problem] = []
    spec = columns_of(table)
    declared = set(extra_required)
    raw = raw.copy()
    raw.columns = [str(c).strip() for c in raw.columns]
    dupes = raw.columns[raw.columns.duplicated()].tolist()
    if dupes:
        problems.append(
            Problem(
                file=path.name,
                column=dupes[0],
                message="the column appears twice in the header",
                expected="each column once",
            )
        )
        return raw, problems
    missing = [c.name for c in spec.values() if c.required and c.name not in raw.columns]
    missing += [c for c in extra_required if c not in raw.columns and c not in missing]
    for name in missing:
        problems.append(
            Problem(
                file=path.name,
                column=name,
                message="a required column is missing",
                expected=f"a header with {name} (found: {', '.join(map(str, raw.columns[:12]))})",
            )
        )
    out = pd.DataFrame(index=pd.RangeIndex(len(raw)))
    for name in raw.columns:
        col = spec.get(name)
        values = raw[name].reset_index(drop=True)
        nested = _nested_values(values) if col is not None or name in declared else None
        if nested is not None:
            problems.append(
                _problem(
                    path,
                    name,
                    f"holds {nested} (a nested Parquet type), which cannot be used as a value",
                    values.map(_is_nested).to_numpy(dtype=bool),
                    expected="one plain text, number, date or true/false value per cell",
                )
            )
            out[name] = _to_string(values.map(str))
            continue
        if col is None:
            # Extra columns are kept as text unless already typed (Parquet). A column that
            # dataset.yaml declares as a feature is read as numbers when every value is one.
            if name in declared and not pd.api.types.is_numeric_dtype(values):
                number, bad = _to_number(values)
                if not bad.any() and number.notna().any():
                    out[name] = number
                    continue
            out[name] = values if pd.api.types.is_numeric_dtype(values) else _to_string(values)
            continue
        if col.kind in ("date", "datetime"):
            parsed, bad, far = _to_datetime(values)
            if bad.any():
                problems.append(
                    _problem(
                        path,
                        name,
                        f"{int(bad.sum())} value(s) are not dates",
                        bad,
                        expected="ISO 8601 dates such as 2026-03-14 or 2026-03-14T09:30:00",
                    )
                )
            if far.any():
                problems.append(
                    _problem(
                        path,
                        name,
                        f"{int(far.sum())} value(s) are dates before {FIRST_DAY.date()} or "
                        f"after {LAST_DAY.date()}",
                        far,
                        expected="a date in the years a CRM records (a mistyped year?)",
                    )
                )
        elif col.kind == "number":
            parsed, bad = _to_number(values)
            if bad.any():
                problems.append(
                    _problem(
                        path,
                        name,
                        f"{int(bad.sum())} value(s) are not numbers",
                        bad,
                        expected="a plain number such as 12500 or 12500.50",
                    )
                )
            # a negative amount parses: it is an inconsistent row, quarantined by
            # features.checks (or refused by the caller), not a broken file
        elif col.kind == "bool":
            parsed, bad = _to_bool(values)
            if bad.any():
                problems.append(
                    _problem(
                        path,
                        name,
                        f"{int(bad.sum())} value(s) are not true/false",
                        bad,
                        expected="true/false, yes/no or 1/0",
                    )
                )
        else:
            parsed = _to_string(values)
            if col.choices is not None:
                lowered = parsed.str.lower()
                bad = (
                    (parsed.notna() & ~lowered.isin(col.choices)).fillna(False).to_numpy(dtype=bool)
                )
                if bad.any():
                    found = sorted(set(parsed[bad].astype(str)))[:5]
                    problems.append(
                        _problem(
                            path,
                            name,
                            f"{int(bad.sum())} value(s) are not allowed (found {', '.join(repr(f) for f in found)})",
                            bad,
                            expected="one of " + " / ".join(col.choices),
                        )
                    )
                parsed = lowered
        if col.not_null:
            # an unparsable cell is reported as such above, not also as empty
            source = (
                parsed
                if col.kind == "string"
                else values.astype("string").str.strip().replace("", pd.NA)
            )
            empty = source.isna().to_numpy(dtype=bool)
            if empty.any() and name not in missing:
                problems.append(
                    _problem(
                        path,
                        name,
                        f"{int(empty.sum())} row(s) leave it empty",
                        empty,
                        expected="a value on every row",
                    )
                )
        out[name] = parsed
    return out, problems


@dataclass
class ReadPolicy:
    """How the exports read within :func:`read_policy` treat inconsistent rows, and what they held.

    ``quarantined`` gathers, per file read, how many of its rows were quarantined, so that an
    entry point can report them whichever function read the export.
    """

    strict: bool = False
    quarantine_threshold: float = DEFAULT_THRESHOLD
    quarantined: dict[Path, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Quarantined rows by file name, over every export read under this policy."""
        out: dict[str, int] = {}
        for file, n in self.quarantined.items():
            if n:
                out[file.name] = out.get(file.name, 0) + n
        return out


_POLICY: ContextVar[ReadPolicy | None] = ContextVar("pipecast_read_policy", default=None)


@contextmanager
def read_policy(
    *, strict: bool = False, quarantine_threshold: float = DEFAULT_THRESHOLD
) -> Iterator[ReadPolicy]:
    """Within the block, :func:`read_export` calls that do not say otherwise use these options.

    Entry points (a CLI command, a request) set the user's choice once here instead of threading
    it through every function between them and the read (scoring and training read the export
    themselves). The policy yielded then tells how many rows each file read had quarantined.
    """
    policy = ReadPolicy(strict=strict, quarantine_threshold=quarantine_threshold)
    token = _POLICY.set(policy)
    try:
        yield policy
    finally:
        _POLICY.reset(token)


def read_export(
    path: str | os.PathLike[str],
    *,
    require: Iterable[str] = (),
    strict: bool | None = None,
    quarantine_threshold: float | None = None,
) -> Export:
    """Read and check the CRM export in folder ``path``.

    A broken file refuses the export; a row that contradicts itself (a deal closed before it
    was created, a history row of an unknown deal, …) is quarantined: taken out of the tables
    and listed in ``Export.quarantine`` with its file, line and reason (:mod:`features.checks`).

    Parameters
    ----------
    path
        The export folder (data-contract.md).
    require
        Tables the caller needs (e.g. ``("opportunities",)`` to forecast); a missing one is an
        input error naming the file expected.
    strict
        Refuse the export when any row would be quarantined, listing those rows. Default: the
        enclosing :func:`read_policy`'s, else False.
    quarantine_threshold
        The share of a table's rows (0 to 1) that may be quarantined; beyond it the export is
        refused as suspect. Default: the enclosing :func:`read_policy`'s, else 5%.

    Returns
    -------
    Export
        The tables without their quarantined rows, and the quarantine.

    Raises
    ------
    InputError
        The folder does not exist, or a required table is absent.
    ContractError
        Any file breaks the contract, a table is quarantined beyond the threshold, or (with
        ``strict``) any row would be quarantined; every problem found is listed.
    """
    policy = _POLICY.get()
    if strict is None:
        strict = policy.strict if policy is not None else False
    if quarantine_threshold is None:
        quarantine_threshold = (
            policy.quarantine_threshold if policy is not None else DEFAULT_THRESHOLD
        )
    if not 0.0 <= quarantine_threshold <= 1.0:
        raise InputError(
            f"quarantine threshold {quarantine_threshold!r}: give a share of a table's rows "
            "from 0 to 1 (0.05 = 5%)."
        )
    folder = Path(path)
    if folder.is_file():
        raise InputError(
            f"{folder}: is a file, not a folder. Give --data the folder that holds it "
            f"({folder.parent}) or another CRM export folder (see data-contract.md)."
        )
    if not folder.is_dir():
        raise InputError(
            f"{folder}: no such folder. Give --data the folder of a CRM export (see data-contract.md), or create a demo one with `pipecast simulate --out {folder}`."
        )
    config = read_config(folder)
    problems: list[Problem] = []
    frames: dict[str, pd.DataFrame] = {}
    files: dict[str, Path] = {}
    for name in TABLE_NAMES:
        try:
            file = find_table_file(folder, name)
        except ContractError as exc:
            problems.extend(exc.problems)
            continue
        if file is None:
            continue
        raw = read_raw(file)
        extra = config.features.get(name, []) if name in ("opportunities", "leads") else []
        df, found = coerce_table(raw, name, file, extra_required=extra)
        problems.extend(found)
        frames[name] = df
        files[name] = file
    for name in require:
        if name not in files and not any(p.file.startswith(name) for p in problems):
            problems.append(
                Problem(
                    file=f"{name}.csv",
                    message=f"is missing from {folder}",
                    expected=f"a file {name}.csv or {name}.parquet",
                )
            )
    if not files and not problems:
        problems.append(
            Problem(
                file=str(folder),
                message="holds no CRM export files",
                expected="opportunities.csv and/or leads.csv (see data-contract.md)",
            )
        )
    if files and not problems and all(len(df) == 0 for df in frames.values()):
        problems.append(
            Problem(
                file=", ".join(p.name for p in files.values()),
                message="no data rows: every file holds only a header",
                expected="one opportunity, lead or event per row below the header",
            )
        )
    structural = any(
        p.message.startswith(
            ("a required column", "the column appears", "cannot be read", "both files")
        )
        for p in problems
    )
    quarantine = empty_quarantine()
    if not structural:
        problems.extend(refusals(frames, files, config))
        # rows are tied to their deal by id: with duplicate ids the quarantine cannot be told
        if ids_are_unique(frames):
            quarantine = find_quarantine(frames, files)
        if strict:
            problems.extend(quarantine_problems(quarantine))
        elif not problems:
            problems.extend(threshold_problems(quarantine, frames, files, quarantine_threshold))
    if problems:
        raise ContractError(problems)
    kept = without_quarantined(frames, files, quarantine)
    counts = quarantined_rows(quarantine)
    if counts:
        log.info("%s: quarantined %s", folder, counts)
    if policy is not None:
        for file in files.values():
            policy.quarantined[file.resolve()] = counts.get(file.name, 0)
    return Export(**kept, config=config, path=folder, quarantine=quarantine)  # type: ignore[arg-type]


def read_leads_file(
    path: str | os.PathLike[str], *, extra_columns: Iterable[str] = ()
) -> pd.DataFrame:
    """A lead list to score (contract ``leads`` columns; labels not needed).

    A list is all-or-nothing: unlike an export, whose odd rows are quarantined, a list is
    scored as given, so any problem refuses it — before a model is loaded or a file written.

    Parameters
    ----------
    path
        A CSV or Parquet file, one lead per row, with a ``lead_id`` column.
    extra_columns
        Columns the caller needs besides the contract's (e.g. features ``dataset.yaml``
        declares); a missing one refuses the list.

    Raises
    ------
    InputError
        ``path`` is a folder or does not exist.
    ContractError
        Subject "lead list": no ``lead_id`` column, duplicate or empty ids, values that are
        not numbers / dates / true-false, a column of lists or records, a missing declared
        column, negative numbers or an SQO before creation, or no leads at all; each problem
        names the file, the column and the first offending lines.
    """
    file = Path(path)
    if file.is_dir():
        raise InputError(
            f"{file}: is a folder, not a file. Give the lead list to score as a CSV or Parquet file with a lead_id column."
        )
    if not file.is_file():
        raise InputError(
            f"{file}: no such file. Give the lead list to score as a CSV or Parquet file with a lead_id column."
        )
    try:
        raw = read_raw(file)
    except ContractError as exc:
        raise ContractError(exc.problems, subject=LEAD_LIST) from None
    df, problems = coerce_table(raw, "leads", file, extra_required=extra_columns)
    if not problems and len(df) == 0:
        problems.append(
            Problem(
                file=file.name,
                message="holds no leads (only a header)",
                expected="one lead per row below the header",
            )
        )
    if not problems:
        problems.extend(duplicate_ids(df, file, "lead_id", what="lead id"))
    if not problems:
        problems.extend(quarantine_problems(find_quarantine({"leads": df}, {"leads": file})))
    if problems:
        raise ContractError(problems, subject=LEAD_LIST)
    return df


#: rows per chunk when a lead list is read in chunks
LEAD_CHUNK_ROWS = 100_000


def iter_leads_file(
    path: str | os.PathLike[str],
    *,
    chunk_rows: int = LEAD_CHUNK_ROWS,
    extra_columns: Iterable[str] = (),
) -> Iterator[tuple[int, pd.DataFrame, list[Problem]]]:
    """A lead list read in chunks of ``chunk_rows`` rows, typed as :func:`read_leads_file` types it.

    Yields ``(first_row, chunk, problems)``: the 0-based position of the chunk's first row in
    the list, the chunk (contract dtypes, positional index from 0) and its per-row problems
    (unparsable values, empty ids, negative numbers, an SQO before creation) with the file's
    true line numbers. Checks across rows (duplicate ids, an empty list) are the caller's: it
    sees every chunk. Memory holds one chunk at a time. A CSV is parsed by Arrow's reader where
    it reads it as pandas' does (text straight into Arrow strings, several times faster), by
    pandas' otherwise (:func:`_raw_chunks`); a column of plain numbers, dates or text is then
    typed by Arrow's kernels, any other by pandas' parsers (the same values either way).

    Raises
    ------
    InputError
        ``path`` is a folder or does not exist.
    ContractError
        Subject "lead list": the file cannot be read as a table (not UTF-8, broken quoting, a
        spreadsheet workbook).
    """
    file = Path(path)
    if file.is_dir() or not file.is_file():
        read_leads_file(file)  # the same refusal as reading it whole
    if file.suffix.lower() in SPREADSHEET_SUFFIXES:
        try:
            read_raw(file)
        except ContractError as exc:
            raise ContractError(exc.problems, subject=LEAD_LIST) from None
    first = 0
    try:
        for raw in _raw_chunks(file, chunk_rows):
            raw = raw.reset_index(drop=True)
            df, problems = coerce_table(raw, "leads", file, extra_required=extra_columns)
            if not problems:
                quarantine = find_quarantine({"leads": df}, {"leads": file})
                problems = quarantine_problems(quarantine)
            yield first, df, [_shifted(p, first) for p in problems]
            first += len(raw)
    except UnicodeDecodeError as exc:
        raise ContractError(
            not_utf8(file, exc, expected="a CSV saved as UTF-8, or a Parquet file").problems,
            subject=LEAD_LIST,
        ) from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        raise ContractError(
            [
                Problem(
                    file=file.name,
                    message=f"cannot be read as a table ({exc})",
                    expected="a CSV with a header row or a Parquet file",
                )
            ],
            subject=LEAD_LIST,
        ) from None


def _raw_chunks(file: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows as text (CSV, as :func:`read_raw`) or as stored (Parquet), by chunks."""
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(file)
        names = parquet.schema_arrow.names
        empty = True
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            empty = False
            # an unnamed saved index is not a column of the list
            yield batch.to_pandas().drop(columns=["__index_level_0__"], errors="ignore")
        if empty:
            yield pd.DataFrame({n: [] for n in names if n != "__index_level_0__"})
        return
    done = 0
    try:
        for chunk in _arrow_csv_chunks(file, chunk_rows):
            yield chunk
            done += 1
        return
    except _NotForArrow:
        pass  # pandas reads what Arrow's reader refuses, and says what is wrong with it
    with pd.read_csv(
        file,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        skipinitialspace=False,
        encoding="utf-8-sig",
        chunksize=chunk_rows,
    ) as reader:
        empty = True
        for i, chunk in enumerate(reader):
            empty = False
            if i >= done:  # the chunks Arrow's reader gave are not given again
                yield chunk
        if empty:
            yield pd.read_csv(file, dtype=str, nrows=0, encoding="utf-8-sig")


class _NotForArrow(Exception):
    """The file is one Arrow's CSV reader would read otherwise than pandas, or not at all."""


#: bytes Arrow's CSV reader parses at a time (several blocks make a chunk of a large list)
_ARROW_BLOCK_BYTES = 4 << 20


def _arrow_csv_chunks(file: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The CSV's rows as text by chunks of ``chunk_rows``, read by Arrow's CSV reader (several
    times faster than pandas', and text straight into Arrow strings): the very frames the
    pandas reader of :func:`_raw_chunks` gives. Raises :class:`_NotForArrow`, before or between
    chunks, wherever the two could differ (a header with an empty or repeated name, a row with
    too few or too many cells, text that is not UTF-8, an empty file): pandas then reads the
    rest of the file and reports its problems as it always has."""
    import csv

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (UnicodeDecodeError, csv.Error, OSError):
        raise _NotForArrow from None
    # pandas names an empty header cell "Unnamed: i" and repeated ones "x.1": its frames decide
    if not header or any(not h for h in header) or len(set(header)) != len(header):
        raise _NotForArrow
    try:
        reader = pa_csv.open_csv(
            file,
            read_options=pa_csv.ReadOptions(block_size=_ARROW_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                # large strings: what pandas' Arrow-backed text holds (no cast per column)
                column_types={h: pa.large_string() for h in header},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowException, OSError):
        raise _NotForArrow from None
    if reader.schema.names != header:
        raise _NotForArrow
    pending: list[pa.RecordBatch] = []
    held = 0
    empty = True
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowException, OSError):
            raise _NotForArrow from None
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield _text_frame(table.slice(0, chunk_rows), header)
            empty = False
            rest = table.slice(chunk_rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held or empty:
        yield _text_frame(pa.Table.from_batches(pending, schema=reader.schema), header)


def _text_frame(table: Any, header: list[str]) -> pd.DataFrame:
    """An Arrow table of text columns as the frame pandas' CSV reader gives (``str`` columns,
    NaN for an empty cell, a positional index)."""
    return pd.DataFrame(
        {
            name: pd.Series(table.column(i), dtype=pd.StringDtype("pyarrow", na_value=np.nan))
            for i, name in enumerate(header)
        }
    )


def _shifted(problem: Problem, rows: int) -> Problem:
    """``problem`` of a chunk, its lines moved to the file's own (the chunk starts at ``rows``)."""
    return replace(problem, lines=tuple(n + rows for n in problem.lines))


# ----------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------


def _format_for_csv(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for name in out.columns:
        s = out[name]
        if pd.api.types.is_datetime64_any_dtype(s):
            has_time = bool(((s - s.dt.normalize()).dropna() != pd.Timedelta(0)).any())
            fmt = "%Y-%m-%dT%H:%M:%S" if has_time else "%Y-%m-%d"
            out[name] = s.dt.strftime(fmt)
        elif isinstance(s.dtype, pd.BooleanDtype) or pd.api.types.is_bool_dtype(s):
            out[name] = s.map(lambda v: "" if pd.isna(v) else ("true" if v else "false")).astype(
                "string"
            )
    return out


def _check_parents(target: Path, option: str) -> None:
    """Refuse ``target`` when its nearest existing parent is a file or cannot be written to."""
    for parent in target.absolute().parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise InputError(
                f"{option} {target}: {parent} is a file, so nothing can be written under it. "
                "Give a path inside a folder."
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(
                f"{option} {target}: the folder {parent} cannot be written to (permission "
                "denied). Give a path in a folder you can write to."
            )
        return


def check_output_file(
    path: str | os.PathLike[str],
    *,
    option: str = "--out",
    inputs: Iterable[Path] = (),
) -> Path:
    """``path`` as a table file to write, or an :class:`InputError` saying why it cannot be one.

    Refused: a folder, a path under a file, a folder that cannot be written to, and any of
    ``inputs`` (the files the command reads: writing over them would lose them).
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(
            f"{option} {target}: is a folder. Give a file to write, such as "
            f"{target / 'out.csv'} (or .parquet)."
        )
    _check_parents(target, option)
    resolved = target.resolve()
    for source in inputs:
        if source.resolve() == resolved:
            raise InputError(
                f"{option} {target}: is {source.name}, a file this command reads. Write to "
                "another file so that the input is kept."
            )
    return target


def check_output_folder(
    path: str | os.PathLike[str],
    *,
    option: str = "--out",
    inputs: Iterable[Path] = (),
) -> Path:
    """``path`` as an export folder to write, or an :class:`InputError` saying why it cannot be one.

    Refused: a file, a path under a file, a folder that cannot be written to, and a folder where
    writing the export would replace or remove one of ``inputs`` (the source files of an import).
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(
            f"{option} {target}: is a file, not a folder. Give a new (or an export) folder to "
            "write the export to."
        )
    _check_parents(target, option)
    if target.is_dir():
        resolved = target.resolve()
        clash = sorted(
            {s.name for s in inputs if s.name in EXPORT_FILES and s.resolve().parent == resolved}
        )
        if clash:
            raise InputError(
                f"{option} {target}: writing the export there would replace {', '.join(clash)}, "
                "which this import reads. Give another folder."
            )
    return target


def export_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The export files present in ``folder`` (tables and ``dataset.yaml``); none if no folder."""
    base = Path(folder)
    return sorted(base / name for name in EXPORT_FILES if (base / name).is_file())


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to ``path`` (Parquet if it ends in ``.parquet``, else CSV), atomically.

    The file appears whole or not at all: it is written beside the target and renamed.

    Raises
    ------
    InputError
        ``path`` is a folder or lies under a file (:func:`check_output_file`).
    """
    target = check_output_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if target.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            _format_for_csv(df).to_csv(tmp, index=False)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_export(export: Export, folder: str | os.PathLike[str], *, fmt: str = "csv") -> Path:
    """Write ``export`` to ``folder`` in the contract layout (plus ``dataset.yaml``).

    Everything is first written to a temporary folder beside the target, then moved in, so an
    interrupted write leaves no half-written export.

    Raises
    ------
    InputError
        ``folder`` is a file or lies under one, or it holds tables of another export that this
        one does not have (the result would mix two exports).
    """
    target = check_output_folder(folder)
    if target.is_dir():
        others = sorted(
            f"{name}.{ext}"
            for name in TABLE_NAMES
            if export.table(name) is None
            for ext in ("csv", "parquet")
            if (target / f"{name}.{ext}").exists()
        )
        if others:
            raise InputError(
                f"{target}: already holds {', '.join(others)}, which this export does not "
                "have; writing there would mix two exports. Give an empty or new folder, or "
                "move those files away."
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, df in export.tables().items():
            write_table(df, staging / f"{name}.{fmt}")
        (staging / "dataset.yaml").write_text(
            yaml.safe_dump(export.config.to_yaml_dict(), sort_keys=False), encoding="utf-8"
        )
        target.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            dest = target / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(item, dest)
        # a stale file of the other format would make the export ambiguous
        other = "parquet" if fmt == "csv" else "csv"
        for name in export.tables():
            (target / f"{name}.{other}").unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
