"""Reading and writing a CRM export (data-contract.md): typed, validated, all-or-nothing.

``read_export(path)`` returns an :class:`Export` whose tables carry contract dtypes:
text columns as pandas strings (``NA`` stays the text "NA"; only an empty cell is missing),
dates as naive UTC ``datetime64``, numbers as ``float64``, booleans as nullable ``boolean``.
A broken export raises :class:`~features.contract.ContractError` listing every problem.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.contract import (
    FALSE_WORDS,
    PRIMARY_KEYS,
    TABLES,
    TRUE_WORDS,
    ContractError,
    Problem,
    columns_of,
)
from features.errors import InputError

TABLE_NAMES = ("opportunities", "stage_history", "activities", "leads")
DATE_DTYPE = "datetime64[ns]"
#: the files of an export folder: what ``read_export`` reads and ``write_export`` writes or removes
EXPORT_FILES = frozenset(
    {f"{name}.{ext}" for name in TABLE_NAMES for ext in ("csv", "parquet")}
    | {"dataset.yaml", "dataset.yml"}
)
#: spreadsheet workbooks, which are not read: a sheet has to be saved as CSV first
SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xls", ".ods", ".numbers"})


@dataclass(frozen=True)
class StageDef:
    """A stage from ``dataset.yaml``: its CRM probability and whether it is a closed stage."""

    name: str
    probability: float | None = None
    won: bool = False
    lost: bool = False


@dataclass
class DatasetConfig:
    """The optional ``dataset.yaml`` of an export."""

    exported_at: pd.Timestamp | None = None
    fiscal_year_start_month: int = 1
    sqo_window_days: int = 90
    stages: list[StageDef] = field(default_factory=list)
    features: dict[str, list[str]] = field(default_factory=dict)

    def to_yaml_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.exported_at is not None:
            out["exported_at"] = self.exported_at.date().isoformat()
        out["fiscal_year_start_month"] = self.fiscal_year_start_month
        out["sqo_window_days"] = self.sqo_window_days
        if self.stages:
            rows = []
            for s in self.stages:
                row: dict[str, Any] = {"name": s.name}
                if s.probability is not None:
                    row["probability"] = s.probability
                if s.won:
                    row["won"] = True
                if s.lost:
                    row["lost"] = True
                rows.append(row)
            out["stages"] = rows
        if self.features:
            out["features"] = {k: list(v) for k, v in self.features.items()}
        return out


@dataclass
class Export:
    """A CRM export in memory. Tables that the export does not have are ``None``."""

    opportunities: pd.DataFrame | None = None
    stage_history: pd.DataFrame | None = None
    activities: pd.DataFrame | None = None
    leads: pd.DataFrame | None = None
    config: DatasetConfig = field(default_factory=DatasetConfig)
    path: Path | None = None

    def table(self, name: str) -> pd.DataFrame | None:
        return getattr(self, name)  # type: ignore[no-any-return]

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables present, by name."""
        return {n: t for n in TABLE_NAMES if (t := self.table(n)) is not None}

    def replace(self, **changes: Any) -> Export:
        return replace(self, **changes)

    @property
    def exported_at(self) -> pd.Timestamp:
        """The export date: ``dataset.yaml``'s ``exported_at``, else the latest date in the files."""
        if self.config.exported_at is not None:
            return self.config.exported_at
        latest = latest_date(self)
        if latest is None:
            raise InputError("The export holds no dates: cannot tell when it was exported.")
        return latest

    def check_as_of(self, day: pd.Timestamp, what: str = "--as-of") -> pd.Timestamp:
        """``day`` when the export can describe it: not after the export date.

        Features as of a later day would take the days after the export for days in which
        nothing happened (no activity, no stage move), so such a day is refused.
        """
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


def _line_numbers(path: Path, mask: np.ndarray) -> tuple[int, ...]:
    offset = 1 if path.suffix == ".parquet" else 2
    return tuple(int(i) + offset for i in np.flatnonzero(mask))


def _problem(
    path: Path,
    column: str | None,
    message: str,
    mask: np.ndarray | None = None,
    expected: str | None = None,
) -> Problem:
    lines = _line_numbers(path, mask) if mask is not None else ()
    return Problem(
        file=path.name,
        column=column,
        message=message,
        lines=lines[:20],
        n_rows=int(mask.sum()) if mask is not None else 0,
        expected=expected,
    )


def _to_datetime(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse ISO 8601 dates/timestamps; aware ones converted to UTC then made naive."""
    if pd.api.types.is_datetime64_any_dtype(values):
        out = values
        if getattr(out.dt, "tz", None) is not None:
            out = out.dt.tz_convert("UTC").dt.tz_localize(None)
        return out.astype(DATE_DTYPE), np.zeros(len(values), dtype=bool)
    text = values.astype("string").str.strip()
    present = text.notna().to_numpy()
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    bad = present & parsed.isna().to_numpy()
    out = parsed.dt.tz_localize(None).astype(DATE_DTYPE)
    return out, bad


def _to_number(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64"), np.zeros(len(values), dtype=bool)
    text = values.astype("string").str.strip()
    present = text.notna().to_numpy()
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    bad = present & parsed.isna().to_numpy()
    return parsed, bad


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
    if pd.api.types.is_string_dtype(values) or values.dtype == object:
        out = values.astype("string")
    else:  # numbers in a Parquet text column: keep them as their text
        out = values.astype("string")
    return out.str.strip().replace("", pd.NA)


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
            parsed, bad = _to_datetime(values)
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
            neg = (parsed < 0).fillna(False).to_numpy(dtype=bool)
            if col.non_negative and neg.any():
                problems.append(
                    _problem(
                        path,
                        name,
                        f"{int(neg.sum())} value(s) are negative",
                        neg,
                        expected="a number ≥ 0",
                    )
                )
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


def read_config(folder: Path) -> DatasetConfig:
    """Parse ``dataset.yaml`` (absent = defaults)."""
    path = folder / "dataset.yaml"
    if not path.exists():
        path = folder / "dataset.yml"
        if not path.exists():
            return DatasetConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise ContractError(
            [Problem(file=path.name, message=unreadable_yaml(exc), expected="a YAML mapping")]
        ) from None
    return parse_config(data, path.name)


def unreadable_yaml(exc: Exception) -> str:
    """Why a YAML file could not be loaded, from the error ``yaml.safe_load`` (or decoding) raised."""
    if isinstance(exc, UnicodeDecodeError):
        return f"is not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at position {exc.start})"
    if isinstance(exc, yaml.YAMLError):
        return f"is not valid YAML ({exc})"
    # PyYAML reads 2026-13-45 as a date and fails with a ValueError ("month must be in 1..12")
    return f"holds a date that does not exist ({exc}); write real dates as YYYY-MM-DD"


def parse_config(data: Any, file: str = "dataset.yaml") -> DatasetConfig:
    """A :class:`DatasetConfig` from the mapping of a ``dataset.yaml``."""
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ContractError(
            [
                Problem(
                    file=file,
                    message="is not a mapping",
                    expected="keys such as exported_at, stages",
                )
            ]
        )
    cfg = DatasetConfig()
    known = {"exported_at", "fiscal_year_start_month", "sqo_window_days", "stages", "features"}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        problems.append(
            Problem(
                file=file,
                column=unknown[0],
                message="unknown key",
                expected="one of " + ", ".join(sorted(known)),
            )
        )
    if data.get("exported_at") is not None:
        try:
            value = data["exported_at"]
            ts = pd.Timestamp(
                value.isoformat() if isinstance(value, (date, datetime)) else str(value)
            )
            if ts.tzinfo is not None:
                ts = ts.tz_convert("UTC").tz_localize(None)
            cfg.exported_at = ts.normalize()
        except (ValueError, TypeError):
            problems.append(
                Problem(
                    file=file,
                    column="exported_at",
                    message=f"{data['exported_at']!r} is not a date",
                    expected="an ISO date such as 2026-11-01",
                )
            )
    month = data.get("fiscal_year_start_month", 1)
    if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
        problems.append(
            Problem(
                file=file,
                column="fiscal_year_start_month",
                message=f"{month!r} is not a month",
                expected="a whole number from 1 to 12",
            )
        )
    else:
        cfg.fiscal_year_start_month = month
    window = data.get("sqo_window_days", 90)
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        problems.append(
            Problem(
                file=file,
                column="sqo_window_days",
                message=f"{window!r} is not a number of days",
                expected="a whole number > 0",
            )
        )
    else:
        cfg.sqo_window_days = window
    stages = data.get("stages") or []
    if not isinstance(stages, list):
        problems.append(
            Problem(
                file=file,
                column="stages",
                message="is not a list",
                expected="a list of {name, probability}",
            )
        )
        stages = []
    seen: set[str] = set()
    for i, s in enumerate(stages, start=1):
        if not isinstance(s, dict) or not s.get("name"):
            problems.append(
                Problem(
                    file=file,
                    column="stages",
                    message=f"entry {i} has no name",
                    expected="{name: Discovery, probability: 0.1}",
                )
            )
            continue
        name = str(s["name"])
        prob = s.get("probability")
        if prob is not None and (
            isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1
        ):
            problems.append(
                Problem(
                    file=file,
                    column="stages",
                    message=f"stage {name!r} has probability {prob!r}",
                    expected="a probability from 0 to 1",
                )
            )
            prob = None
        flags = {k: s.get(k, False) for k in ("won", "lost")}
        for k, v in flags.items():
            if not isinstance(v, bool):
                problems.append(
                    Problem(
                        file=file,
                        column="stages",
                        message=f"stage {name!r} has {k}: {v!r}",
                        expected=f"{k}: true or {k}: false (YAML booleans, not text)",
                    )
                )
        if flags["won"] is True and flags["lost"] is True:
            problems.append(
                Problem(
                    file=file,
                    column="stages",
                    message=f"stage {name!r} is marked both won and lost",
                    expected="won: true or lost: true, not both",
                )
            )
        if name in seen:
            problems.append(
                Problem(
                    file=file,
                    column="stages",
                    message=f"stage {name!r} is listed twice",
                    expected="each stage once",
                )
            )
        seen.add(name)
        cfg.stages.append(
            StageDef(
                name=name,
                probability=None if prob is None else float(prob),
                won=flags["won"] is True,
                lost=flags["lost"] is True,
            )
        )
    feats = data.get("features") or {}
    if not isinstance(feats, dict) or not all(isinstance(v, list) for v in feats.values()):
        problems.append(
            Problem(
                file=file,
                column="features",
                message="is not a mapping of table to column list",
                expected="features: {opportunities: [competitor]}",
            )
        )
    else:
        bad_tables = sorted(set(feats) - {"opportunities", "leads"})
        if bad_tables:
            problems.append(
                Problem(
                    file=file,
                    column="features",
                    message=f"names an unknown table {bad_tables[0]!r}",
                    expected="opportunities or leads",
                )
            )
        cfg.features = {str(k): [str(c) for c in v] for k, v in feats.items()}
    if problems:
        raise ContractError(problems)
    return cfg


def read_export(path: str | os.PathLike[str], *, require: Iterable[str] = ()) -> Export:
    """Read and validate the CRM export in folder ``path``.

    Parameters
    ----------
    path
        The export folder (data-contract.md).
    require
        Tables the caller needs (e.g. ``("opportunities",)`` to forecast); a missing one is an
        input error naming the file expected.

    Raises
    ------
    InputError
        The folder does not exist, or a required table is absent.
    ContractError
        Any file breaks the contract; every problem found is listed.
    """
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
    if not structural:
        problems.extend(check_relations(frames, files, config))
    if problems:
        raise ContractError(problems)
    export = Export(**frames, config=config, path=folder)  # type: ignore[arg-type]
    return export


def check_relations(
    frames: dict[str, pd.DataFrame], files: dict[str, Path], config: DatasetConfig
) -> list[Problem]:
    """Rules across rows and files: keys, dates in order, closed deals with a close date, …"""
    problems: list[Problem] = []
    for table, key in PRIMARY_KEYS.items():
        if table in frames:
            # empty ids are reported as empty cells, not as duplicates of each other
            keys = frames[table][key]
            dup = (keys.notna() & keys.duplicated(keep=False)).to_numpy(dtype=bool)
            if dup.any():
                ids = frames[table].loc[dup, key].astype(str).unique()[:3]
                problems.append(
                    _problem(
                        files[table],
                        key,
                        f"{len(frames[table].loc[dup, key].unique())} id(s) appear on more than one row (e.g. {', '.join(ids)})",
                        dup,
                        expected="each id once",
                    )
                )
    opps = frames.get("opportunities")
    if opps is not None:
        f = files["opportunities"]
        closed = opps["status"].isin(["won", "lost"]).to_numpy(dtype=bool)
        no_close = (
            closed & opps["closed_at"].isna().to_numpy(dtype=bool)
            if "closed_at" in opps
            else closed
        )
        if no_close.any():
            problems.append(
                _problem(
                    f,
                    "closed_at",
                    f"{int(no_close.sum())} won/lost deal(s) have no close date",
                    no_close,
                    expected="closed_at on every won or lost deal",
                )
            )
        if "closed_at" in opps:
            open_with = (opps["status"] == "open").to_numpy(dtype=bool) & opps[
                "closed_at"
            ].notna().to_numpy(dtype=bool)
            if open_with.any():
                problems.append(
                    _problem(
                        f,
                        "closed_at",
                        f"{int(open_with.sum())} open deal(s) have a close date",
                        open_with,
                        expected="closed_at empty while status is open",
                    )
                )
            before = (
                (opps["closed_at"].dt.normalize() < opps["created_at"].dt.normalize())
                .fillna(False)
                .to_numpy(dtype=bool)
            )
            if before.any():
                problems.append(
                    _problem(
                        f,
                        "closed_at",
                        f"{int(before.sum())} deal(s) close before they were created",
                        before,
                        expected="closed_at ≥ created_at",
                    )
                )
        problems.extend(_undeclared_stages(opps, f, config, "deal(s)"))
    hist = frames.get("stage_history")
    if hist is not None:
        f = files["stage_history"]
        if opps is None:
            problems.append(
                Problem(
                    file=f.name,
                    message="has no opportunities file to belong to",
                    expected="opportunities.csv beside it",
                )
            )
        else:
            problems.extend(_unknown_opportunities(hist["opportunity_id"], f, opps))
            problems.extend(_undeclared_stages(hist, f, config, "row(s)"))
    acts = frames.get("activities")
    if acts is not None:
        f = files["activities"]
        opp_col = (
            acts["opportunity_id"]
            if "opportunity_id" in acts
            else pd.Series(pd.NA, index=acts.index)
        )
        lead_col = acts["lead_id"] if "lead_id" in acts else pd.Series(pd.NA, index=acts.index)
        neither = (opp_col.isna() & lead_col.isna()).to_numpy(dtype=bool)
        if neither.any():
            problems.append(
                _problem(
                    f,
                    "opportunity_id",
                    f"{int(neither.sum())} activit(ies) belong to no opportunity and no lead",
                    neither,
                    expected="an opportunity_id or a lead_id on every row",
                )
            )
        if opps is not None and "opportunity_id" in acts:
            problems.extend(_unknown_opportunities(opp_col, f, opps))
    leads = frames.get("leads")
    if leads is not None:
        problems.extend(check_leads(leads, files["leads"]))
    return problems


def _undeclared_stages(
    df: pd.DataFrame, path: Path, config: DatasetConfig, rows: str
) -> list[Problem]:
    """Stages that ``dataset.yaml`` does not declare (nothing to check when it declares none)."""
    declared = {s.name for s in config.stages}
    if not declared:
        return []
    bad = (df["stage"].notna() & ~df["stage"].isin(declared)).to_numpy(dtype=bool)
    if not bad.any():
        return []
    names = sorted(set(df.loc[bad, "stage"].astype(str)))[:5]
    return [
        _problem(
            path,
            "stage",
            f"{int(bad.sum())} {rows} have a stage not declared in dataset.yaml ({', '.join(names)})",
            bad,
            expected="one of " + ", ".join(sorted(declared)),
        )
    ]


def _unknown_opportunities(ids: pd.Series, path: Path, opps: pd.DataFrame) -> list[Problem]:
    """Rows whose opportunity_id is not in the opportunities file (empty ids are not checked)."""
    unknown = (ids.notna() & ~ids.isin(opps["opportunity_id"])).to_numpy(dtype=bool)
    if not unknown.any():
        return []
    examples = ids[unknown].astype(str).unique()[:3]
    return [
        _problem(
            path,
            "opportunity_id",
            f"{int(unknown.sum())} row(s) refer to opportunities not in opportunities ({', '.join(examples)})",
            unknown,
            expected="an opportunity_id present in the opportunities file",
        )
    ]


def check_leads(leads: pd.DataFrame, path: Path) -> list[Problem]:
    """Lead rules: a date or a label on every row, SQO not before creation."""
    problems: list[Problem] = []
    has_created = "created_at" in leads
    has_label = "is_sqo" in leads
    if not has_created and not has_label:
        return [
            Problem(
                file=path.name,
                column="created_at",
                message="a lead list needs created_at (or, where dates are unknown, is_sqo)",
                expected="a created_at column",
            )
        ]
    if has_created and not has_label:
        empty = leads["created_at"].isna().to_numpy(dtype=bool)
        if empty.any():
            problems.append(
                _problem(
                    path,
                    "created_at",
                    f"{int(empty.sum())} lead(s) have no created_at",
                    empty,
                    expected="the day each lead was added to a list",
                )
            )
    if has_created and "sqo_at" in leads:
        before = (leads["sqo_at"] < leads["created_at"]).fillna(False).to_numpy(dtype=bool)
        if before.any():
            problems.append(
                _problem(
                    path,
                    "sqo_at",
                    f"{int(before.sum())} lead(s) became SQOs before they were created",
                    before,
                    expected="sqo_at ≥ created_at",
                )
            )
    return problems


def read_leads_file(
    path: str | os.PathLike[str], *, extra_columns: Iterable[str] = ()
) -> pd.DataFrame:
    """A lead list to score (contract ``leads`` columns; labels not needed)."""
    file = Path(path)
    if file.is_dir():
        raise InputError(
            f"{file}: is a folder, not a file. Give the lead list to score as a CSV or Parquet file with a lead_id column."
        )
    if not file.is_file():
        raise InputError(
            f"{file}: no such file. Give the lead list to score as a CSV or Parquet file with a lead_id column."
        )
    raw = read_raw(file)
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
        dup = df["lead_id"].duplicated(keep=False).to_numpy(dtype=bool)
        if dup.any():
            problems.append(
                _problem(
                    file,
                    "lead_id",
                    "some lead ids appear on more than one row",
                    dup,
                    expected="each lead once",
                )
            )
    if problems:
        raise ContractError(problems)
    return df


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
