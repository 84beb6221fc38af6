"""The server's export is read once per process and again only when one of its files changes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features import synthetic
from features.errors import InputError
from serving.service import server_export
from tests.serving.conftest import settings_for


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
