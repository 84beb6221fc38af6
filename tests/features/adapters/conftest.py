"""Fixtures of the adapter tests: the shared real-data folder and the example report exports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = Path(__file__).resolve().parent / "data"
MAPPINGS = REPO_ROOT / "features" / "adapters" / "mappings"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The shared real datasets (PIPECAST_REAL_DATA_DIR, default ../shared/data); skip if absent."""
    folder = Path(os.environ.get("PIPECAST_REAL_DATA_DIR", "../shared/data"))
    if not folder.is_absolute():
        folder = (REPO_ROOT / folder).resolve()
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} is absent (set PIPECAST_REAL_DATA_DIR)")
    return folder


@pytest.fixture
def salesforce_dir() -> Path:
    return EXAMPLES / "salesforce"


@pytest.fixture
def hubspot_dir() -> Path:
    return EXAMPLES / "hubspot"


@pytest.fixture
def salesforce_mapping() -> Path:
    return MAPPINGS / "salesforce.yaml"


@pytest.fixture
def hubspot_mapping() -> Path:
    return MAPPINGS / "hubspot.yaml"
