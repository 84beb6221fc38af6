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
      separator: ";"                 # field separator (default: sniffed among , ; tab |)
      encoding: cp1252               # default: UTF-8 with or without BOM, UTF-16 with BOM
      currency: USD                  # reporting currency of number columns (default: none)
      rates: {EUR: 1.09}             # units of the reporting currency per 1 unit of another
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
          amount: {from: Amount, currency_column: Opportunity Currency}   # per-row currency
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
``format``
    Date format(s) of one date column (``%d/%m/%Y``, ``%m/%d/%Y %I:%M %p``, …), instead of
    the table's ``date_format``. A value that matches none is refused with the file, column,
    lines and the declared format (and the common format the values do match, if any).
``decimal``, ``thousands``, ``scale``
    Number separators and a factor of a number column. Digits before the decimal separator
    may be grouped in threes by ``thousands`` or by a space (ordinary, non-breaking or narrow
    non-breaking, as French exports write ``1 234,56``); ``'`` too when declared as
    ``thousands``. A value that does not fit (``1.234,56`` with decimal ``.``, ``1,23``,
    ``Q3 2026``) is refused, never guessed at. A sign, parentheses (accounting negatives:
    ``(1,234.00)``), a trailing ``%`` (``90%`` is 90) and a currency code or symbol before
    or after the number (``$1,234.50``, ``1.234,50 €``, ``EUR 1,234.56``) are allowed.
``currency``, ``rates``, ``currency_column``
    The currency of amounts. A value's currency is the code or symbol written in it (``$``
    is USD unless the row's or declared currency is another dollar; ``kr`` needs one of
    them), else its row's ``currency_column`` (ISO codes; the two must agree). Without
    ``currency``, a column holding several currencies is refused naming them. With
    ``currency`` (the reporting currency; may be set in ``defaults`` or the table), values
    in another currency are converted at ``rates`` (``{EUR: 1.09}``: 1 EUR = 1.09 of the
    reporting currency, rounded to the cent) and refused naming the currency where it has
    no rate. ``currency_column`` is per column.
``type``
    For columns that are not contract columns (kept as extra columns): ``string`` (default),
    ``number``, ``date``, ``datetime`` or ``bool``. Contract columns have the contract's type.

Files
-----
Report files are read as Salesforce, HubSpot and Excel write them: UTF-8 with or without a
byte-order mark (or UTF-16 with one; another encoding such as ``cp1252`` or ``latin-1`` when
declared), CRLF or LF line ends, an Excel ``sep=;`` first line, cells quoted with doubled
inner quotes and holding newlines. Line numbers in messages are the file's physical lines
(the line where a record starts). A workbook saved under a ``.csv`` name, a quoted cell that
never ends and a record with more cells than the header are refused with the line.

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
import dataclasses
import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.adapters._common import (
    CURRENCIES,
    currency_code,
    finish,
    parse_amounts,
    read_report,
)
from features.contract import FALSE_WORDS, TRUE_WORDS, ContractError, Problem, columns_of
from features.errors import InputError
from features.io import TABLE_NAMES, DatasetConfig, Export, parse_config, unreadable_yaml

log = logging.getLogger(__name__)

TOP_KEYS = {"description", "defaults", "tables", "dataset"}
READ_OPTIONS = {
    "date_format",
    "decimal",
    "thousands",
    "separator",
    "delimiter",  # the older name of separator
    "encoding",
    "stop_at_blank_row",
    "currency",
    "rates",
}
#: separators a mapping may name in words (a YAML "\t" is a tab too)
SEPARATOR_WORDS = {"tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
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
    "currency",
    "currency_column",
    "rates",
    "type",
}
EXTRA_TYPES = {"string", "number", "date", "datetime", "bool"}
#: what a constant (``value``, ``default``, a ``map`` or ``cases`` value) may be
SCALARS = (str, int, float, bool, type(None))


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
    currency: str | None = None  # the reporting currency amounts are converted to
    currency_column: str | None = None  # the source column giving each row's currency
    rates: dict[str, float] = field(default_factory=dict)  # reporting units per unit

    def source_columns(self) -> list[str]:
        """Every source column the rule reads (with the mapping key that names it)."""
        cols = [self.source] if self.source is not None else []
        if self.currency_column is not None:
            cols.append(self.currency_column)
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
    separator: str | None  # None: sniffed from the file
    encoding: str | None  # None: UTF-8 or UTF-16 by byte-order mark
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
    record_lines: dict[str, np.ndarray] = {}
    problems: list[Problem] = []
    for table in tables:
        path = files.get(table.name)
        if path is None:
            continue
        df, lines, found = _build_table(table, path, mapping)
        problems.extend(found)
        frames[table.name] = df
        sources[table.name] = path
        record_lines[path.name] = lines
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
    try:
        export = finish(frames, config, sources)
    except ContractError as exc:
        # the contract checks count one line per record: point at the file's physical lines
        raise ContractError([_physical(p, record_lines) for p in exc.problems]) from None
    log.info(
        "imported %s with %s", ", ".join(f"{len(df)} {n}" for n, df in frames.items()), mapping.name
    )
    return export


def _physical(problem: Problem, record_lines: dict[str, np.ndarray]) -> Problem:
    """``problem`` with its record lines (header + 1 + row) made the file's physical lines."""
    lines = record_lines.get(problem.file)
    if lines is None or not problem.lines:
        return problem
    physical = tuple(int(lines[n - 2]) if 0 <= n - 2 < len(lines) else n for n in problem.lines)
    return dataclasses.replace(problem, lines=physical)


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
    encoding = opts.get("encoding")
    if encoding is not None:
        try:
            codecs.lookup(str(encoding))
            encoding = str(encoding)
        except LookupError:
            where = f"{key}.encoding" if "encoding" in spec else "defaults.encoding"
            problems.append(
                (where, f"{encoding!r} is not a text encoding (e.g. utf-8, cp1252, latin-1)")
            )
            encoding = None
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
        if rule is not None and rule.kind == "number":
            given = col_spec if isinstance(col_spec, dict) else {}  # a plain string inherits
            _currency_options(rule, given, opts, set(spec) & READ_OPTIONS, key, problems)
        if rule is not None:
            rules.append(rule)
    return TableRule(
        name=name,
        patterns=patterns,
        optional=spec.get("optional", False) is True,
        separator=_separator(spec, defaults, key, problems),
        encoding=encoding,
        stop_at_blank_row=bool(opts.get("stop_at_blank_row", True)),
        columns=rules,
    )


def _separator(
    spec: dict[str, Any], defaults: dict[str, Any], key: str, problems: list[tuple[str, str]]
) -> str | None:
    """The declared field separator of a table (``None``: sniff it from the file)."""
    for where, options in ((key, spec), ("defaults", defaults)):
        given = [k for k in ("separator", "delimiter") if k in options]
        if len(given) > 1:
            problems.append(
                (f"{where}.delimiter", "is the older name of separator: give only separator")
            )
        if given:
            value = options[given[0]]
            value = SEPARATOR_WORDS.get(value, value) if isinstance(value, str) else value
            if not isinstance(value, str) or len(value) != 1 or value in '"\r\n' or value.isalnum():
                problems.append(
                    (
                        f"{where}.{given[0]}",
                        f"{options[given[0]]!r} is not a separator: one character such as "
                        "',', ';', '|' or tab",
                    )
                )
                return None
            return value
    return None


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
        for k in ("decimal", "thousands", "scale", "currency", "currency_column", "rates"):
            if k in spec:
                problems.append(
                    (f"{key}.{k}", f"only applies to numbers; {name!r} is a {kind} column")
                )
    return rule


def _currency_options(
    rule: ColumnRule,
    spec: dict[str, Any],
    opts: dict[str, Any],
    table_keys: set[str],
    table_key: str,
    problems: list[tuple[str, str]],
) -> None:
    """Read ``currency``, ``rates`` (column, table or defaults) and ``currency_column``."""
    key = rule.key

    def where(k: str) -> str:
        """The mapping key an inherited option was given under."""
        if k in spec:
            return f"{key}.{k}"
        return f"{table_key}.{k}" if k in table_keys else f"defaults.{k}"

    currency = spec.get("currency", opts.get("currency"))
    if currency is not None:
        if not isinstance(currency, str) or currency.strip().upper() not in CURRENCIES:
            problems.append(
                (where("currency"), f"{currency!r} is not an ISO 4217 currency code (USD, EUR, …)")
            )
        else:
            rule.currency = currency.strip().upper()
    rates = spec.get("rates", opts.get("rates"))
    if rates is not None:
        if not isinstance(rates, dict) or not rates:
            problems.append(
                (where("rates"), "is not a mapping of currency code to rate, e.g. {EUR: 1.08}")
            )
        else:
            for code, rate in rates.items():
                folded = str(code).strip().upper()
                if folded not in CURRENCIES:
                    problems.append(
                        (f"{where('rates')}.{code}", "is not an ISO 4217 currency code")
                    )
                elif isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
                    problems.append(
                        (
                            f"{where('rates')}.{code}",
                            f"{rate!r} is not a positive number (units of the reporting "
                            f"currency per 1 {folded})",
                        )
                    )
                else:
                    rule.rates[folded] = float(rate)
        if currency is None:
            problems.append(
                (
                    where("rates"),
                    "converts to a reporting currency: say which one with currency: (e.g. USD)",
                )
            )
        elif rule.currency in rule.rates and rule.rates[rule.currency] != 1.0:
            problems.append(
                (f"{where('rates')}.{rule.currency}", "the reporting currency's rate can only be 1")
            )
    if "currency_column" in spec:
        column = spec["currency_column"]
        if not isinstance(column, str) or not column.strip():
            problems.append((f"{key}.currency_column", "is not a column name"))
        elif rule.source is None:
            problems.append(
                (f"{key}.currency_column", "only applies to a column read 'from' the file")
            )
        else:
            rule.currency_column = column.strip()


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


def _read(table: TableRule, path: Path) -> tuple[pd.DataFrame, np.ndarray, str]:
    """The report's rows as text, the physical line of each, and the separator used."""
    expect = [c for rule in table.columns for c in rule.source_columns()]
    report = read_report(path, separator=table.separator, encoding=table.encoding, expect=expect)
    df, lines = report.frame, report.lines
    blank = df.isna().all(axis=1).to_numpy(dtype=bool)
    if table.stop_at_blank_row and blank.any():
        first = int(np.flatnonzero(blank)[0])
        log.info(
            "%s: data ends at the blank line %d; %d line(s) after it ignored",
            path.name,
            int(lines[first]),
            len(df) - first - 1,
        )
        df, lines = df.iloc[:first], lines[:first]
    elif blank.any():
        # a blank row is never a record
        df, lines = df[~blank], lines[~blank]
    dupes = sorted(set(expect) & report.duplicates)
    if dupes:
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    column=c,
                    message="the mapping reads this column but the header names it twice",
                    lines=(int(report.lines[0]) - 1 if len(report.lines) else 1,),
                    expected="each column the mapping reads named once in the header",
                )
                for c in dupes
            ]
        )
    return df.reset_index(drop=True), lines, report.separator


# ----------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------


def _build_table(
    table: TableRule, path: Path, mapping: Path
) -> tuple[pd.DataFrame, np.ndarray, list[Problem]]:
    raw, lines, separator = _read(table, path)
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
                        expected=(
                            f"a header with {col} (found, reading the file as "
                            f"{_separator_name(separator)}-separated: {found})"
                        ),
                    )
                )
    if problems:
        return raw, lines, problems
    out = pd.DataFrame(index=raw.index)
    for rule in table.columns:
        values = _raw_values(rule, raw)
        if rule.kind == "number":
            typed, found_problems = _amounts(rule, values, raw, path, mapping, lines)
            problems.extend(found_problems)
        else:
            typed, bad, expected = _typed(rule, values)
            if bad.any():
                problems.append(
                    Problem(
                        file=path.name,
                        column=rule.source or rule.name,
                        message=(
                            f"{int(bad.sum())} value(s) cannot be read for {rule.key} in "
                            f"{mapping.name} (e.g. {_examples(values[bad])})"
                        ),
                        lines=tuple(int(lines[i]) for i in np.flatnonzero(bad)[:20]),
                        n_rows=int(bad.sum()),
                        expected=expected + _date_hint(rule, values[bad]),
                    )
                )
        if rule.keep_when is not None:
            typed = typed.where(_holds(rule.keep_when, raw))
        out[rule.name] = typed
    return out.reset_index(drop=True), lines, problems


def _separator_name(sep: str) -> str:
    return {"\t": "tab", " ": "space"}.get(sep, repr(sep))


def _examples(values: pd.Series, n: int = 3) -> str:
    """The first few distinct offending values, quoted as in the file."""
    return ", ".join(repr(str(v)) for v in pd.unique(values.dropna())[:n])


#: formats a refused date is tried with, to say what the dates look like
COMMON_DATE_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M:%S",
    "%m/%d/%Y",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M",
    "%d/%m/%Y",
    "%d/%m/%Y %H:%M",
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M",
    "%d-%m-%Y",
    "%Y/%m/%d",
)


def _date_hint(rule: ColumnRule, bad: pd.Series) -> str:
    """A hint when the refused dates all read with another common format."""
    if rule.kind not in ("date", "datetime") or bad.empty:
        return ""
    sample = bad.dropna().head(50)
    for fmt in COMMON_DATE_FORMATS:
        if fmt in (rule.formats or []):
            continue
        if pd.to_datetime(sample, errors="coerce", format=fmt).notna().all():
            return (
                f" (these values read as {fmt!r}: if that is what they are, declare it as the "
                "column's format: or the table's date_format:)"
            )
    return ""


def _amounts(
    rule: ColumnRule,
    values: pd.Series,
    raw: pd.DataFrame,
    path: Path,
    mapping: Path,
    lines: np.ndarray,
) -> tuple[pd.Series, list[Problem]]:
    """A number column: amounts parsed, their currencies checked and converted.

    Each value's currency is the one written in the cell, else its row's ``currency_column``.
    With a reporting ``currency``, values in another currency are converted with ``rates``
    and refused where there is no rate; without one, a column holding several currencies is
    refused naming them.
    """
    problems: list[Problem] = []
    column = rule.source or rule.name

    def problem(mask: np.ndarray, message: str, expected: str, where: str = column) -> None:
        problems.append(
            Problem(
                file=path.name,
                column=where,
                message=message,
                lines=tuple(int(lines[i]) for i in np.flatnonzero(mask)[:20]),
                n_rows=int(mask.sum()),
                expected=expected,
            )
        )

    row_currency = pd.Series(pd.NA, index=values.index, dtype="string")
    if rule.currency_column is not None:
        declared = raw[rule.currency_column].astype("string")
        codes = declared.map(lambda t: currency_code(t, rule.currency), na_action="ignore")
        unknown = (declared.notna() & codes.isna()).to_numpy(dtype=bool)
        if unknown.any():
            problem(
                unknown,
                f"{int(unknown.sum())} row(s) name a currency that is not an ISO 4217 code "
                f"({_examples(declared[unknown])}), read for {rule.key}.currency_column in "
                f"{mapping.name}",
                "codes such as USD, EUR, GBP",
                where=rule.currency_column,
            )
        row_currency = codes.astype("string")
    context = row_currency.fillna(rule.currency) if rule.currency else row_currency
    parsed = parse_amounts(values, decimal=rule.decimal, thousands=rule.thousands, context=context)
    amount = parsed["value"]
    bad = parsed["error"].notna().to_numpy(dtype=bool)
    if bad.any():
        reasons = pd.unique(parsed["error"][bad])
        example = "1" + rule.thousands + "234" + rule.decimal + "56" if rule.thousands else "1234"
        problem(
            bad,
            f"{int(bad.sum())} value(s) cannot be read for {rule.key} in {mapping.name} "
            f"(e.g. {_examples(values[bad])}: {'; '.join(map(str, reasons[:3]))})",
            f"amounts such as {example} (decimal {rule.decimal!r}"
            + (f", thousands {rule.thousands!r} or a space" if rule.thousands else "")
            + "), optionally with a currency code or symbol",
        )
    written = parsed["currency"]
    clash = (written.notna() & row_currency.notna() & (written != row_currency)).to_numpy(
        dtype=bool
    )
    if clash.any():
        problem(
            clash,
            f"{int(clash.sum())} amount(s) are written in one currency while "
            f"{rule.currency_column!r} gives another (e.g. {_examples(values[clash])})",
            f"the amount's currency to agree with {rule.currency_column}",
        )
    currency = written.fillna(row_currency)
    ok = amount.notna().to_numpy(dtype=bool) & ~clash
    found = currency[ok].dropna()
    counts = found.value_counts()
    if rule.currency is None:
        if len(counts) > 1:
            minority = (currency != counts.index[0]).fillna(False).to_numpy(dtype=bool) & ok
            listing = ", ".join(
                f"{code} ({n} row{'s' if n > 1 else ''})" for code, n in counts.items()
            )
            problem(
                minority,
                f"holds amounts in several currencies: {listing}; {rule.key} in {mapping.name} "
                "declares no reporting currency to convert them to (lines shown: those not "
                f"in {counts.index[0]})",
                "one currency per column, or `currency:` (the reporting currency) with "
                "`rates:` to convert the others, and `currency_column:` where the report "
                "gives each row's currency in a column",
            )
        return amount * rule.scale if rule.scale is not None else amount, problems
    foreign = currency.notna() & (currency != rule.currency)
    rate = currency.map(lambda c: rule.rates.get(c, np.nan), na_action="ignore").astype("float64")
    no_rate = (foreign & rate.isna()).fillna(False).to_numpy(dtype=bool) & ok
    if no_rate.any():
        missing = sorted(set(currency[no_rate].dropna()))
        given = ", ".join(sorted(rule.rates)) or "none"
        problem(
            no_rate,
            f"{int(no_rate.sum())} amount(s) are in {', '.join(missing)}, which "
            f"{rule.key} in {mapping.name} has no rate for (reporting currency "
            f"{rule.currency}; rates given: {given})",
            f"a rate for {', '.join(missing)} under rates: (units of {rule.currency} per 1 "
            f"{missing[0]}), or the amounts in {rule.currency}",
        )
    # converted amounts are rounded to the cent, as a CRM's own converted amounts are
    converted = amount.where(~foreign.fillna(False), (amount * rate).round(2))
    if foreign.any():
        log.info(
            "%s: %s converted to %s (%s)",
            column,
            ", ".join(f"{n} in {c}" for c, n in counts.items() if c != rule.currency),
            rule.currency,
            ", ".join(f"1 {c} = {r} {rule.currency}" for c, r in sorted(rule.rates.items())),
        )
    return converted * rule.scale if rule.scale is not None else converted, problems


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
    """Date, bool and text values typed, the rows that failed, and what was expected.

    Number columns are read by :func:`_amounts` (currencies).
    """
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

    The currency written beside a number is dropped (a mapping's ``currency`` options check
    and convert it); parentheses make a number negative. Text that is not a number with
    these separators (see :func:`features.adapters._common.parse_amount`) becomes missing.
    """
    return parse_amounts(values, decimal=decimal, thousands=thousands)["value"]


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
