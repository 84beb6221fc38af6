"""What every adapter shares: reading a source file as text and checking the result.

An adapter builds plain DataFrames named after the contract tables; :func:`finish` gives them
the contract dtypes and runs the same checks as :func:`features.io.read_export`, so a converted
export that is returned is one that ``read_export`` will accept once written.

:func:`read_report` reads a CRM report file as people export it (encodings, separators,
Excel quoting, physical line numbers) and :func:`parse_amount` reads an amount as reports
write it (localized separators, currency codes and symbols, accounting negatives).
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import ContractError, Problem
from features.errors import InputError
from features.io import DatasetConfig, Export, check_relations, coerce_table, not_utf8

log = logging.getLogger(__name__)


def require_file(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, or an :class:`InputError` naming the file expected and why."""
    path = folder / name
    if not path.is_file():
        raise InputError(f"{path}: no such file. {what} needs {name} in {folder}.")
    return path


def read_text_table(path: Path, *, sep: str = ",", encoding: str = "utf-8-sig") -> pd.DataFrame:
    """A source CSV as text: every cell a string, empty cells missing, headers stripped.

    CRLF line endings and a UTF-8 byte-order mark are handled by the parser.
    """
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding=encoding,
        )
    except UnicodeDecodeError as exc:
        raise not_utf8(
            path, exc, expected=f"the {sep!r}-separated text file as downloaded, saved as UTF-8"
        ) from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message=f"cannot be read as a table ({exc})",
                    expected=f"a {sep!r}-separated text file with a header row",
                )
            ]
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def require_columns(df: pd.DataFrame, path: Path, columns: Iterable[str]) -> None:
    """Refuse ``df`` (read from ``path``) unless it has every one of ``columns``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns[:15]))
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    column=c,
                    message="a column the import needs is missing",
                    expected=f"a header with {c} (found: {found})",
                )
                for c in missing
            ]
        )


def finish(
    frames: Mapping[str, pd.DataFrame],
    config: DatasetConfig,
    sources: Mapping[str, Path],
) -> Export:
    """Give the converted tables contract dtypes and check them as ``read_export`` would.

    Parameters
    ----------
    frames
        Converted tables by contract name (``opportunities``, ``leads``, ...).
    config
        The ``dataset.yaml`` to write beside them.
    sources
        For each table, the source file it came from: problems name that file.

    Raises
    ------
    ContractError
        The converted data breaks the contract; every problem found is listed.
    """
    problems: list[Problem] = []
    typed: dict[str, pd.DataFrame] = {}
    for name, df in frames.items():
        extra = config.features.get(name, [])
        out, found = coerce_table(df, name, sources[name], extra_required=extra)
        problems.extend(found)
        typed[name] = out
    if not problems:
        problems.extend(check_relations(typed, dict(sources), config))
    if problems:
        raise ContractError(problems)
    return Export(**typed, config=config)


# ----------------------------------------------------------------------------------------
# report files as people export them (Salesforce, HubSpot, Excel)
# ----------------------------------------------------------------------------------------

#: separators tried, in this order of preference, when a mapping does not declare one
SEPARATORS = (",", ";", "\t", "|")
#: how far into a file the separator is sniffed (the header and the first records)
SNIFF_CHARS = 65_536
SNIFF_RECORDS = 50
#: leading bytes of spreadsheet workbooks sometimes saved with a .csv name
WORKBOOK_MAGIC = {
    b"PK\x03\x04": "an Excel .xlsx workbook",
    b"\xd0\xcf\x11\xe0": "an Excel .xls workbook",
}
_SEP_LINE = re.compile(r'^"?sep=(.)"?\s*$')


@dataclass
class ReportTable:
    """A report file read as text.

    ``frame`` holds every cell as a string (empty cells missing, cells and headers stripped,
    embedded newlines kept); ``lines[i]`` is the physical line of the file where record ``i``
    starts, so messages point at the line a user sees in an editor even when quoted cells span
    several lines. A header named twice keeps its first column; the name is in ``duplicates``.
    """

    frame: pd.DataFrame
    lines: np.ndarray
    separator: str
    encoding: str
    duplicates: set[str] = field(default_factory=set)


def read_report(
    path: Path,
    *,
    separator: str | None = None,
    encoding: str | None = None,
    expect: Iterable[str] = (),
) -> ReportTable:
    """Read a CRM report export (CSV as Salesforce, HubSpot or Excel write it) as text.

    Parameters
    ----------
    path
        The report file.
    separator
        The field separator; ``None`` takes the one an Excel ``sep=`` first line declares, or
        else sniffs ``,`` ``;`` tab ``|``, preferring the one whose header holds most of
        ``expect``.
    encoding
        The text encoding; ``None`` reads UTF-8 (with or without a byte-order mark) or UTF-16
        with a byte-order mark. A declared UTF-8 also accepts a byte-order mark.
    expect
        Header names the caller will look for (used to sniff the separator).

    Raises
    ------
    ContractError
        The file is a workbook, is not text in the encoding, has no header, a quoted cell
        that never ends, or records with more cells than the header; the message names the
        file and the physical lines.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message=f"cannot be read ({exc.strerror or exc})",
                    expected="a readable report file",
                )
            ]
        ) from None
    for magic, what in WORKBOOK_MAGIC.items():
        if data.startswith(magic):
            raise ContractError(
                [
                    Problem(
                        file=path.name,
                        message=f"is {what}, not a CSV text file",
                        expected="the report exported as CSV (or the sheet saved as CSV UTF-8)",
                    )
                ]
            )
    text, used = _decode(path, data, encoding)
    first_line = 1
    head, _, rest = text.partition("\n")
    declared_line = _SEP_LINE.match(head.rstrip("\r"))
    if declared_line:
        # Excel writes "sep=;" above the header to say which separator the file uses
        text, first_line = rest, 2
        separator = separator or declared_line.group(1)
    if separator is None:
        separator = _sniff(text, set(expect))
        log.debug("%s: sniffed separator %r", path.name, separator)
    return _parse(path, text, separator, used, first_line)


def _decode(path: Path, data: bytes, encoding: str | None) -> tuple[str, str]:
    if encoding is None:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            used = "utf-16"
        else:
            used = "utf-8-sig"
    else:
        # a declared UTF-8 still drops the byte-order mark Excel writes
        used = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        return data.decode(used), used
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(used, errors="replace").count("\n") + 1
        byte = data[exc.start : exc.start + 1]
        hint = ""
        if encoding is None or used == "utf-8-sig":
            try:
                ch = byte.decode("cp1252")
                data.decode("cp1252")
                hint = (
                    f"; in Windows-1252 (Excel on Windows) that byte is {ch!r} and the whole "
                    "file decodes: add `encoding: cp1252` to the mapping (defaults or the table)"
                )
            except UnicodeDecodeError:
                hint = ""
        said = "declared in the mapping" if encoding is not None else "the default"
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message=(
                        f"is not {used.removesuffix('-sig').upper()} text ({said}): byte "
                        f"{byte!r} at position {exc.start} cannot be read{hint}"
                    ),
                    lines=(line,),
                    n_rows=1,
                    expected="the report saved as UTF-8, or its encoding declared in the mapping",
                )
            ]
        ) from None


def _sniff(text: str, expect: set[str]) -> str:
    """The separator under which the header holds most expected names and records agree."""
    sample = text[:SNIFF_CHARS]
    if len(text) > SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    best: tuple[int, int, int, int] | None = None
    chosen = SEPARATORS[0]
    for rank, sep in enumerate(SEPARATORS):
        reader = csv.reader(io.StringIO(sample, newline=""), delimiter=sep)
        rows: list[list[str]] = []
        try:
            for row in reader:
                rows.append(row)
                if len(rows) > SNIFF_RECORDS:
                    break
        except csv.Error:
            pass  # a cut sample or another separator's quoting: judge on what was read
        if not rows:
            continue
        header = [c.strip() for c in rows[0]]
        body = [r for r in rows[1:] if any(c.strip() for c in r)]
        agree = sum(len(r) == len(header) for r in body) >= 0.9 * len(body)
        score = (len(expect & set(header)), int(agree and len(header) > 1), len(header), -rank)
        if best is None or score > best:
            best, chosen = score, sep
    return chosen


def _parse(path: Path, text: str, sep: str, encoding: str, first_line: int) -> ReportTable:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    rows: list[list[str]] = []
    starts: list[int] = []
    previous = 0
    try:
        for row in reader:
            starts.append(previous + first_line)
            rows.append(row)
            previous = reader.line_num
    except csv.Error as exc:
        line = previous + first_line
        what = (
            "a quoted cell that starts here never ends (an unmatched '\"')"
            if "end of data" in str(exc) or "field larger" in str(exc)
            else f"cannot be read as CSV ({exc})"
        )
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message=f"the record on line {line}: {what}",
                    lines=(line,),
                    n_rows=1,
                    expected=(
                        f"a {_name(sep)}-separated file where a cell holding quotes, newlines "
                        'or separators is quoted, with inner quotes doubled ("")'
                    ),
                )
            ]
        ) from None
    if not rows or not any(c.strip() for c in rows[0]):
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message="has no header row" + (" (the file is empty)" if not rows else ""),
                    lines=(starts[0],) if rows else (),
                    expected="the column names on the first line",
                )
            ]
        )
    header = [c.strip() for c in rows[0]]
    width = len(header)
    body, lines = rows[1:], np.asarray(starts[1:], dtype=np.int64)
    long = [i for i, r in enumerate(body) if len(r) > width and any(c.strip() for c in r[width:])]
    if long:
        raise ContractError(
            [
                Problem(
                    file=path.name,
                    message=(
                        f"{len(long)} record(s) have more cells than the {width} columns of the "
                        f"header when read as {_name(sep)}-separated"
                    ),
                    lines=tuple(int(lines[i]) for i in long[:20]),
                    n_rows=len(long),
                    expected=(
                        "values holding the separator quoted, or the mapping's separator "
                        "set to the one the file uses"
                    ),
                )
            ]
        )
    columns: dict[str, pd.Series] = {}
    duplicates: set[str] = set()
    for j, name in enumerate(header):
        if name in columns:
            duplicates.add(name)
            continue
        cells = [r[j].strip() if j < len(r) else "" for r in body]
        columns[name] = pd.Series([c if c else None for c in cells], dtype="string", name=name)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(len(body)))
    return ReportTable(frame, lines, sep, encoding, duplicates)


def _name(sep: str) -> str:
    return {"\t": "tab", " ": "space"}.get(sep, repr(sep))


# ----------------------------------------------------------------------------------------
# amounts as reports write them
# ----------------------------------------------------------------------------------------

_ISO_4217 = """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR
    MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD
    TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG"""
#: ISO 4217 currency codes in use
CURRENCIES = frozenset(_ISO_4217.split())
#: currency symbols that name one currency
SYMBOLS = {
    "US$": "USD",
    "€": "EUR",
    "£": "GBP",
    "₹": "INR",
    "₩": "KRW",
    "₽": "RUB",
    "₺": "TRY",
    "₪": "ILS",
    "₫": "VND",
    "฿": "THB",
    "₱": "PHP",
    "₦": "NGN",
    "R$": "BRL",
    "C$": "CAD",
    "CA$": "CAD",
    "A$": "AUD",
    "AU$": "AUD",
    "NZ$": "NZD",
    "HK$": "HKD",
    "S$": "SGD",
    "SG$": "SGD",
    "MX$": "MXN",
    "ZŁ": "PLN",
    "KČ": "CZK",
    "FT": "HUF",
}
#: symbols several currencies use: (the currency assumed when nothing says otherwise, family)
AMBIGUOUS = {
    "$": ("USD", frozenset({"USD", "CAD", "AUD", "NZD", "SGD", "HKD", "MXN", "TWD", "ARS", "CLP"})),
    "¥": ("JPY", frozenset({"JPY", "CNY"})),
    "KR": (None, frozenset({"SEK", "NOK", "DKK", "ISK"})),
}
#: spaces that group thousands (ordinary, non-breaking, narrow non-breaking, thin, figure)
GROUP_SPACES = " \u00a0\u202f\u2009\u2007"
_NOT_TOKEN = r"[^\d\s.,'()+\-\u2212]"
_CELL = re.compile(
    rf"^(?P<open>\()?\s*(?P<sign1>[-+\u2212])?\s*(?P<pre>{_NOT_TOKEN}+)?\s*"
    rf"(?P<sign2>[-+\u2212])?\s*(?P<num>[\d.,'\s]*\d|[.,]\d+)\s*"
    rf"(?P<post>{_NOT_TOKEN}+)?\s*(?P<close>\))?$"
)


def currency_code(token: str, context: str | None = None) -> str | None:
    """The ISO 4217 code a currency code or symbol in a report stands for.

    Parameters
    ----------
    token
        A code (``EUR``, any case) or symbol (``€``, ``US$``, ``$``) as written in a cell.
    context
        The declared or the row's currency. A symbol several currencies share (``$``, ``¥``,
        ``kr``) stands for it when it is one of them, else for the usual one (``$`` is USD,
        ``¥`` is JPY; ``kr`` has none).

    Returns
    -------
    The code, or ``None`` when the token is not a currency. Amounts carry no time: the code
    is read as written, the rate to convert it is the mapping's.
    """
    folded = token.strip().upper()
    if folded in CURRENCIES:
        return folded
    if folded in SYMBOLS:
        return SYMBOLS[folded]
    if folded in AMBIGUOUS:
        usual, family = AMBIGUOUS[folded]
        return context if context in family else usual
    return None


def parse_amount(
    text: str, *, decimal: str = ".", thousands: str = ",", context: str | None = None
) -> tuple[float, str | None] | str:
    """One report cell as ``(number, currency code or None)``, or the reason it is not one.

    Parameters
    ----------
    text
        The cell as written.
    decimal, thousands
        The decimal and the thousands separator the mapping declares.
    context
        The currency a shared symbol such as ``$`` stands for (see :func:`currency_code`).

    Returns
    -------
    ``(value, code)``, or a short reason (text) when the cell is refused.

    Notes
    -----
    The number may carry a sign, a currency code or symbol before or after it
    (``$1,234.50``, ``1.234,50 €``, ``EUR 1,234.56``), parentheses for an accounting negative
    (``(1,234.00)``) or a trailing ``%`` (kept as written: ``90%`` is 90). ``decimal`` is the
    decimal separator; digits before it may be grouped by ``thousands`` or by spaces (any of
    ordinary, non-breaking or narrow), in groups of three (or the Indian 2-2-3). A cell that
    breaks these rules is refused rather than guessed at: with ``decimal="."``, ``1.234,56``
    is not a number.
    """
    cell = _CELL.match(text.strip())
    if cell is None:
        return "not a number"
    if bool(cell["open"]) != bool(cell["close"]):
        return "an unbalanced parenthesis"
    signs = [s for s in (cell["sign1"], cell["sign2"]) if s]
    if len(signs) > 1 or (signs and cell["open"]):
        return "more than one sign"
    tokens = [t for t in (cell["pre"], cell["post"]) if t]
    code: str | None = None
    if len(tokens) > 1:
        return "more than one currency or unit"
    if tokens and tokens[0] != "%":
        code = currency_code(tokens[0], context)
        if code is None:
            folded = tokens[0].upper()
            if folded in AMBIGUOUS:
                return f"{tokens[0]!r} is used by several currencies ({', '.join(sorted(AMBIGUOUS[folded][1]))})"
            return f"{tokens[0]!r} is not a currency"
    value = _number(cell["num"], decimal, thousands)
    if value is None:
        return f"not a number with decimal {decimal!r}" + (
            f" and thousands {thousands!r}" if thousands else ""
        )
    negative = bool(cell["open"]) or (signs and signs[0] in "-\u2212")
    return (-value if negative else value), code


def _number(num: str, decimal: str, thousands: str) -> float | None:
    for space in GROUP_SPACES:
        num = num.replace(space, " ")
    if num.count(decimal) > 1:
        return None
    whole, point, fraction = num.partition(decimal)
    if point and not fraction.isdigit():
        return None
    seps = {ch for ch in whole if not ch.isdigit()}
    if seps:
        sep = seps.pop()
        if seps or sep not in {thousands, " "} - {""}:
            return None
        groups = whole.split(sep)
        western = 1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:])
        indian = (
            len(groups) > 2
            and 1 <= len(groups[0]) <= 2
            and all(len(g) == 2 for g in groups[1:-1])
            and len(groups[-1]) == 3
        )
        if not (western or indian) or not all(g.isdigit() for g in groups):
            return None
        whole = "".join(groups)
    if not whole and not fraction:
        return None
    return float(f"{whole or '0'}.{fraction or '0'}")


def parse_amounts(
    values: pd.Series,
    *,
    decimal: str = ".",
    thousands: str = ",",
    context: pd.Series | str | None = None,
) -> pd.DataFrame:
    """Report cells parsed with :func:`parse_amount`, one row per cell.

    Parameters
    ----------
    values
        The cells as text (missing where empty).
    decimal, thousands
        The separators the mapping declares.
    context
        The currency a shared symbol such as ``$`` stands for: one for the column, or one
        per row (aligned on ``values``' index).

    Returns
    -------
    A frame on ``values``' index with ``value`` (float, missing where empty or refused),
    ``currency`` (the code written in the cell, if any) and ``error`` (why a present cell
    was refused).
    """
    text = values.astype("string")
    if isinstance(context, pd.Series):
        ctx = context.astype("string").reindex(text.index)
    else:
        ctx = pd.Series(context, index=text.index, dtype="string")
    out = pd.DataFrame(
        {
            "value": pd.Series(np.nan, index=text.index, dtype="float64"),
            "currency": pd.Series(pd.NA, index=text.index, dtype="string"),
            "error": pd.Series(pd.NA, index=text.index, dtype="string"),
        }
    )
    present = text.notna().to_numpy(dtype=bool)
    if not present.any():
        return out
    # report columns repeat values a lot: parse each (value, context) pair once
    pairs = pd.DataFrame({"t": text[present], "c": ctx[present]})
    cache: dict[tuple[str, str | None], tuple[float, str | None] | str] = {}
    values_out: list[float] = []
    codes_out: list[str | None] = []
    errors_out: list[str | None] = []
    for t, c in zip(pairs["t"], pairs["c"], strict=True):
        key = (t, None if pd.isna(c) else str(c))
        if key not in cache:
            cache[key] = parse_amount(t, decimal=decimal, thousands=thousands, context=key[1])
        result = cache[key]
        if isinstance(result, str):
            values_out.append(np.nan)
            codes_out.append(None)
            errors_out.append(result)
        else:
            values_out.append(result[0])
            codes_out.append(result[1])
            errors_out.append(None)
    idx = pairs.index
    out.loc[idx, "value"] = np.asarray(values_out, dtype="float64")
    out.loc[idx, "currency"] = pd.Series(codes_out, index=idx, dtype="string")
    out.loc[idx, "error"] = pd.Series(errors_out, index=idx, dtype="string")
    return out
