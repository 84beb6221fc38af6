"""The server's export is read once per process and again only when one of its files changes."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features import synthetic
from features.errors import InputError
from serving import service
from serving.app import create_app
from serving.service import current_export, server_export
from tests.serving.conftest import ScoringSetup, posted_leads, settings_for


def test_the_export_is_read_again_only_when_a_file_changes(
    small_simulation: synthetic.Simulation, tmp_path: Path
) -> None:
    settings = settings_for("sqlite:///unused.db", tmp_path)
    synthetic.write_simulation(small_simulation, settings.data_dir)
    first = server_export(settings)
    assert server_export(settings, require=("opportunities",)) is first
    opportunities = settings.data_dir / "opportunities.csv"
    table = pd.read_csv(opportunities, dtype=str)
    table.iloc[:-1].to_csv(opportunities, index=False)  # the CRM's next export: one deal fewer
    second = server_export(settings)
    assert second is not first
    assert second.opportunities is not None and first.opportunities is not None
    assert len(second.opportunities) == len(first.opportunities) - 1


def test_a_missing_export_is_refused_naming_it(tmp_path: Path) -> None:
    settings = settings_for("sqlite:///unused.db", tmp_path)
    with pytest.raises(InputError, match="data"):
        server_export(settings, require=("opportunities",))


def test_a_rewrite_of_the_same_size_a_new_file_or_a_removed_one_is_seen(
    small_simulation: synthetic.Simulation, tmp_path: Path
) -> None:
    """Whatever changes in the folder, the next request reads it again: never a stale export."""
    settings = settings_for("sqlite:///unused.db", tmp_path)
    synthetic.write_simulation(small_simulation, settings.data_dir)
    activities = settings.data_dir / "activities.csv"
    kept = activities.read_bytes()
    activities.unlink()
    first = server_export(settings)
    assert first.activities is None
    # a table added by the next export
    activities.write_bytes(kept)
    second = server_export(settings)
    assert second is not first and second.activities is not None
    assert server_export(settings) is second
    # one deal's amount changed in place, the file's size the same (a later write)
    opportunities = settings.data_dir / "opportunities.csv"
    before = opportunities.stat()
    header, first_row, rest = opportunities.read_text().split("\n", 2)
    cells = first_row.split(",")
    at = header.split(",").index("amount")
    digit = cells[at][0]
    cells[at] = ("2" if digit == "1" else "1") + cells[at][1:]  # the same number of digits
    opportunities.write_text("\n".join([header, ",".join(cells), rest]))
    os.utime(opportunities, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert opportunities.stat().st_size == before.st_size
    third = server_export(settings)
    assert third is not second
    assert third.opportunities is not None and second.opportunities is not None
    assert float(third.opportunities["amount"].iloc[0]) != float(
        second.opportunities["amount"].iloc[0]
    )
    # a table removed
    activities.unlink()
    assert server_export(settings).activities is None


def test_a_request_finds_the_export_read_already_or_none(
    small_simulation: synthetic.Simulation, tmp_path: Path
) -> None:
    """One lead is scored on the event loop only when no file must be read first, and with the
    very export found current."""
    settings = settings_for("sqlite:///unused.db", tmp_path)
    synthetic.write_simulation(small_simulation, settings.data_dir)
    assert current_export(settings) is None  # not read yet
    read = server_export(settings)
    assert current_export(settings) is read
    (settings.data_dir / "activities.csv").unlink()
    assert current_export(settings) is None
    again = server_export(settings)
    assert current_export(settings) is again
    # no export folder at all: an empty history, nothing to read
    empty = current_export(settings_for("sqlite:///unused.db", tmp_path / "elsewhere"))
    assert empty is not None and not empty.tables()


def test_a_few_posted_leads_scan_the_export_folder_once(
    scoring_setup: ScoringSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request checks the folder once and scores with the export it found current."""
    settings = settings_for(scoring_setup.registry_uri, tmp_path, data_dir=scoring_setup.data_dir)
    records = posted_leads(scoring_setup.data_dir, 2)
    scans: list[Path] = []
    real = service._folder_signature

    def counted(folder: Path) -> tuple[tuple[str, int, int], ...]:
        scans.append(folder)
        return real(folder)

    with TestClient(create_app(settings)) as client:
        body = {"leads": records, "as_of": scoring_setup.as_of}
        first = client.post("/score/leads", json=body)  # reads the export
        assert first.status_code == 200, first.text
        monkeypatch.setattr(service, "_folder_signature", counted)
        again = client.post("/score/leads", json=body)
        assert again.status_code == 200, again.text
    assert len(scans) == 1
    assert again.json()["leads"] == first.json()["leads"]
