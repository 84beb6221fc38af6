"""The acceptance round trip: score the pipeline as of D, post what happened after D, calibrate.

``/calibration`` must report the Brier score and ECE that computing them directly from the
returned scores and the simulator's outcomes gives — on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from features import synthetic
from models import calibration as metrics
from serving.app import create_app
from tests.serving.conftest import ScoringSetup, settings_for


def _outcomes_after(export: Any, ids: list[str], as_of: str) -> list[dict[str, Any]]:
    """What the simulator says became of these deals after ``as_of`` (closed ones only)."""
    opps = export.opportunities.set_index(export.opportunities["opportunity_id"].astype("string"))
    rows = opps.reindex(ids)
    closed = rows["status"].astype("string").isin(["won", "lost"]).to_numpy(dtype=bool)
    after = (rows["closed_at"] > pd.Timestamp(as_of)).to_numpy(dtype=bool, na_value=False)
    done = rows.loc[closed & after]
    return [
        {
            "opportunity_id": str(i),
            "status": str(s),
            "closed_at": pd.Timestamp(c).date().isoformat(),
            "amount": float(a),
        }
        for i, s, c, a in zip(
            done.index, done["status"], done["closed_at"], done["amount"], strict=True
        )
    ]


def test_scores_outcomes_and_calibration_agree(
    scoring_setup: ScoringSetup,
    small_simulation: synthetic.Simulation,
    store_url: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(
        scoring_setup.registry_uri,
        tmp_path,
        data_dir=scoring_setup.data_dir,
        database_url=store_url,
    )
    with TestClient(create_app(settings)) as client:
        scored = client.post(
            "/score/opportunities", json={"as_of": scoring_setup.as_of, "period": "2026-Q3"}
        )
        assert scored.status_code == 200, scored.text
        body = scored.json()
        assert body["model_version"] == scoring_setup.close_version
        # the simulated company's fiscal year starts in February: Q3 is August to October
        assert body["period"] == {"label": "2026-Q3", "start": "2026-08-01", "end": "2026-10-31"}
        deals = body["deals"]
        assert len(deals) == body["n_deals"] > 20
        p_win = {d["opportunity_id"]: d["p_win"] for d in deals}

        outcomes = _outcomes_after(small_simulation.export, list(p_win), scoring_setup.as_of)
        assert 10 < len(outcomes) <= len(deals)
        posted = client.post("/outcomes", json={"opportunities": outcomes})
        assert posted.status_code == 200, posted.text
        assert posted.json()["opportunities"] == {
            "inserted": len(outcomes),
            "updated": 0,
            "unchanged": 0,
        }

        report = client.get("/calibration", params={"model": "close_probability"})
        assert report.status_code == 200, report.text
        cal = report.json()

    y = np.array([o["status"] == "won" for o in outcomes], dtype=float)
    p = np.array([p_win[o["opportunity_id"]] for o in outcomes])
    assert cal["n_with_outcome"] == len(outcomes)
    assert cal["pending"] == len(deals) - len(outcomes)
    assert cal["overall"]["brier"] == pytest.approx(metrics.brier_score(y, p), abs=1e-12)
    assert cal["overall"]["ece"] == pytest.approx(
        metrics.expected_calibration_error(y, p), abs=1e-12
    )
    assert cal["overall"]["log_loss"] == pytest.approx(metrics.log_loss(y, p), abs=1e-12)
    assert cal["overall"]["auc"] == pytest.approx(metrics.auc(y, p), abs=1e-12)
    assert sum(b["count"] for b in cal["reliability"]) == len(outcomes)
    [version] = cal["by_model_version"]
    assert version["model_version"] == scoring_setup.close_version
    assert version["n"] == len(outcomes)
    # 2026-07-01 is day 62 of fiscal Q2 (May to July): its ninth week
    assert [w["week_of_quarter"] for w in cal["by_week_of_quarter"]] == [9]
    segments = {s["segment"]: s["n"] for s in cal["by_segment"]}
    assert sum(segments.values()) == len(outcomes) and len(segments) > 1
