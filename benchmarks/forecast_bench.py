"""Speed of the forecast: the bookings distribution alone, and the whole ``pipecast forecast``.

* ``distribution``: :func:`models.forecast.forecast_bookings` for a 20,000-deal pipeline whose
  probabilities are already computed (lognormal amounts, beta probabilities, 20 owners, deals
  already won and a new-business estimate), in this process. Target < 1 s.
* ``pipecast forecast``: a child process simulates the default export (seed 7) and another
  trains both models into a throw-away sqlite registry (neither timed); then the command
  ``pipecast forecast --data DIR --period <the export's quarter> --quota … --by owner_id --json``
  runs as a fresh process, timed from start to exit (reading the export, features, scoring,
  explanations, distribution, JSON). Target < 15 s.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: name → (opportunities, leads) of the export the whole command runs on
SIZES: dict[str, tuple[int, int]] = {"default": (16_000, 60_000)}
DEALS = 20_000
TARGET_DISTRIBUTION_SECONDS = 1.0
TARGET_COMMAND_SECONDS = 15.0


def distribution_row() -> dict[str, Any]:
    """Time the distribution of a 20k-deal pipeline (the best of three runs)."""
    from models.forecast import NewBusiness, NewBusinessStream, forecast_bookings

    rng = np.random.default_rng(7)
    amounts = np.round(rng.lognormal(10.3, 0.9, DEALS), -2)
    probs = rng.beta(0.8, 2.5, DEALS)
    owners = rng.choice([f"AE-{i:03d}" for i in range(20)], DEALS)
    won = np.round(rng.lognormal(10.3, 0.9, 300), -2)
    new = NewBusiness(
        streams=(
            NewBusinessStream("SMB", 60.0, 40.0, np.round(rng.lognormal(9.5, 0.5, 200), -2)),
            NewBusinessStream("Mid-Market", 20.0, 15.0, np.round(rng.lognormal(10.8, 0.5, 80), -2)),
        )
    )
    best = float("inf")
    result = None
    for _ in range(3):
        start = time.perf_counter()
        result = forecast_bookings(
            amounts,
            probs,
            groups=owners,
            won_amounts=won,
            won_groups=rng.choice(owners, won.size),
            new_business=new,
            quota=float(np.dot(amounts, probs)),
        )
        best = min(best, time.perf_counter() - start)
    assert result is not None
    ok = best < TARGET_DISTRIBUTION_SECONDS
    return {
        "bench": "forecast",
        "size": f"{DEALS // 1000}k deals",
        "step": "distribution + roll-up (probabilities given)",
        "rows": DEALS,
        "seconds": best,
        "peak_mb": None,
        "note": (
            f"forecast/distribution: {DEALS:,} deals, 20 owners, {result.draws:,} Monte Carlo "
            f"draws in {best:.2f} s (target < {TARGET_DISTRIBUTION_SECONDS:.0f} s: "
            f"{'met' if ok else 'NOT met'})"
        ),
    }


def _simulate_child(size: str, folder: str) -> dict[str, Any]:
    from features import synthetic

    n_opps, n_leads = SIZES[size]
    sim = synthetic.simulate(seed=7, n_opportunities=n_opps, n_leads=n_leads)
    synthetic.write_simulation(sim, Path(folder))
    from features.periods import fiscal_quarter

    quarter = fiscal_quarter(sim.export.exported_at, sim.export.config.fiscal_year_start_month)
    return {"period": quarter.label}


def _train_child(size: str, folder: str) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    from pipecast.config import Settings
    from training.train import run_training

    store = Path(folder).parent / "mlflow"
    run_training(
        Settings(mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}"), data_dir=Path(folder)
    )
    return {}


def _child(kind: str, size: str, folder: str) -> dict[str, Any]:
    code = (
        "import json, sys; from benchmarks import forecast_bench as b; "
        f"print(json.dumps(b._{kind}_child({size!r}, {folder!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def command_row(size: str) -> dict[str, Any]:
    """Time one ``pipecast forecast`` on a freshly simulated and trained export of ``size``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "export")
        period = str(_child("simulate", size, folder)["period"])
        _child("train", size, folder)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'mlflow' / 'mlflow.db'}",
            "PIPECAST_VAR_DIR": str(Path(tmp) / "var"),
        }
        pipecast = str(Path(sys.executable).with_name("pipecast"))
        command = [pipecast, "forecast", "--data", folder, "--period", period]
        command += ["--quota", "5000000", "--by", "owner_id", "--json"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        seconds = time.perf_counter() - start
        peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
        doc = json.loads(done.stdout)
    ok = seconds < TARGET_COMMAND_SECONDS
    return {
        "bench": "forecast",
        "size": size,
        "step": "pipecast forecast --by owner_id --json",
        "rows": int(doc["n_open_deals"]),
        "seconds": seconds,
        "peak_mb": peak,
        "note": (
            f"forecast/{size}: `pipecast forecast` of {doc['n_open_deals']:,} open deals "
            f"({doc['method']['distribution']}, {doc['method']['draws']:,} draws) in "
            f"{seconds:.1f} s (target < {TARGET_COMMAND_SECONDS:.0f} s: "
            f"{'met' if ok else 'NOT met'})"
        ),
    }


def run(sizes: list[str] | None = None) -> list[dict[str, Any]]:
    """The distribution row, then one ``pipecast forecast`` row per export size."""
    rows = [distribution_row()]
    for size in sizes or list(SIZES):
        rows.append(command_row(size))
    return rows
