"""The mapping-driven report import: Salesforce and HubSpot examples, and refused mappings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.adapters import generic_csv
from features.adapters.generic_csv import MappingError, parse_numbers
from features.contract import ContractError
from features.errors import InputError
from features.io import read_export, write_export


def _write_mapping(folder: Path, data: dict) -> Path:
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


MINIMAL_COLUMNS = {
    "opportunity_id": "Id",
    "account_id": "Account",
    "created_at": "Created",
    "stage": "Stage",
    "status": {
        "from": "Stage",
        "map": {"Closed Won": "won", "Closed Lost": "lost"},
        "default": "open",
    },
    "closed_at": {"from": "Close", "keep_when": {"Stage": ["Closed Won", "Closed Lost"]}},
    "amount": "Amount",
}


def _minimal(tmp_path: Path, rows: str, **table_options: object) -> tuple[Path, Path]:
    """A one-table report and a mapping for it."""
    src = tmp_path / "deals.csv"
    src.write_text("Id,Account,Created,Stage,Amount,Close\n" + rows, encoding="utf-8")
    mapping = _write_mapping(
        tmp_path,
        {
            "defaults": {"date_format": "%m/%d/%Y"},
            "tables": {
                "opportunities": {
                    "file": "deals.csv",
                    "columns": dict(MINIMAL_COLUMNS),
                    **table_options,
                }
            },
        },
    )
    return src, mapping


# --- Salesforce ---------------------------------------------------------------------------


def test_salesforce_opportunities(salesforce_dir: Path, salesforce_mapping: Path) -> None:
    export = generic_csv.convert(salesforce_dir, salesforce_mapping)
    opps = export.opportunities.set_index("opportunity_id")
    assert len(opps) == 12  # the report footer is not data
    assert opps["status"].value_counts().to_dict() == {"open": 7, "won": 3, "lost": 2}
    won = opps.loc["0065g00000Nw1A1"]
    assert won["closed_at"] == pd.Timestamp("2026-03-27")
    assert pd.isna(won["expected_close_date"])
    assert won["amount"] == 48000.0
    # an open deal's Close Date is its expected close date, never a close date
    open_deals = opps[opps["status"] == "open"]
    assert open_deals["closed_at"].isna().all()
    assert open_deals.loc["0065g00000Nw1A3", "expected_close_date"] == pd.Timestamp("2026-04-30")
    assert opps.loc["0065g00000Nw1B2", "amount"] == 15480.5
    assert opps.loc["0065g00000Nw1A4", "source"] == "inbound"
    assert opps.loc["0065g00000Nw1A3", "source"] == "partner"
    assert opps.loc["0065g00000Nw1A3", "next_step"] == "Send redlines to legal"
    assert pd.isna(opps.loc["0065g00000Nw1A1", "next_step"])
    assert opps.loc["0065g00000Nw1A7", "crm_probability"] == pytest.approx(0.5)
    assert opps.loc["0065g00000Nw1A4", "forecast_category"] == "best_case"
    assert export.stage_probabilities()["Negotiation/Review"] == 0.9
    assert export.won_stages == {"Closed Won"}


def test_salesforce_history(salesforce_dir: Path, salesforce_mapping: Path) -> None:
    hist = generic_csv.convert(salesforce_dir, salesforce_mapping).stage_history
    assert len(hist) == 23
    acme = hist[hist["opportunity_id"] == "0065g00000Nw1A1"].sort_values("changed_at")
    assert acme["stage"].tolist() == [
        "Prospecting",
        "Proposal/Price Quote",
        "Negotiation/Review",
        "Closed Won",
    ]
    assert acme["changed_at"].iloc[0] == pd.Timestamp("2026-01-06 09:14")
    assert acme["changed_at"].iloc[-1] == pd.Timestamp("2026-03-27 16:22")
    assert acme["amount"].tolist() == [40000.0, 45000.0, 48000.0, 48000.0]
    assert set(hist["forecast_category"]) <= {
        "pipeline",
        "best_case",
        "commit",
        "closed",
        "omitted",
    }


def test_salesforce_round_trip(
    tmp_path: Path, salesforce_dir: Path, salesforce_mapping: Path
) -> None:
    export = generic_csv.convert(salesforce_dir, salesforce_mapping)
    back = read_export(write_export(export, tmp_path / "out"))
    assert len(back.opportunities) == 12 and len(back.stage_history) == 23
    assert back.stage_order()[0] == "Prospecting"
    assert back.exported_at == pd.Timestamp("2026-04-10")
    pd.testing.assert_series_equal(back.opportunities["amount"], export.opportunities["amount"])


def test_history_is_optional(
    tmp_path: Path, salesforce_dir: Path, salesforce_mapping: Path
) -> None:
    shutil.copy(salesforce_dir / "opportunities.csv", tmp_path / "opportunities.csv")
    export = generic_csv.convert(tmp_path, salesforce_mapping)
    assert export.stage_history is None and len(export.opportunities) == 12


def test_a_single_file_is_one_table(salesforce_dir: Path, salesforce_mapping: Path) -> None:
    export = generic_csv.convert(salesforce_dir / "opportunities.csv", salesforce_mapping)
    assert set(export.tables()) == {"opportunities"}


# --- HubSpot ------------------------------------------------------------------------------


def test_hubspot_deals(tmp_path: Path, hubspot_dir: Path, hubspot_mapping: Path) -> None:
    export = generic_csv.convert(hubspot_dir, hubspot_mapping)
    opps = export.opportunities.set_index("opportunity_id")
    assert len(opps) == 12
    assert opps["status"].value_counts().to_dict() == {"open": 7, "won": 3, "lost": 2}
    assert opps.loc["20110003", "status"] == "lost"  # closed, not won
    assert opps.loc["20110003", "closed_at"] == pd.Timestamp("2026-02-13")
    assert opps.loc["20110005", "expected_close_date"] == pd.Timestamp("2026-05-29")
    assert opps.loc[opps["status"] == "open", "closed_at"].isna().all()
    assert opps.loc["20110010", "amount"] == 120000.0
    assert opps.loc["20110004", "account_id"] == "8100000004"  # first of two companies
    assert pd.isna(opps.loc["20110009", "account_id"])
    assert opps.loc["20110002", "source"] == "expansion"
    assert pd.isna(opps.loc["20110001", "source"])
    assert opps.loc["20110001", "deal_type"] == "New Business"
    # a contract date is a day, even where the report gives a time
    assert opps.loc["20110001", "created_at"] == pd.Timestamp("2026-01-05")
    back = read_export(write_export(export, tmp_path / "out"))
    assert back.opportunities["status"].tolist() == export.opportunities["status"].tolist()


# --- values -------------------------------------------------------------------------------


def test_currency_strings() -> None:
    us = pd.Series(["$1,234.50", "USD 900", "(12.00)", "  $0.99 ", None, "n/a"], dtype="string")
    assert parse_numbers(us).tolist()[:4] == [1234.5, 900.0, -12.0, 0.99]
    assert parse_numbers(us)[4:].isna().all()
    eu = pd.Series(["1.234,50 €", "€ 12", "1 000 000,00 EUR"], dtype="string")
    assert parse_numbers(eu, decimal=",", thousands=".").tolist() == [1234.5, 12.0, 1_000_000.0]


def test_decimal_comma_and_constants(tmp_path: Path) -> None:
    src = tmp_path / "deals.csv"
    src.write_text(
        "Id;Account;Created;Stage;Amount;Close\n"
        'A1;X;14.03.2026;Gewonnen;"1.234,50 €";20.03.2026\n'
        'A2;Y;15.03.2026;Angebot;"980,00 €";\n',
        encoding="utf-8",
    )
    columns = dict(MINIMAL_COLUMNS)
    columns["status"] = {
        "from": "Stage",
        "map": {"Gewonnen": "won", "Verloren": "lost"},
        "default": "open",
    }
    columns["closed_at"] = {"from": "Close", "keep_when": {"Stage": ["Gewonnen", "Verloren"]}}
    columns["region"] = {"value": "DACH"}
    mapping = _write_mapping(
        tmp_path,
        {
            "defaults": {"date_format": "%d.%m.%Y", "decimal": ",", "delimiter": ";"},
            "tables": {"opportunities": {"file": "deals.csv", "columns": columns}},
        },
    )
    opps = generic_csv.convert(tmp_path, mapping).opportunities
    assert opps["amount"].tolist() == [1234.5, 980.0]
    assert opps["status"].tolist() == ["won", "open"]
    assert opps["created_at"].tolist() == [pd.Timestamp("2026-03-14"), pd.Timestamp("2026-03-15")]
    assert opps["region"].tolist() == ["DACH", "DACH"]


# --- refused mappings and files -------------------------------------------------------------


def test_unknown_keys_are_named(tmp_path: Path) -> None:
    src, _ = _minimal(tmp_path, "A1,X,3/14/2026,Open,$10,\n")
    columns = dict(MINIMAL_COLUMNS)
    columns["amount"] = {"from": "Amount", "currencey": True}
    mapping = _write_mapping(
        tmp_path,
        {
            "tabels": {},
            "tables": {"opportunities": {"file": "deals.csv", "columns": columns, "sheet": 1}},
        },
    )
    with pytest.raises(MappingError) as info:
        generic_csv.convert(src, mapping)
    text = str(info.value)
    assert "mapping.yaml" in text
    assert "tabels: unknown key" in text
    assert "tables.opportunities.sheet: unknown key" in text
    assert "tables.opportunities.columns.amount.currencey: unknown key" in text


def test_required_contract_column_without_rule(tmp_path: Path) -> None:
    columns = {k: v for k, v in MINIMAL_COLUMNS.items() if k != "status"}
    mapping = _write_mapping(tmp_path, {"tables": {"opportunities": {"columns": columns}}})
    with pytest.raises(
        MappingError,
        match=r"tables\.opportunities\.columns: no rule for the required contract column 'status'",
    ):
        generic_csv.load_mapping(mapping)


def test_bad_rules_are_named(tmp_path: Path) -> None:
    columns = dict(MINIMAL_COLUMNS)
    columns["amount"] = {"from": "Amount", "value": 3}
    columns["created_at"] = {"from": "Created", "format": "MM/DD/YYYY"}
    columns["owner_id"] = {"from": "Owner", "scale": 2}
    mapping = _write_mapping(
        tmp_path,
        {
            "tables": {"leeds": {}, "opportunities": {"columns": columns}},
            "dataset": {"stages": [{"name": "Open", "probability": 7}]},
        },
    )
    with pytest.raises(MappingError) as info:
        generic_csv.load_mapping(mapping)
    text = str(info.value)
    assert "tables.leeds: unknown table" in text
    assert "tables.opportunities.columns.amount: needs exactly one of" in text
    assert "tables.opportunities.columns.created_at.format" in text
    assert "tables.opportunities.columns.owner_id.scale: only applies to numbers" in text
    assert "dataset.stages" in text


def test_mapped_column_missing_from_file(
    tmp_path: Path, salesforce_dir: Path, salesforce_mapping: Path
) -> None:
    text = (
        (salesforce_dir / "opportunities.csv")
        .read_text(encoding="utf-8")
        .replace('"Close Date"', '"Close"', 1)
    )
    (tmp_path / "opportunities.csv").write_text(text, encoding="utf-8")
    with pytest.raises(ContractError) as info:
        generic_csv.convert(tmp_path, salesforce_mapping)
    message = str(info.value)
    assert "opportunities.csv, column 'Close Date'" in message
    assert "tables.opportunities.columns.closed_at" in message
    assert "salesforce.yaml" in message


def test_unreadable_values_name_file_column_and_line(tmp_path: Path) -> None:
    src, mapping = _minimal(
        tmp_path, "A1,X,3/14/2026,Open,$10,\nA2,X,2026-03-15,Open,ten dollars,\n"
    )
    with pytest.raises(ContractError) as info:
        generic_csv.convert(src, mapping)
    message = str(info.value)
    assert (
        "deals.csv, column 'Created'" in message and "line 3" in message and "'%m/%d/%Y'" in message
    )
    assert (
        "deals.csv, column 'Amount'" in message and "tables.opportunities.columns.amount" in message
    )


def test_contract_breaks_after_mapping_are_refused(tmp_path: Path) -> None:
    # closed before created: the converted table is checked like read_export checks an export
    src, mapping = _minimal(tmp_path, "A1,X,3/14/2026,Closed Won,$10,3/1/2026\n")
    with pytest.raises(
        ContractError,
        match=r"deals\.csv, column 'closed_at': 1 deal\(s\) close before they were created",
    ):
        generic_csv.convert(src, mapping)


def test_undeclared_stage_is_refused(
    tmp_path: Path, hubspot_dir: Path, hubspot_mapping: Path
) -> None:
    text = (hubspot_dir / "hubspot-crm-exports-all-deals-2026-04-14.csv").read_text(
        encoding="utf-8"
    )
    (tmp_path / "deals.csv").write_text(
        text.replace("Contract Sent", "Contract Signed"), encoding="utf-8"
    )
    with pytest.raises(ContractError, match="not declared in dataset.yaml"):
        generic_csv.convert(tmp_path, hubspot_mapping)


def test_missing_files_are_named(tmp_path: Path, salesforce_mapping: Path) -> None:
    with pytest.raises(InputError, match=r"tables\.opportunities\.file"):
        generic_csv.convert(tmp_path, salesforce_mapping)
    with pytest.raises(InputError, match="no such mapping file"):
        generic_csv.convert(tmp_path, tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="no such file or folder"):
        generic_csv.convert(tmp_path / "nope", salesforce_mapping)


def test_ambiguous_files_are_refused(
    tmp_path: Path, salesforce_dir: Path, salesforce_mapping: Path
) -> None:
    shutil.copy(salesforce_dir / "opportunities.csv", tmp_path / "opportunities.csv")
    shutil.copy(salesforce_dir / "opportunities.csv", tmp_path / "opportunities (1).csv")
    with pytest.raises(InputError, match="several files match"):
        generic_csv.convert(tmp_path, salesforce_mapping)


def test_invalid_yaml(tmp_path: Path) -> None:
    mapping = tmp_path / "bad.yaml"
    mapping.write_text("tables: [unclosed\n", encoding="utf-8")
    with pytest.raises(MappingError, match="not valid YAML"):
        generic_csv.load_mapping(mapping)
