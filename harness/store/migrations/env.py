"""Alembic's environment: runs the revisions on the connection harness.store.migrations hands over,
inside that connection's transaction (there is no alembic.ini and no URL here)."""

from alembic import context

from harness.store import db

connection = context.config.attributes["connection"]
# SQLite alters a column by copying its table: autogenerate writes batch operations for it.
context.configure(connection=connection, target_metadata=db.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():  # joins the caller's transaction
    context.run_migrations()
