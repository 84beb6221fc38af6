"""Alembic environment of the prediction store, run by ``Store.upgrade`` with a connection."""

from __future__ import annotations

from alembic import context

from serving.store import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the prediction store's migrations with `pipecast db upgrade` (they need the "
        "configured PIPECAST_DATABASE_URL), not with the alembic command line"
    )
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
