"""`pipecast import csv` on exports as people have them: European and US locales, currencies,
byte-order marks, separators and quoted multi-line cells; and the refusals, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from features.adapters import generic_csv
from features.adapters.generic_csv import MappingError
from features.contract import ContractError
from features.io import Export, read_export
from pipecast.cli import app

from .conftest import EXAMPLES, MAPPINGS

runner = CliRunner()
GERMAN = EXAMPLES / "salesforce_de"
US = EXAMPLES / "hubspot_us"
US_FILE = "hubspot-crm-exports-deals-2026-04-14.csv"


def _mapping(folder: Path, data: dict[str, Any], name: str = "mapping.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _hubspot_multicurrency(folder: Path, **changes: Any) -> Path:
    """The HubSpot example mapping with the Currency column, rates and the Next step."""
    data = yaml.safe_load((MAPPINGS / "hubspot.yaml").read_text(encoding="utf-8"))
    data["defaults"]["rates"] = {"EUR": 1.09, "GBP": 1.27}
    columns = data["tables"]["opportunities"]["columns"]
    columns["amount"] = {"from": "Amount", "currency_column": "Currency"}
    columns["next_step"] = "Next step"
    columns["created"] = {"from": "Create Date", "type": "datetime"}
    data["defaults"].update(changes)
    return _mapping(folder, data)


def _import(src: Path, mapping: Path, out: Path) -> Any:
    return runner.invoke(
        app,
        ["import", "csv", str(src), "--mapping", str(mapping), "--out", str(out)],
        env={"COLUMNS": "250"},
    )


def _table(export: Export, name: str) -> pd.DataFrame:
    table = export.tables().get(name)
    assert table is not None, f"no {name} table"
    return table


def _flat(output: str) -> str:
    return " ".join(output.split())


# --- a German Salesforce export: BOM, ";", CRLF, 1.234,56, 31.01.2026, several currencies ---


def test_german_salesforce_export(tmp_path: Path) -> None:
    raw = (GERMAN / "Opportunities.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b'";"' in raw and b"\r\n" in raw  # as exported
    out = tmp_path / "export"
    result = _import(GERMAN, MAPPINGS / "salesforce-de.yaml", out)
    assert result.exit_code == 0, result.output
    assert "5 opportunities, 9 stage_history" in _flat(result.output)
    export = read_export(out, require=("opportunities", "stage_history"))
    opps = _table(export, "opportunities").set_index("opportunity_id")
    assert opps.index.tolist() == [f"0061x00000DeA0{i}" for i in range(1, 6)]  # footer dropped
    assert opps["created_at"].tolist() == [
        pd.Timestamp(d)
        for d in ("2026-01-08", "2026-01-15", "2026-01-21", "2026-02-02", "2026-02-09")
    ]
    assert opps["status"].tolist() == ["won", "lost", "open", "open", "open"]
    assert opps.loc["0061x00000DeA01", "closed_at"] == pd.Timestamp("2026-03-27")
    assert opps.loc["0061x00000DeA03", "expected_close_date"] == pd.Timestamp("2026-04-30")
    # EUR 48.000,00 | 1.234,56 (EUR by its column) | CHF 75.000,00 × 1.06 | EUR 31.200,50 |
    # GBP 9.800,00 × 1.17
    assert opps["amount"].tolist() == [48000.0, 1234.56, 79500.0, 31200.5, 11466.0]
    assert opps.loc["0061x00000DeA03", "next_step"] == (
        'Vertrag an die Rechtsabteilung\n"Redlines" bis Freitag'
    )
    assert opps.loc["0061x00000DeA04", "next_step"] == "Preisgespräch am 02.04."
    assert opps["owner_id"].tolist()[:2] == ["Jana Krüger", "Lukas Brandt"]
    # "100%" … "20%" scaled by 0.01 (an extra column: written, and read back, as text)
    assert [float(p) for p in opps["crm_probability"]] == [1.0, 0.0, 0.9, 0.6, 0.2]
    assert opps["source"].tolist() == ["inbound", "event", "partner", "inbound", "referral"]
    hist = _table(export, "stage_history")
    first = hist[hist["opportunity_id"] == "0061x00000DeA01"]
    assert first["changed_at"].tolist() == [
        pd.Timestamp("2026-01-08 09:14"),
        pd.Timestamp("2026-01-20 14:05"),
        pd.Timestamp("2026-03-27 16:22"),
    ]
    assert hist["amount"].tolist() == [
        40000.0,
        45000.0,
        48000.0,
        1234.56,
        1234.56,
        74200.0,  # CHF 70.000,00 × 1.06
        79500.0,
        31200.5,
        11466.0,
    ]


# --- a US HubSpot export: $1,234.56, 1/31/2026 2:05 PM, multi-line Next step, currencies ----


def test_us_hubspot_export_with_currencies(tmp_path: Path) -> None:
    export = generic_csv.convert(US, _hubspot_multicurrency(tmp_path))
    opps = _table(export, "opportunities").set_index("opportunity_id")
    # $1,234.56 | $54,250.00 | €12,000.00 × 1.09 | £8,500.00 × 1.27 | 900 (USD)
    assert opps["amount"].tolist() == [1234.56, 54250.0, 13080.0, 10795.0, 900.0]
    # 1/31/2026 2:05 PM: a contract date keeps the day; an extra datetime column the time
    # (extra columns are kept as text in the export)
    assert opps.loc["30110002", "created_at"] == pd.Timestamp("2026-01-31")
    assert opps.loc["30110002", "created"] == "2026-01-31 14:05:00"
    assert opps.loc["30110001", "created"] == "2026-01-05 09:12:00"
    assert (
        opps.loc["30110002", "next_step"] == 'Countersign by Friday\n"Legal" asked for\nthe DPA, v2'
    )
    assert opps.loc["30110003", "next_step"] == "Demo with ops team"
    assert opps["status"].tolist() == ["won", "open", "open", "lost", "open"]
    assert opps.loc["30110004", "closed_at"] == pd.Timestamp("2026-03-13")


def test_french_export_with_narrow_spaces_tab_and_windows_1252(tmp_path: Path) -> None:
    # a French Excel export: Windows-1252, tab-separated (not declared: sniffed),
    # "1 234,56 €" grouped by spaces (the euro sign is byte 0x80 in Windows-1252)
    text = (
        "Id\tCompte\tCréé le\tÉtape\tMontant\tClôture\r\n"
        "F1\tSociété Générale\t31/01/2026\tGagnée\t1 234,56 €\t27/03/2026\r\n"
        "F2\tÉlysée Conseil\t02/02/2026\tOuverte\t75 000,00 €\t\r\n"
        "F3\tCafé Noir\t03/02/2026\tOuverte\t980,5\t\r\n"
    )
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "affaires.csv").write_bytes(text.encode("cp1252"))
    mapping = _mapping(
        tmp_path,
        {
            "defaults": {
                "encoding": "cp1252",
                "date_format": "%d/%m/%Y",
                "decimal": ",",
                "thousands": " ",
                "currency": "EUR",
            },
            "tables": {
                "opportunities": {
                    "file": "affaires*.csv",
                    "columns": {
                        "opportunity_id": "Id",
                        "account_id": "Compte",
                        "created_at": "Créé le",
                        "stage": "Étape",
                        "status": {"from": "Étape", "map": {"Gagnée": "won"}, "default": "open"},
                        "closed_at": {"from": "Clôture", "keep_when": {"Étape": "Gagnée"}},
                        "amount": "Montant",
                    },
                }
            },
        },
    )
    opps = _table(generic_csv.convert(folder, mapping), "opportunities")
    assert opps["account_id"].tolist() == ["Société Générale", "Élysée Conseil", "Café Noir"]
    assert opps["amount"].tolist() == [1234.56, 75000.0, 980.5]
    assert opps["created_at"].tolist()[0] == pd.Timestamp("2026-01-31")
    assert opps["closed_at"].tolist()[0] == pd.Timestamp("2026-03-27")


def test_semicolons_sniffed_from_a_bom_file(tmp_path: Path) -> None:
    # the German example without `separator` and `encoding`: both found from the file
    data = yaml.safe_load((MAPPINGS / "salesforce-de.yaml").read_text(encoding="utf-8"))
    del data["defaults"]["separator"], data["defaults"]["encoding"]
    opps = _table(generic_csv.convert(GERMAN, _mapping(tmp_path, data)), "opportunities")
    assert opps["amount"].tolist() == [48000.0, 1234.56, 79500.0, 31200.5, 11466.0]


# --- refusals, end to end: exit 2, the file, column and physical line, nothing written -------


def _refused(src: Path, mapping: Path, tmp_path: Path) -> str:
    out = tmp_path / "export"
    result = _import(src, mapping, out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    return _flat(result.output)


def test_wrong_declared_date_format_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load((MAPPINGS / "salesforce-de.yaml").read_text(encoding="utf-8"))
    data["defaults"]["date_format"] = "%m/%d/%Y"  # a US format for a German export
    message = _refused(GERMAN, _mapping(tmp_path, data), tmp_path)
    assert "Opportunities.csv, column 'Erstelldatum'" in message
    assert "5 value(s) cannot be read for tables.opportunities.columns.created_at" in message
    assert "'08.01.2026', '15.01.2026', '21.01.2026'" in message
    # the fourth record starts on line 6: the third spans lines 4-5
    assert "(lines 2, 3, 4, 6, 7)" in message
    assert "expected dates like '%m/%d/%Y'" in message
    assert "these values read as '%d.%m.%Y'" in message


def test_a_bad_date_after_a_multiline_cell_names_its_physical_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    text = (US / US_FILE).read_text(encoding="utf-8").replace("03/02/2026 10:00 AM", "2026-03-02")
    (src / US_FILE).write_text(text, encoding="utf-8")
    message = _refused(src, MAPPINGS / "hubspot.yaml", tmp_path)
    # record 5 is on line 8: the Next step of record 2 spans lines 3-5
    assert f"{US_FILE}, column 'Create Date'" in message
    assert "'2026-03-02') (line 8)" in message
    assert "'%m/%d/%Y %I:%M %p' or '%m/%d/%Y %H:%M' or '%m/%d/%Y'" in message


def test_a_currency_without_a_rate_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    text = (US / US_FILE).read_text(encoding="utf-8")
    text = text.replace('"€12,000.00",EUR', '"CHF 12,000.00",CHF')
    (src / US_FILE).write_text(text, encoding="utf-8")
    message = _refused(src, _hubspot_multicurrency(tmp_path), tmp_path)
    assert f"{US_FILE}, column 'Amount'" in message
    assert "1 amount(s) are in CHF" in message
    assert "reporting currency USD; rates given: EUR, GBP" in message
    assert "(line 6)" in message


def test_an_unknown_currency_code_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    text = (US / US_FILE).read_text(encoding="utf-8").replace("£8,500.00", "8,500.00")
    (src / US_FILE).write_text(text.replace(",GBP,", ",Pound,"), encoding="utf-8")
    message = _refused(src, _hubspot_multicurrency(tmp_path), tmp_path)
    assert f"{US_FILE}, column 'Currency'" in message
    assert "1 row(s) name a currency that is not an ISO 4217 code ('Pound')" in message
    assert "(line 7)" in message


def test_mixed_currencies_without_a_reporting_currency_are_refused(tmp_path: Path) -> None:
    data = yaml.safe_load((MAPPINGS / "hubspot.yaml").read_text(encoding="utf-8"))
    del data["defaults"]["currency"]
    message = _refused(US, _mapping(tmp_path, data), tmp_path)
    assert f"{US_FILE}, column 'Amount'" in message
    assert "holds amounts in several currencies: USD (2 rows), EUR (1 row), GBP (1 row)" in message
    assert "(lines 6, 7)" in message


def test_a_foreign_amount_in_the_company_currency_column_is_refused(tmp_path: Path) -> None:
    # the example mapping says the amounts are USD and gives no rates
    message = _refused(US, MAPPINGS / "hubspot.yaml", tmp_path)
    assert f"{US_FILE}, column 'Amount': 2 amount(s) are in EUR, GBP" in message
    assert "rates given: none" in message and "(lines 6, 7)" in message


def test_an_amount_disagreeing_with_its_currency_column_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    text = (
        (US / US_FILE).read_text(encoding="utf-8").replace('"€12,000.00",EUR', '"€12,000.00",USD')
    )
    (src / US_FILE).write_text(text, encoding="utf-8")
    message = _refused(src, _hubspot_multicurrency(tmp_path), tmp_path)
    assert "1 amount(s) are written in one currency while 'Currency' gives another" in message
    assert "(e.g. '€12,000.00') (line 6)" in message


def test_the_wrong_decimal_separator_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load((MAPPINGS / "salesforce-de.yaml").read_text(encoding="utf-8"))
    data["defaults"]["decimal"] = "."
    del data["defaults"]["thousands"]
    message = _refused(GERMAN, _mapping(tmp_path, data), tmp_path)
    assert "Opportunities.csv, column 'Betrag'" in message
    assert "'EUR 48.000,00'" in message and "not a number with decimal '.'" in message


def test_an_undeclared_windows_1252_file_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    raw = (GERMAN / "Opportunities.csv").read_bytes().decode("utf-8-sig")
    (src / "Opportunities.csv").write_bytes(raw.replace("–", "-").encode("cp1252"))
    data = yaml.safe_load((MAPPINGS / "salesforce-de.yaml").read_text(encoding="utf-8"))
    del data["defaults"]["encoding"]
    message = _refused(src, _mapping(tmp_path, data), tmp_path)
    assert "Opportunities.csv: is not UTF-8 text (the default)" in message
    assert "(line 1)" in message  # the header's "Währung"
    assert "add `encoding: cp1252`" in message


def test_contract_checks_name_physical_lines(tmp_path: Path) -> None:
    # a deal closed before it was created, below a record spanning three lines
    src = tmp_path / "src"
    src.mkdir()
    text = (US / US_FILE).read_text(encoding="utf-8").replace("03/13/2026", "01/13/2026")
    (src / US_FILE).write_text(text, encoding="utf-8")
    message = _refused(src, _hubspot_multicurrency(tmp_path), tmp_path)
    assert "close before they were created (line 7)" in message


# --- refused mappings -----------------------------------------------------------------------


def test_bad_format_options_are_named(tmp_path: Path) -> None:
    data = yaml.safe_load((MAPPINGS / "hubspot.yaml").read_text(encoding="utf-8"))
    data["defaults"].update({"currency": "Dollars", "rates": {"EUR": 0, "XYZ": 1.1}})
    data["tables"]["opportunities"]["separator"] = "ab"
    data["tables"]["opportunities"]["columns"]["owner_id"] = {
        "from": "Deal owner",
        "currency_column": "Currency",
    }
    with pytest.raises(MappingError) as info:
        generic_csv.load_mapping(_mapping(tmp_path, data))
    text = str(info.value)
    assert "defaults.currency: 'Dollars' is not an ISO 4217 currency code" in text
    assert "defaults.rates.EUR: 0 is not a positive number" in text
    assert "defaults.rates.XYZ: is not an ISO 4217 currency code" in text
    assert "tables.opportunities.separator: 'ab' is not a separator" in text
    assert "columns.owner_id.currency_column: only applies to numbers" in text


def test_rates_need_a_reporting_currency(tmp_path: Path) -> None:
    data = yaml.safe_load((MAPPINGS / "hubspot.yaml").read_text(encoding="utf-8"))
    del data["defaults"]["currency"]
    data["defaults"]["rates"] = {"EUR": 1.09}
    with pytest.raises(MappingError, match="say which one with currency:"):
        generic_csv.load_mapping(_mapping(tmp_path, data))


def test_delimiter_is_still_read(tmp_path: Path) -> None:
    data = yaml.safe_load((MAPPINGS / "salesforce-de.yaml").read_text(encoding="utf-8"))
    data["defaults"]["delimiter"] = data["defaults"].pop("separator")
    export = generic_csv.convert(GERMAN, _mapping(tmp_path, data))
    assert len(_table(export, "opportunities")) == 5
    data["defaults"]["separator"] = ";"
    with pytest.raises(MappingError, match="older name of separator"):
        generic_csv.load_mapping(_mapping(tmp_path, data))


@pytest.mark.parametrize(("word", "char"), [("tab", "\t"), ("\t", "\t"), ("pipe", "|")])
def test_a_declared_separator(tmp_path: Path, word: str, char: str) -> None:
    data = yaml.safe_load((MAPPINGS / "salesforce-de.yaml").read_text(encoding="utf-8"))
    data["defaults"]["separator"] = word
    data["defaults"]["stop_at_blank_row"] = False  # blank rows are skipped, never data
    data["tables"]["opportunities"]["file"] = "Opportunities.csv"
    src = tmp_path / "src"
    src.mkdir()
    lines = (GERMAN / "Opportunities.csv").read_bytes().decode("utf-8-sig").split("\r\n")[:6]
    text = "\r\n".join(lines[:3] + ["", ";;"] + lines[3:]).replace(";", char)
    (src / "Opportunities.csv").write_bytes((text + "\r\n").encode())
    opps = _table(generic_csv.convert(src, _mapping(tmp_path, data)), "opportunities")
    assert opps["opportunity_id"].tolist() == [f"0061x00000DeA0{i}" for i in range(1, 6)]
    assert opps["amount"].tolist() == [48000.0, 1234.56, 79500.0, 31200.5, 11466.0]


def test_a_column_named_twice_in_the_header_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(US / US_FILE, src / US_FILE)
    text = (src / US_FILE).read_text(encoding="utf-8").replace("Deal Name", "Amount", 1)
    (src / US_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(ContractError, match="column 'Amount': the mapping reads this column but"):
        generic_csv.convert(src, _hubspot_multicurrency(tmp_path))
