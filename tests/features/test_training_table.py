"""Labelled training tables (``pipecast features --snapshots``): features beside point-in-time labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features import lead, opportunity, synthetic
from features.errors import InputError
from features.io import Export
from features.snapshots import snapshot_dates
from features.training_table import (
    as_known_at,
    lead_training_table,
    opportunity_training_table,
    parse_frequency,
)
from pipecast.cli import app

runner = CliRunner()
CUT = pd.Timestamp("2025-09-30")


def test_opportunity_table_is_the_training_set_with_its_labels(small_export: Export) -> None:
    table = opportunity_training_table(small_export)
    features = opportunity.build_training_set(small_export, dates=snapshot_dates(small_export))
    pd.testing.assert_frame_equal(table[features.columns], features)
    label_cols = [c for c in table.columns if c.startswith("label_")]
    assert {"label_won", "label_censored", "label_won_by_quarter_end"} <= set(label_cols)

    status = small_export.opportunities.set_index("opportunity_id")["status"]
    deal_status = status.reindex(table["opportunity_id"]).to_numpy(dtype=object)
    censored = table["label_censored"].to_numpy(dtype=bool)
    # still-open deals are censored, never lost; closed ones carry their real outcome
    np.testing.assert_array_equal(censored, deal_status == "open")
    won = table["label_won"].to_numpy()
    assert np.isnan(won[censored]).all()
    np.testing.assert_array_equal(won[~censored], (deal_status[~censored] == "won").astype(float))
    # every snapshot is of a deal still open at the end of its day
    closed = table["label_closed_at"]
    assert (closed.isna() | (closed > table["as_of"])).all()


def test_tables_known_at_a_past_date_never_see_later_outcomes(small_export: Export) -> None:
    known = as_known_at(small_export, CUT)
    assert known.exported_at == CUT
    table = opportunity_training_table(known)
    assert table["as_of"].max() <= CUT
    assert (table["label_closed_at"].dropna() <= CUT).all()
    # a deal that closed after the cut is censored at the cut, whatever happened to it later
    opps = small_export.opportunities
    later = set(opps.loc[opps["closed_at"] > CUT, "opportunity_id"])
    rows = table["opportunity_id"].isin(later)
    assert rows.any() and table.loc[rows, "label_censored"].all()

    leads = lead_training_table(known)
    assert leads["as_of"].max() <= CUT
    window = pd.Timedelta(days=small_export.config.sqo_window_days)
    undecided = leads["as_of"] + window > CUT
    # a lead whose window is still running at the cut is decided only if it already became an SQO
    assert (leads.loc[undecided & leads["label_decided"], "label_is_sqo"] == 1.0).all()
    assert leads.loc[~leads["label_decided"], "label_is_sqo"].isna().all()
    features = lead.build_training_set(known)
    pd.testing.assert_frame_equal(leads[features.columns], features)


def test_frequency() -> None:
    assert parse_frequency("14D") == "14D"
    for bad in ("fortnightly", "-1D", "0D"):
        with pytest.raises(InputError, match="--every"):
            parse_frequency(bad)


def test_cli_snapshots(tmp_path: Path) -> None:
    data = tmp_path / "export"
    synthetic.write_simulation(synthetic.simulate(seed=4, n_opportunities=300, n_leads=800), data)
    out = tmp_path / "snapshots.parquet"
    args = ["features", "--data", str(data), "--as-of", "2025-12-31", "--snapshots"]
    result = runner.invoke(app, [*args, "--every", "2W-SUN", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert list(table.columns[:2]) == ["opportunity_id", "as_of"]
    assert "label_won" in table.columns and table["as_of"].max() <= pd.Timestamp("2025-12-31")
    assert (pd.DatetimeIndex(table["as_of"].unique()).day_of_week == 6).all()  # Sundays

    leads_out = tmp_path / "leads.csv"
    result = runner.invoke(app, [*args, "--leads", "--out", str(leads_out)])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(leads_out).columns[:2]) == ["lead_id", "as_of"]

    refused = tmp_path / "refused.csv"
    result = runner.invoke(app, [*args, "--every", "sometimes", "--out", str(refused)])
    assert result.exit_code == 2 and "--every" in result.output
    assert not refused.exists()
