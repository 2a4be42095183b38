"""Alembic environment: runs on the connection `backend.db.Database.migrate` hands over."""

from alembic import context

from backend.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
