"""Fixtures of the adapter tests: the example report exports and mappings.

``real_data_dir`` comes from tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = Path(__file__).resolve().parent / "data"
MAPPINGS = REPO_ROOT / "features" / "adapters" / "mappings"


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
