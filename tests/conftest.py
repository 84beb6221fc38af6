"""Shared fixtures: one small seeded simulated export, and the folder of real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from features import synthetic
from features.io import Export

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def small_simulation() -> synthetic.Simulation:
    """A small simulated CRM export (800 opportunities, 4000 leads) with its truth."""
    return synthetic.simulate(seed=3, n_opportunities=800, n_leads=4000)


@pytest.fixture(scope="session")
def small_export(small_simulation: synthetic.Simulation) -> Export:
    """The export of :func:`small_simulation` (contract dtypes, as ``read_export`` returns)."""
    return small_simulation.export


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The shared real datasets (``PIPECAST_REAL_DATA_DIR``, default ``../shared/data``)."""
    folder = Path(os.environ.get("PIPECAST_REAL_DATA_DIR", "../shared/data"))
    if not folder.is_absolute():
        folder = REPO_ROOT / folder
    folder = folder.resolve()
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} not found (set PIPECAST_REAL_DATA_DIR)")
    return folder
