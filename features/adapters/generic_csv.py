"""Import any CRM report export (Salesforce, HubSpot, …) with a YAML mapping.

A mapping says, for each contract table, which file holds it, where each contract column comes
from and how to read its values. Examples: ``features/adapters/mappings/salesforce.yaml`` and
``hubspot.yaml``.

Mapping format
--------------
.. code-block:: yaml

    description: Salesforce Opportunity report + Opportunity History report   # free text
    defaults:                        # optional; every table inherits these, a table may override
      date_format: "%m/%d/%Y"        # strptime format, or a list tried in order (default ISO 8601)
      decimal: "."                   # decimal separator of numbers ("," for 1.234,50 €)
      thousands: ","                 # thousands separator (default: "," or "." opposite decimal)
      delimiter: ","                 # field separator of the files
      encoding: utf-8-sig
      stop_at_blank_row: true        # a fully blank row ends the data (report footers follow it)
    tables:
      opportunities:                 # a contract table (opportunities, stage_history, …)
        file: "*pportunit*.csv"      # glob pattern(s) in the source folder (default: <table>.csv)
        optional: false              # true: a missing file skips the table instead of failing
        columns:                     # output column: where its value comes from
          opportunity_id: Opportunity ID           # a plain string: copy that source column
          amount: {from: Amount}                   # the same, as a mapping with options
          status:
            cases:                                 # first matching case wins
              - {when: {Won: true}, value: won}    # booleans compare as true/false words
              - {when: {Closed: true}, value: lost}
            default: open                          # where no case matches
          closed_at: {from: Close Date, keep_when: {Closed: true}}   # empty on other rows
          source: {from: Lead Source, map: {Web: inbound, Partner Referral: partner}}
          region: {value: EMEA}                    # a constant
          crm_probability: {from: "Probability (%)", type: number, scale: 0.01}
    dataset:                         # copied into dataset.yaml (stages, fiscal_year_start_month, …)
      stages:
        - {name: Prospecting, probability: 0.1}
        - {name: Closed Won, probability: 1.0, won: true}

Column options (a plain string ``X`` is short for ``{from: X}``):

``from`` / ``value`` / ``cases``
    Exactly one: a source column, a constant, or a list of ``{when, value}`` rules.
``when`` (in cases) and ``keep_when``
    ``{source column: value or [values]}``; every entry must hold. A ``true``/``false`` value
    compares the cell as a boolean (true/yes/1 …), ``null`` matches an empty cell, anything else
    is compared as text, ignoring case and surrounding spaces. ``keep_when`` empties the column
    on rows where it does not hold.
``map`` and ``default``
    ``map`` replaces values (matched ignoring case); values it does not list are kept unless
    ``default`` is given. ``default`` is also the value of empty cells and of rows no case
    matches. Map a value to ``null`` to make it empty.
``split``
    Keep only the first part of a cell split on this separator (e.g. ``";"`` for a list of
    associated company ids).
``format``, ``decimal``, ``thousands``, ``scale``
    Date format(s) of a date column; number separators and a factor of a number column.
    Numbers may carry currency symbols or codes and spaces (``$1,234.50``, ``1.234,50 €``,
    ``USD 900``); parentheses mean negative.
``type``
    For columns that are not contract columns (kept as extra columns): ``string`` (default),
    ``number``, ``date``, ``datetime`` or ``bool``. Contract columns have the contract's type.

Files
-----
Given a folder, each table's file is found by its ``file`` pattern(s): no match (unless the
table is ``optional``) or several matches is an input error. Given a single file, only one
table is converted: the one whose pattern matches the file name, else the first table listed.

Errors
------
A mapping that cannot be used (unknown keys, a missing required contract column, a column
rule without a source, bad stages in ``dataset``) raises :class:`MappingError` naming every
offending key. A column the mapping names that is not in the file, or a value that cannot be
read as the mapping says, raises :class:`~features.contract.ContractError` naming the file,
the column, the mapping key and the first offending lines. The converted tables are then
checked exactly as :func:`features.io.read_export` checks an export.
"""

from __future__ import annotations

import codecs
import fnmatch
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.adapters._common import finish
from features.contract import FALSE_WORDS, TRUE_WORDS, ContractError, Problem, columns_of
from features.errors import InputError
from features.io import TABLE_NAMES, DatasetConfig, Export, parse_config, unreadable_yaml

log = logging.getLogger(__name__)

TOP_KEYS = {"description", "defaults", "tables", "dataset"}
READ_OPTIONS = {"date_format", "decimal", "thousands", "delimiter", "encoding", "stop_at_blank_row"}
TABLE_KEYS = READ_OPTIONS | {"file", "optional", "columns"}
COLUMN_KEYS = {
    "from",
    "value",
    "cases",
    "map",
    "default",
    "split",
    "keep_when",
    "format",
    "decimal",
    "thousands",
    "scale",
    "type",
}
EXTRA_TYPES = {"string", "number", "date", "datetime", "bool"}
#: what a constant (``value``, ``default``, a ``map`` or ``cases`` value) may be
SCALARS = (str, int, float, bool, type(None))
NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)$")


class MappingError(InputError):
    """The mapping file itself cannot be used; ``problems`` lists ``(key, message)`` pairs."""

    def __init__(self, mapping: Path, problems: list[tuple[str, str]]) -> None:
        self.mapping = mapping
        self.problems = problems
        lines = "\n".join(f"  - {key}: {message}" for key, message in problems)
        super().__init__(
            f"The mapping {mapping} cannot be used ({len(problems)} "
            f"problem{'s' if len(problems) > 1 else ''}):\n{lines}"
        )


@dataclass
class ColumnRule:
    """How one output column is built (see the module docstring)."""

    name: str
    key: str  # its key in the mapping, for messages
    kind: str  # contract kind or the declared type of an extra column
    source: str | None = None
    value: Any = None
    cases: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    has_cases: bool = False
    map: dict[str, Any] | None = None
    default: Any = None
    has_default: bool = False
    split: str | None = None
    keep_when: dict[str, Any] | None = None
    formats: list[str] | None = None
    decimal: str = "."
    thousands: str = ","
    scale: float | None = None

    def source_columns(self) -> list[str]:
        """Every source column the rule reads (with the mapping key that names it)."""
        cols = [self.source] if self.source is not None else []
        for when, _ in self.cases:
            cols.extend(when)
        cols.extend(self.keep_when or {})
        return cols


@dataclass
class TableRule:
    """How one contract table is built."""

    name: str
    patterns: list[str]
    optional: bool
    delimiter: str
    encoding: str
    stop_at_blank_row: bool
    columns: list[ColumnRule]


def convert(src: Path, mapping: Path) -> Export:
    """Convert a CRM report export with a YAML mapping into a pipecast export.

    Parameters
    ----------
    src
        A folder holding the report files, or a single report file (one table).
    mapping
        The mapping YAML (format in the module docstring).

    Returns
    -------
    The export, with the tables the mapping describes and its ``dataset`` section as
    ``dataset.yaml``. Dates are read as the mapping says and stored as naive timestamps; no time
    zone conversion is applied.

    Raises
    ------
    MappingError
        The mapping is unusable; every offending key is named.
    InputError
        ``src`` or a table's file is missing or ambiguous.
    ContractError
        A mapped column is not in its file, a value cannot be converted, or the result breaks
        the contract.
    """
    mapping = Path(mapping)
    tables, config = load_mapping(mapping)
    files = _resolve_files(Path(src), tables, mapping)
    frames: dict[str, pd.DataFrame] = {}
    sources: dict[str, Path] = {}
    problems: list[Problem] = []
    for table in tables:
        path = files.get(table.name)
        if path is None:
            continue
        df, found = _build_table(table, path, mapping)
        problems.extend(found)
        frames[table.name] = df
        sources[table.name] = path
    if problems:
        raise ContractError(problems)
    if not frames:
        raise InputError(f"{src}: no table of the mapping {mapping.name} was found.")
    if all(len(df) == 0 for df in frames.values()):
        names = ", ".join(p.name for p in sources.values())
        raise InputError(
            f"{names}: no data rows to import (only a header, or a blank line right below it: "
            "a blank row ends the data when stop_at_blank_row is on). Export the report with "
            "its rows, one record per line below the header."
        )
    export = finish(frames, config, sources)
    log.info(
        "imported %s with %s", ", ".join(f"{len(df)} {n}" for n, df in frames.items()), mapping.name
    )
    return export


def source_files(src: Path, mapping: Path) -> list[Path]:
    """The report files :func:`convert` would read from ``src`` with ``mapping``.

    Raises the same errors as :func:`convert` for an unusable mapping or missing files.
    """
    tables, _ = load_mapping(Path(mapping))
    return list(_resolve_files(Path(src), tables, Path(mapping)).values())


# ----------------------------------------------------------------------------------------
# the mapping
# ----------------------------------------------------------------------------------------


def load_mapping(path: Path) -> tuple[list[TableRule], DatasetConfig]:
    """Read and validate a mapping file: its table rules and the ``dataset.yaml`` it carries.

    Raises
    ------
    InputError
        The file does not exist.
    MappingError
        The mapping is not valid YAML or breaks the format; every problem is listed.
    """
    if not path.is_file():
        raise InputError(
            f"{path}: no such mapping file. Give --mapping a YAML file such as "
            "features/adapters/mappings/salesforce.yaml."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as exc:
        raise MappingError(path, [("(file)", unreadable_yaml(exc))]) from None
    problems: list[tuple[str, str]] = []
    if not isinstance(data, dict):
        raise MappingError(path, [("(file)", "is not a YAML mapping with a 'tables' key")])
    for key in sorted(set(map(str, data)) - TOP_KEYS):
        problems.append((key, f"unknown key (expected one of {', '.join(sorted(TOP_KEYS))})"))
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(("defaults", "is not a mapping"))
        defaults = {}
    for key in sorted(set(map(str, defaults)) - READ_OPTIONS):
        problems.append(
            (f"defaults.{key}", f"unknown key (expected one of {', '.join(sorted(READ_OPTIONS))})")
        )

    tables: list[TableRule] = []
    raw_tables = data.get("tables")
    if not isinstance(raw_tables, dict) or not raw_tables:
        problems.append(("tables", "missing or empty: say which file holds each contract table"))
        raw_tables = {}
    for name, spec in raw_tables.items():
        key = f"tables.{name}"
        if name not in TABLE_NAMES:
            problems.append((key, f"unknown table (expected one of {', '.join(TABLE_NAMES)})"))
            continue
        if not isinstance(spec, dict):
            problems.append((key, "is not a mapping with 'file' and 'columns'"))
            continue
        rule = _table_rule(str(name), spec, defaults, key, problems)
        if rule is not None:
            tables.append(rule)

    config = DatasetConfig()
    dataset = data.get("dataset") or {}
    try:
        config = parse_config(dataset, "dataset")
    except ContractError as exc:
        for p in exc.problems:
            problems.append(
                (
                    f"dataset.{p.column}" if p.column else "dataset",
                    p.message + (f"; expected {p.expected}" if p.expected else ""),
                )
            )
    if problems:
        # a bad default is found once per table that inherits it: name it once
        raise MappingError(path, list(dict.fromkeys(problems)))
    return tables, config


def _table_rule(
    name: str,
    spec: dict[str, Any],
    defaults: dict[str, Any],
    key: str,
    problems: list[tuple[str, str]],
) -> TableRule | None:
    for k in sorted(set(map(str, spec)) - TABLE_KEYS):
        problems.append(
            (f"{key}.{k}", f"unknown key (expected one of {', '.join(sorted(TABLE_KEYS))})")
        )
    opts = {**defaults, **{k: v for k, v in spec.items() if k in READ_OPTIONS}}
    patterns = spec.get("file", f"{name}.csv")
    if isinstance(patterns, str):
        patterns = [patterns]
    if (
        not isinstance(patterns, list)
        or not patterns
        or not all(isinstance(p, str) and p for p in patterns)
    ):
        problems.append((f"{key}.file", "is not a file name pattern or a list of them"))
        patterns = []
    for pattern in patterns:
        if Path(pattern).is_absolute():
            problems.append(
                (
                    f"{key}.file",
                    f"{pattern!r} is an absolute path; give a file name pattern inside the "
                    "source folder, such as opportunities*.csv",
                )
            )
    for flag in ("optional", "stop_at_blank_row"):
        value = spec.get(flag, opts.get(flag) if flag in READ_OPTIONS else None)
        if value is not None and not isinstance(value, bool):
            where = f"{key}.{flag}" if flag in spec else f"defaults.{flag}"
            problems.append((where, f"{value!r} is not true or false (YAML booleans, not text)"))
    encoding = str(opts.get("encoding", "utf-8-sig"))
    try:
        codecs.lookup(encoding)
    except LookupError:
        where = f"{key}.encoding" if "encoding" in spec else "defaults.encoding"
        problems.append((where, f"{encoding!r} is not a text encoding (e.g. utf-8-sig, cp1252)"))
    columns = spec.get("columns")
    if not isinstance(columns, dict) or not columns:
        problems.append(
            (f"{key}.columns", "missing or empty: map at least the required contract columns")
        )
        return None
    contract = columns_of(name)
    for col in contract.values():
        if col.required and col.name not in columns:
            problems.append(
                (f"{key}.columns", f"no rule for the required contract column {col.name!r}")
            )
    rules: list[ColumnRule] = []
    for out_name, col_spec in columns.items():
        rule = _column_rule(
            str(out_name), col_spec, contract, opts, f"{key}.columns.{out_name}", problems
        )
        if rule is not None:
            rules.append(rule)
    delimiter = opts.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        problems.append((f"{key}.delimiter", f"{delimiter!r} is not a single character"))
        delimiter = ","
    return TableRule(
        name=name,
        patterns=patterns,
        optional=spec.get("optional", False) is True,
        delimiter=delimiter,
        encoding=encoding,
        stop_at_blank_row=bool(opts.get("stop_at_blank_row", True)),
        columns=rules,
    )


def _column_rule(
    name: str,
    spec: Any,
    contract: dict[str, Any],
    opts: dict[str, Any],
    key: str,
    problems: list[tuple[str, str]],
) -> ColumnRule | None:
    if isinstance(spec, str):
        spec = {"from": spec}
    if not isinstance(spec, dict):
        problems.append(
            (key, "is neither a source column name nor a mapping with 'from', 'value' or 'cases'")
        )
        return None
    unknown = sorted(set(map(str, spec)) - COLUMN_KEYS)
    for k in unknown:
        problems.append(
            (f"{key}.{k}", f"unknown key (expected one of {', '.join(sorted(COLUMN_KEYS))})")
        )
    given = [k for k in ("from", "value", "cases") if k in spec]
    if len(given) != 1:
        problems.append(
            (
                key,
                "needs exactly one of 'from' (a source column), 'value' (a constant) or 'cases'"
                + (f" (found {', '.join(given)})" if given else ""),
            )
        )
        return None
    if name in contract:
        if "type" in spec:
            problems.append(
                (
                    f"{key}.type",
                    f"{name!r} is a contract column: its type is fixed ({contract[name].kind})",
                )
            )
        kind = contract[name].kind
    else:
        kind = str(spec.get("type", "string"))
        if kind not in EXTRA_TYPES:
            problems.append(
                (
                    f"{key}.type",
                    f"{kind!r} is not a type (expected one of {', '.join(sorted(EXTRA_TYPES))})",
                )
            )
            kind = "string"
    rule = ColumnRule(name=name, key=key, kind=kind)
    if "from" in spec:
        if not isinstance(spec["from"], str) or not spec["from"].strip():
            problems.append((f"{key}.from", "is not a column name"))
        else:
            rule.source = spec["from"].strip()
    for k in ("value", "default"):
        if k in spec and not isinstance(spec[k], SCALARS):
            problems.append(
                (
                    f"{key}.{k}",
                    f"{spec[k]!r} is not a single value (text, number, true/false or null)",
                )
            )
    if "value" in spec:
        rule.value = spec["value"]
    if "cases" in spec:
        rule.has_cases = True
        cases = spec["cases"]
        if not isinstance(cases, list) or not cases:
            problems.append(
                (f"{key}.cases", "is not a list of {when: {column: value}, value: ...}")
            )
        else:
            for i, case in enumerate(cases):
                ckey = f"{key}.cases[{i}]"
                if not isinstance(case, dict) or set(case) != {"when", "value"}:
                    problems.append((ckey, "needs exactly the keys 'when' and 'value'"))
                    continue
                when = _condition(case["when"], f"{ckey}.when", problems)
                if not isinstance(case["value"], SCALARS):
                    problems.append(
                        (
                            f"{ckey}.value",
                            f"{case['value']!r} is not a single value (text, number, true/false or null)",
                        )
                    )
                if when is not None:
                    rule.cases.append((when, case["value"]))
    if "map" in spec:
        if "from" not in spec:
            problems.append((f"{key}.map", "only applies to a column read 'from' the file"))
        elif not isinstance(spec["map"], dict) or not all(
            isinstance(v, SCALARS) for v in spec["map"].values()
        ):
            problems.append((f"{key}.map", "is not a mapping of source value to value"))
        else:
            rule.map = {_fold(k): v for k, v in spec["map"].items()}
    if "default" in spec:
        rule.default = spec["default"]
        rule.has_default = True
    if "split" in spec:
        if not isinstance(spec["split"], str) or not spec["split"]:
            problems.append((f"{key}.split", "is not a separator"))
        else:
            rule.split = spec["split"]
    if "keep_when" in spec:
        rule.keep_when = _condition(spec["keep_when"], f"{key}.keep_when", problems)
    if kind in ("date", "datetime"):
        formats = spec.get("format", opts.get("date_format"))
        if formats is not None:
            formats = [formats] if isinstance(formats, str) else formats
            if not isinstance(formats, list) or not all(
                isinstance(f, str) and "%" in f and _is_date_format(f) for f in formats
            ):
                problems.append(
                    (
                        f"{key}.format",
                        f"{formats!r} is not a date format such as '%m/%d/%Y' (or a list of them)",
                    )
                )
            else:
                rule.formats = list(formats)
    elif "format" in spec:
        problems.append((f"{key}.format", f"only applies to dates; {name!r} is a {kind} column"))
    if kind == "number":
        decimal = spec.get("decimal", opts.get("decimal", "."))
        if decimal not in (".", ","):
            problems.append((f"{key}.decimal", f"{decimal!r} is not '.' or ','"))
            decimal = "."
        rule.decimal = decimal
        thousands = spec.get("thousands", opts.get("thousands", "," if decimal == "." else "."))
        if not isinstance(thousands, str) or thousands == decimal or len(thousands) > 1:
            problems.append(
                (f"{key}.thousands", f"{thousands!r} is not a separator other than the decimal one")
            )
            thousands = ""
        rule.thousands = thousands
        if "scale" in spec:
            if not isinstance(spec["scale"], (int, float)) or isinstance(spec["scale"], bool):
                problems.append((f"{key}.scale", f"{spec['scale']!r} is not a number"))
            else:
                rule.scale = float(spec["scale"])
    else:
        for k in ("decimal", "thousands", "scale"):
            if k in spec:
                problems.append(
                    (f"{key}.{k}", f"only applies to numbers; {name!r} is a {kind} column")
                )
    return rule


def _is_date_format(fmt: str) -> bool:
    """Whether ``fmt`` is a format pandas can read dates with (no unknown ``%`` directive)."""
    try:
        pd.to_datetime(pd.Series(["2026-01-01"]), format=fmt, errors="coerce")
    except ValueError:
        return False
    return True


def _condition(spec: Any, key: str, problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    if not isinstance(spec, dict) or not spec:
        problems.append((key, "is not a mapping of source column to value, e.g. {Closed: true}"))
        return None
    return {str(k).strip(): v for k, v in spec.items()}


# ----------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------


def _resolve_files(src: Path, tables: list[TableRule], mapping: Path) -> dict[str, Path]:
    if src.is_file():
        matching = [t for t in tables if any(fnmatch.fnmatch(src.name, p) for p in t.patterns)]
        table = matching[0] if matching else tables[0]
        if not matching:
            log.info(
                "%s matches no file pattern of %s: read as %s", src.name, mapping.name, table.name
            )
        return {table.name: src}
    if not src.is_dir():
        raise InputError(
            f"{src}: no such file or folder. Give the report export file, or the folder holding "
            "the report files."
        )
    files: dict[str, Path] = {}
    for table in tables:
        try:
            found = sorted(
                {p for pattern in table.patterns for p in src.glob(pattern) if p.is_file()}
            )
        except (NotImplementedError, ValueError) as exc:
            raise InputError(
                f"{mapping.name}: tables.{table.name}.file {table.patterns} cannot be used to "
                f"find files in {src} ({exc}); give file name patterns such as opportunities*.csv."
            ) from None
        if not found:
            if table.optional:
                log.info("no %s file in %s (optional table skipped)", table.name, src)
                continue
            raise InputError(
                f"{src}: no file matches {' or '.join(table.patterns)} (mapping key "
                f"tables.{table.name}.file in {mapping.name}). Put the {table.name} report "
                "there, or fix the pattern."
            )
        if len(found) > 1:
            raise InputError(
                f"{src}: several files match tables.{table.name}.file of {mapping.name} "
                f"({', '.join(p.name for p in found)}); keep one, or make the pattern more precise."
            )
        files[table.name] = found[0]
    return files


def _read(table: TableRule, path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(
            path,
            sep=table.delimiter,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            encoding=table.encoding,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message=f"cannot be read as a table ({exc})",
                    expected=(
                        f"a {table.delimiter!r}-separated file with a header row in "
                        f"{table.encoding}"
                    ),
                )
            ]
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    for c in df.columns:
        df[c] = df[c].str.strip().replace("", pd.NA)
    blank = df.isna().all(axis=1).to_numpy(dtype=bool)
    if table.stop_at_blank_row and blank.any():
        first = int(np.flatnonzero(blank)[0])
        log.info(
            "%s: data ends at the blank line %d; %d line(s) after it ignored",
            path.name,
            first + 2,
            len(df) - first - 1,
        )
        df = df.iloc[:first]
    return df


# ----------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------


def _build_table(table: TableRule, path: Path, mapping: Path) -> tuple[pd.DataFrame, list[Problem]]:
    raw = _read(table, path)
    problems: list[Problem] = []
    found = ", ".join(map(str, raw.columns[:15]))
    for rule in table.columns:
        for col in rule.source_columns():
            if col not in raw.columns:
                problems.append(
                    Problem(
                        file=path.name,
                        column=col,
                        message=(
                            f"the column named by {rule.key} in {mapping.name} is not in the file"
                        ),
                        expected=f"a header with {col} (found: {found})",
                    )
                )
    if problems:
        return raw, problems
    out = pd.DataFrame(index=raw.index)
    for rule in table.columns:
        values = _raw_values(rule, raw)
        typed, bad, expected = _typed(rule, values)
        if bad.any():
            problems.append(
                Problem(
                    file=path.name,
                    column=rule.source or rule.name,
                    message=(
                        f"{int(bad.sum())} value(s) cannot be read for {rule.key} in "
                        f"{mapping.name} (e.g. {str(values[bad].iloc[0])!r})"
                    ),
                    lines=tuple(int(i) + 2 for i in np.flatnonzero(bad)[:20]),
                    n_rows=int(bad.sum()),
                    expected=expected,
                )
            )
        if rule.keep_when is not None:
            typed = typed.where(_holds(rule.keep_when, raw))
        out[rule.name] = typed
    return out.reset_index(drop=True), problems


def _raw_values(rule: ColumnRule, raw: pd.DataFrame) -> pd.Series:
    """The column's values as text (or constants), before typing."""
    n = len(raw)
    if rule.source is not None:
        values = raw[rule.source].astype("string")
        if rule.split is not None:
            values = values.str.split(rule.split, regex=False).str[0].str.strip().replace("", pd.NA)
        if rule.map is not None:
            folded = values.map(_fold, na_action="ignore")
            hit = folded.isin(list(rule.map)).fillna(False).to_numpy(dtype=bool)
            mapped = pd.Series(
                [_as_text(rule.map[k]) if h else None for k, h in zip(folded, hit, strict=True)],
                index=raw.index,
                dtype="string",
            )
            fallback = (
                pd.Series(_as_text(rule.default), index=raw.index, dtype="string")
                if rule.has_default
                else values
            )
            values = mapped.where(hit, fallback)
        if rule.has_default:
            values = values.fillna(_as_text(rule.default)) if rule.default is not None else values
        return values
    if rule.has_cases:
        out = pd.Series(
            _as_text(rule.default) if rule.has_default else None, index=raw.index, dtype="string"
        )
        decided = np.zeros(n, dtype=bool)
        for when, value in rule.cases:
            hit = _holds(when, raw).to_numpy(dtype=bool) & ~decided
            out[hit] = _as_text(value)
            decided |= hit
        return out
    return pd.Series(_as_text(rule.value), index=raw.index, dtype="string")


def _typed(rule: ColumnRule, values: pd.Series) -> tuple[pd.Series, np.ndarray, str]:
    """Values parsed to the column's kind, the rows that failed, and what was expected."""
    present = values.notna().to_numpy(dtype=bool)
    if rule.kind in ("date", "datetime"):
        if rule.formats is None:
            parsed = pd.to_datetime(
                values, errors="coerce", format="ISO8601", utc=True
            ).dt.tz_localize(None)
            expected = "ISO 8601 dates (or set format: in the mapping)"
        else:
            parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
            for fmt in rule.formats:
                todo = parsed.isna() & values.notna()
                if not todo.any():
                    break
                parsed[todo] = pd.to_datetime(values[todo], errors="coerce", format=fmt)
            expected = "dates like " + " or ".join(repr(f) for f in rule.formats)
        parsed = parsed.astype("datetime64[ns]")
        if rule.kind == "date":  # a contract date is a day: a report's time of day is noise there
            parsed = parsed.dt.normalize()
        return parsed, present & parsed.isna().to_numpy(dtype=bool), expected
    if rule.kind == "number":
        parsed = parse_numbers(values, decimal=rule.decimal, thousands=rule.thousands)
        if rule.scale is not None:
            parsed = parsed * rule.scale
        return (
            parsed,
            present & parsed.isna().to_numpy(dtype=bool),
            f"amounts such as 1{rule.thousands}234{rule.decimal}50 (decimal {rule.decimal!r})",
        )
    if rule.kind == "bool":
        folded = values.str.lower()
        is_true = folded.isin(TRUE_WORDS).fillna(False).to_numpy(dtype=bool)
        is_false = folded.isin(FALSE_WORDS).fillna(False).to_numpy(dtype=bool)
        out = pd.Series(pd.NA, index=values.index, dtype="boolean")
        out[is_true] = True
        out[is_false] = False
        return out, present & ~is_true & ~is_false, "true/false, yes/no or 1/0"
    return values, np.zeros(len(values), dtype=bool), ""


def parse_numbers(values: pd.Series, *, decimal: str = ".", thousands: str = ",") -> pd.Series:
    """Numbers from report text: ``$1,234.50``, ``1.234,50 €``, ``USD 900``, ``(12.00)``.

    Currency symbols, codes and spaces are dropped; ``thousands`` is removed and ``decimal``
    read as the decimal point; parentheses make a number negative. Text that is still not a
    number afterwards becomes missing (the caller reports it).
    """
    text = values.astype("string").str.strip()
    negative = text.str.startswith("(") & text.str.endswith(")")
    if thousands:
        text = text.str.replace(thousands, "", regex=False)
    if decimal != ".":
        text = text.str.replace(decimal, ".", regex=False)
    text = text.str.replace(r"[^0-9.\-]", "", regex=True)
    ok = text.str.fullmatch(NUMBER.pattern).fillna(False)
    parsed = pd.to_numeric(text.where(ok), errors="coerce").astype("float64")
    return parsed.where(~negative.fillna(False).to_numpy(dtype=bool), -parsed)


def _holds(condition: dict[str, Any], raw: pd.DataFrame) -> pd.Series:
    """Rows where every ``column: value`` of ``condition`` holds."""
    result = pd.Series(True, index=raw.index)
    for column, expected in condition.items():
        cell = raw[column].astype("string").str.strip()
        options = expected if isinstance(expected, list) else [expected]
        hit = pd.Series(False, index=raw.index)
        for option in options:
            if option is None:
                hit |= cell.isna()
            elif isinstance(option, bool):
                words = TRUE_WORDS if option else FALSE_WORDS
                hit |= cell.str.lower().isin(words).fillna(False)
            else:
                hit |= (cell.str.lower() == _fold(option)).fillna(False)
        result &= hit
    return result


def _fold(value: Any) -> str:
    """A value as compared by maps and conditions: text, stripped, lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().lower()


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
