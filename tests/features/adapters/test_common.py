"""Reading report files and amounts as CRM exports write them."""

from __future__ import annotations

import codecs
from pathlib import Path

import pandas as pd
import pytest

from features.adapters._common import parse_amount, parse_amounts, read_report
from features.contract import ContractError

# --- amounts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "decimal", "thousands", "expected"),
    [
        ("1234.56", ".", ",", (1234.56, None)),
        ("1,234.56", ".", ",", (1234.56, None)),
        ("$1,234.56", ".", ",", (1234.56, "USD")),
        ("-$1,234.56", ".", ",", (-1234.56, "USD")),
        ("$-1,234.56", ".", ",", (-1234.56, "USD")),
        ("(1,234.00)", ".", ",", (-1234.0, None)),
        ("($1,234.00)", ".", ",", (-1234.0, "USD")),
        ("EUR 1,234.56", ".", ",", (1234.56, "EUR")),
        ("USD900", ".", ",", (900.0, "USD")),
        ("1.234,56", ",", ".", (1234.56, None)),
        ("1.234,56 €", ",", ".", (1234.56, "EUR")),
        ("EUR 1.234.567,5", ",", ".", (1234567.5, "EUR")),
        ("1\u00a0234,56", ",", ".", (1234.56, None)),  # non-breaking space
        ("1\u202f234,56 €", ",", ".", (1234.56, "EUR")),  # narrow non-breaking space
        ("1 234 567,89", ",", " ", (1234567.89, None)),
        ("1'234.56 CHF", ".", "'", (1234.56, "CHF")),
        ("£8,500.00", ".", ",", (8500.0, "GBP")),
        ("R$ 1.000,00", ",", ".", (1000.0, "BRL")),
        ("₹12,34,567.00", ".", ",", (1234567.0, "INR")),  # Indian grouping
        ("90%", ".", ",", (90.0, None)),
        ("0,5", ",", ".", (0.5, None)),
        (".5", ".", ",", (0.5, None)),
        ("\u22121,000", ".", ",", (-1000.0, None)),  # the minus sign character
    ],
)
def test_amounts_as_reports_write_them(
    text: str, decimal: str, thousands: str, expected: tuple[float, str | None]
) -> None:
    assert parse_amount(text, decimal=decimal, thousands=thousands) == expected


@pytest.mark.parametrize(
    ("text", "decimal", "thousands", "reason"),
    [
        ("1.234,56", ".", ",", "not a number with decimal '.'"),  # a European amount, US mapping
        ("1,234.56", ",", ".", "not a number with decimal ','"),  # a US amount, European mapping
        ("1,23", ".", ",", "not a number"),  # a decimal comma where a thousands comma is declared
        ("12,3456", ".", ",", "not a number"),
        ("Q3 2026", ".", ",", "'Q' is not a currency"),
        ("12 apples", ".", ",", "'apples' is not a currency"),
        ("ten dollars", ".", ",", "not a number"),
        ("$12 USD", ".", ",", "more than one currency"),
        ("(12.00", ".", ",", "unbalanced parenthesis"),
        ("--12", ".", ",", "more than one sign"),
        ("kr 1.000,00", ",", ".", "several currencies (DKK, ISK, NOK, SEK)"),
        ("n/a", ".", ",", "not a number"),
    ],
)
def test_amounts_that_are_refused(text: str, decimal: str, thousands: str, reason: str) -> None:
    result = parse_amount(text, decimal=decimal, thousands=thousands)
    assert isinstance(result, str) and reason in result


def test_a_shared_symbol_takes_the_context_currency() -> None:
    assert parse_amount("$1,000.00", context="CAD") == (1000.0, "CAD")
    assert parse_amount("$1,000.00", context="EUR") == (1000.0, "USD")  # not a dollar: USD
    assert parse_amount("1.000,00 kr", decimal=",", thousands=".", context="SEK") == (
        1000.0,
        "SEK",
    )
    cells = pd.Series(["$10.00", "$20.00", None, "oops"], dtype="string")
    parsed = parse_amounts(cells, context=pd.Series(["USD", "AUD", "USD", "USD"]))
    assert parsed["value"].tolist()[:2] == [10.0, 20.0]
    assert parsed["currency"].tolist()[:2] == ["USD", "AUD"]
    assert pd.isna(parsed.loc[2, "error"]) and pd.isna(parsed.loc[2, "value"])  # empty is fine
    assert parsed.loc[3, "error"] == "not a number"


# --- files ----------------------------------------------------------------------------------


def _write(tmp_path: Path, data: bytes, name: str = "report.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_utf8_with_or_without_bom(tmp_path: Path, bom: bytes) -> None:
    path = _write(tmp_path, bom + "Id,Name\r\n1,Müller\r\n".encode())
    report = read_report(path)
    assert report.frame.columns.tolist() == ["Id", "Name"]
    assert report.frame["Name"].tolist() == ["Müller"]
    # a declared UTF-8 drops the byte-order mark too
    assert read_report(path, encoding="utf-8").frame.columns.tolist() == ["Id", "Name"]


def test_utf16_unicode_text_from_excel(tmp_path: Path) -> None:
    # Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated
    path = _write(tmp_path, "Id\tBetrag\r\n1\t1.234,56 €\r\n".encode("utf-16"), "report.txt")
    report = read_report(path, expect=["Id", "Betrag"])
    assert report.separator == "\t" and report.encoding == "utf-16"
    assert report.frame.to_dict("list") == {"Id": ["1"], "Betrag": ["1.234,56 €"]}


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_declared_western_encodings(tmp_path: Path, encoding: str) -> None:
    path = _write(tmp_path, "Id;Kunde\r\n1;Müller & Söhne\r\n".encode(encoding))
    report = read_report(path, encoding=encoding)
    assert report.frame["Kunde"].tolist() == ["Müller & Söhne"]
    assert report.separator == ";"


def test_undeclared_windows_1252_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = _write(tmp_path, "Id;Kunde\r\n1;Bauer\r\n2;Müller\r\n".encode("cp1252"))
    with pytest.raises(ContractError) as info:
        read_report(path)
    message = str(info.value)
    assert "report.csv: is not UTF-8 text" in message
    assert "(line 3)" in message
    assert "'ü'" in message and "encoding: cp1252" in message


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_the_separator_is_sniffed(tmp_path: Path, sep: str) -> None:
    # amounts with decimal commas and a comma inside a name must not mislead the sniffing
    rows = [["Id", "Name", "Amount"], ["1", "Acme, Inc.", "1.234,56"], ["2", "Bolt", "980,00"]]
    text = "\r\n".join(sep.join(f'"{c}"' if sep in c else c for c in r) for r in rows)
    if sep != ",":
        text = text.replace('"Acme, Inc."', "Acme, Inc.")
    report = read_report(_write(tmp_path, text.encode()), expect=["Id", "Amount"])
    assert report.separator == sep
    assert report.frame["Name"].tolist() == ["Acme, Inc.", "Bolt"]
    assert report.frame["Amount"].tolist() == ["1.234,56", "980,00"]


def test_excel_sep_line(tmp_path: Path) -> None:
    path = _write(tmp_path, b"sep=;\r\nId;Amount\r\n1;12,5\r\n2;oops;extra\r\n")
    with pytest.raises(ContractError) as info:
        read_report(path)
    # the separator Excel declared is used, and lines still count the sep= line
    assert "1 record(s) have more cells than the 2 columns" in str(info.value)
    assert "(line 4)" in str(info.value)


def test_quoted_newlines_keep_physical_line_numbers(tmp_path: Path) -> None:
    text = (
        'Id,Next Step,Amount\r\n1,"Call CFO\nthen ""legal""\r\nreview",10\r\n'
        '2,,20\r\n3,"a, b",30\r\n'
    )
    report = read_report(_write(tmp_path, text.encode()))
    notes = report.frame["Next Step"]
    assert notes[0] == 'Call CFO\nthen "legal"\r\nreview' and notes[2] == "a, b"
    assert pd.isna(notes[1])
    assert report.lines.tolist() == [2, 5, 6]


def test_an_unterminated_quote_names_its_line(tmp_path: Path) -> None:
    text = 'Id,Next Step\n1,fine\n2,"never closed\n3,more\n'
    with pytest.raises(ContractError) as info:
        read_report(_write(tmp_path, text.encode()))
    assert "the record on line 3: a quoted cell that starts here never ends" in str(info.value)


def test_a_workbook_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"report\.csv: is an Excel \.xlsx workbook"):
        read_report(_write(tmp_path, b"PK\x03\x04rest-of-a-zip"))


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ContractError, match=r"report\.csv: has no header row \(the file is empty\)"
    ):
        read_report(_write(tmp_path, b""))
