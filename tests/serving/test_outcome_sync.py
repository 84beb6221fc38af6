"""Outcomes read from a fresh CRM export (``pipecast outcomes sync``) and ``pipecast db upgrade``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from features import synthetic
from features.labels import lead_labels
from pipecast.cli import app
from pipecast.config import Settings
from serving.service import sync_outcomes
from serving.store import Store, deal_outcomes, lead_outcomes, outcome_history

runner = CliRunner()


def test_sync_reads_closed_deals_and_settled_leads_once(
    small_simulation: synthetic.Simulation, store_url: str, tmp_path: Path
) -> None:
    export = small_simulation.export
    assert export.opportunities is not None
    store = Store(store_url)
    store.upgrade()
    settings = Settings(database_url=store_url, data_dir=tmp_path)
    first = sync_outcomes(settings, store, export)
    status = export.opportunities["status"].astype("string")
    n_closed = int(status.isin(["won", "lost"]).sum())
    n_decided = int(lead_labels(export)["decided"].sum())
    assert first["opportunities"] == {"inserted": n_closed, "updated": 0, "unchanged": 0}
    assert first["leads"] == {"inserted": n_decided, "updated": 0, "unchanged": 0}
    assert store.count(deal_outcomes) == n_closed and store.count(lead_outcomes) == n_decided
    # the same export again changes nothing
    again = sync_outcomes(settings, store, export)
    assert again["opportunities"]["unchanged"] == n_closed and again["leads"]["inserted"] == 0
    # a later export where a won deal's final amount was corrected: one update, history kept
    opps = export.opportunities.copy()
    won_row = int((opps["status"].astype("string") == "won").to_numpy().nonzero()[0][0])
    deal_id = str(opps["opportunity_id"].iloc[won_row])
    opps.loc[opps.index[won_row], "amount"] = float(opps["amount"].iloc[won_row]) + 1000
    later = sync_outcomes(settings, store, export.replace(opportunities=opps))
    assert later["opportunities"] == {"inserted": 0, "updated": 1, "unchanged": n_closed - 1}
    amounts = [h["amount"] for h in store.outcome_history("deal", deal_id)]
    assert amounts[1] - amounts[0] == 1000
    assert store.count(outcome_history) == n_closed + n_decided + 1
    # a won deal's date and a lead's SQO day are those of the export
    with store.engine.connect() as conn:
        row = conn.execute(
            deal_outcomes.select().where(deal_outcomes.c.opportunity_id == deal_id)
        ).one()
    assert pd.Timestamp(row.closed_at) == opps["closed_at"].iloc[won_row].normalize()
    store.dispose()


def test_cli_db_upgrade_and_outcomes_sync(tmp_path: Path) -> None:
    data = tmp_path / "export"
    assert (
        runner.invoke(
            app, ["simulate", "--out", str(data), "--opportunities", "120", "--leads", "300"]
        ).exit_code
        == 0
    )
    env = {"PIPECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "COLUMNS": "200"}
    upgraded = runner.invoke(app, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    assert "empty → 0001" in upgraded.output
    assert "already at 0001" in runner.invoke(app, ["db", "upgrade"], env=env).output
    synced = runner.invoke(app, ["outcomes", "sync", "--data", str(data)], env=env)
    assert synced.exit_code == 0, synced.output
    assert "0 changed, 0 already known" in synced.output
    resynced = runner.invoke(app, ["outcomes", "sync", "--data", str(data)], env=env)
    assert "opportunities: 0 new, 0 changed" in resynced.output


def test_cli_refusals(tmp_path: Path) -> None:
    env = {"PIPECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}", "COLUMNS": "200"}
    missing = runner.invoke(app, ["outcomes", "sync", "--data", str(tmp_path / "nope")], env=env)
    assert missing.exit_code == 2 and "no such folder" in missing.output
    assert not (tmp_path / "store.db").exists()  # refused before anything was written
    bad_url = runner.invoke(app, ["db", "upgrade"], env={"PIPECAST_DATABASE_URL": "nonsense"})
    assert bad_url.exit_code == 2 and "PIPECAST_DATABASE_URL" in bad_url.output
    down = runner.invoke(
        app,
        ["db", "upgrade"],
        env={"PIPECAST_DATABASE_URL": f"sqlite:///{tmp_path / 'absent' / 'store.db'}"},
    )
    assert down.exit_code == 1 and "prediction store" in down.output
