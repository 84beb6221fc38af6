"""Wall time and peak memory of ``pipecast backtest`` on the default simulated export.

A child process simulates the export (seed 7, written as CSV like ``pipecast simulate``; not
timed). Then ``pipecast backtest --data DIR --periods 4 --weeks 1,4,8,12 --json`` runs twice as a
fresh process, timed from start to exit, with a throw-away MLflow store and var folder:

* ``cold``: every one of the 16 cut models is trained (reading the export, cutting it at each
  day, features, training, forecasts, MLflow logging);
* ``cached``: the same command again, every cut model read from the cache.

The forecast figures of the run (MAPE of pipecast and of the stage-weighted number, P10–P90
coverage) are printed in the notes beside the times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: name → (opportunities, leads) of the simulated export
SIZES: dict[str, tuple[int, int]] = {"default": (16_000, 60_000)}
PERIODS, WEEKS = 4, "1,4,8,12"

#: runs the command in this process and prints its peak memory (MB) on the last stderr line
_COMMAND = """
import resource, sys
from pipecast.cli import app
try:
    app(args=sys.argv[1:], prog_name="pipecast")
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stderr.write(f"\\npeak_mb={peak:.1f}\\n")
"""


def _simulate(size: str, folder: Path) -> None:
    n_opps, n_leads = SIZES[size]
    code = (
        "import sys; from pathlib import Path; from features import synthetic; "
        f"synthetic.write_simulation(synthetic.simulate(seed=7, n_opportunities={n_opps}, "
        f"n_leads={n_leads}), Path({str(folder)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _backtest(folder: Path, work: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PIPECAST_VAR_DIR": str(work / "var"),
    }
    args = ["backtest", "--data", str(folder), "--periods", str(PERIODS), "--weeks", WEEKS]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _COMMAND, *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"pipecast backtest failed ({done.returncode}): {done.stderr[-2000:]}")
    peak = [ln for ln in done.stderr.splitlines() if ln.startswith("peak_mb=")]
    return {
        "seconds": seconds,
        "peak_mb": float(peak[-1].split("=")[1]) if peak else None,
        "doc": json.loads(done.stdout),
    }


def run(sizes: list[str] | None = None) -> list[dict[str, Any]]:
    """Two rows per size: the backtest with every cut model trained, then from the cache."""
    rows = []
    for size in sizes or list(SIZES):
        with tempfile.TemporaryDirectory() as tmp:
            folder, work = Path(tmp) / "export", Path(tmp) / "work"
            work.mkdir()
            _simulate(size, folder)
            cold = _backtest(folder, work)
            warm = _backtest(folder, work)
        s = cold["doc"]["summary"]
        for step, got in (("cold", cold), ("cached", warm)):
            doc = got["doc"]
            rows.append(
                {
                    "bench": "backtest",
                    "size": size,
                    "step": (
                        f"pipecast backtest {PERIODS} quarters × weeks {WEEKS} ({step}: "
                        f"{doc['models_trained']} trained, {doc['models_from_cache']} cached)"
                    ),
                    "rows": s["forecasts"],
                    "seconds": got["seconds"],
                    "peak_mb": got["peak_mb"],
                    "note": None,
                }
            )
        rows[-1]["note"] = (
            f"backtest/{size}: {s['forecasts']} forecasts in {cold['seconds']:.0f} s cold, "
            f"{warm['seconds']:.0f} s from the cache; MAPE pipecast {s['pipecast_mape']:.1%} vs "
            f"stage-weighted {s['stage_weighted_mape']:.1%} (ratio {s['mape_ratio']:.2f}), "
            f"actual inside P10–P90 in {s['inside_p10_p90']:.0%}"
        )
    return rows
