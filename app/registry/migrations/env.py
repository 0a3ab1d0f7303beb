"""Alembic's environment: migrations run on the connection the registry hands over.

``app.registry.database.upgrade`` passes its connection in ``config.attributes``;
the ``alembic`` command line (for developers writing a revision) passes
``-x url=sqlite:///var/store/registry.sqlite3`` instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from app.registry.tables import metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        url = context.get_x_argument(as_dictionary=True)["url"]
        with sa.create_engine(url).begin() as own:
            _migrate(own)
    else:
        _migrate(connection)


def _migrate(connection: sa.Connection) -> None:
    # batch mode: SQLite alters a table by copying it
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
