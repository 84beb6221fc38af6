"""Wall time and peak memory of ``pipecast train`` on the default simulated export.

One child process simulates the export (seed 7, written as CSV like ``pipecast simulate``; not
timed); a fresh child process then runs the whole training — reading the export, features,
both models, evaluation, MLflow logging and registration into a throw-away sqlite store — so
that its peak resident memory (``ru_maxrss``) is that of ``make train`` alone.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: name → (opportunities, leads)
SIZES: dict[str, tuple[int, int]] = {"default": (16_000, 60_000)}
TARGET_SECONDS = 180.0
TARGET_PEAK_MB = 4096.0


def _simulate_child(size: str, folder: str) -> dict[str, Any]:
    from features import synthetic

    n_opps, n_leads = SIZES[size]
    sim = synthetic.simulate(seed=7, n_opportunities=n_opps, n_leads=n_leads)
    synthetic.write_simulation(sim, Path(folder))
    return {}


def _train_child(size: str, folder: str) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    from pipecast.config import Settings
    from training.train import run_training

    store = Path(folder).parent / "mlflow"
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    start = time.perf_counter()
    summary = run_training(settings, data_dir=Path(folder))
    seconds = time.perf_counter() - start
    close = summary.models[0]
    return {
        "seconds": seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": int(close.counts.get("snapshots", 0)),
    }


def _child(kind: str, size: str, folder: str) -> dict[str, Any]:
    code = (
        "import json, sys; from benchmarks import training_bench as b; "
        f"print(json.dumps(b._{kind}_child({size!r}, {folder!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(sizes: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per size: the whole ``pipecast train``."""
    rows = []
    for size in sizes or list(SIZES):
        with tempfile.TemporaryDirectory() as tmp:
            folder = str(Path(tmp) / "export")
            _child("simulate", size, folder)
            got = _child("train", size, folder)
        ok = got["seconds"] < TARGET_SECONDS and got["peak_mb"] < TARGET_PEAK_MB
        rows.append(
            {
                "bench": "training",
                "size": size,
                "step": "pipecast train (both models)",
                "rows": got["rows"],
                "seconds": got["seconds"],
                "peak_mb": got["peak_mb"],
                "note": (
                    f"training/{size}: {got['seconds']:.0f} s, peak {got['peak_mb']:,.0f} MB "
                    f"(target < {TARGET_SECONDS:.0f} s, < {TARGET_PEAK_MB:,.0f} MB: "
                    f"{'met' if ok else 'NOT met'})"
                ),
            }
        )
    return rows
