"""Shared fixtures: a small seeded simulated export, the real datasets, a PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL server of ``PIPECAST_TEST_POSTGRES_URL`` (``.ci/run`` starts one)."""
    url = os.environ.get("PIPECAST_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("PIPECAST_TEST_POSTGRES_URL is not set (.ci/postgres start DIR prints one)")
    return url


@pytest.fixture(scope="module")
def postgres_database(postgres_server_url: str) -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards; yields its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server_url)
    name = f"pipecast_test_{uuid.uuid4().hex[:12]}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
