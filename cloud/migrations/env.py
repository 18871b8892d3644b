"""Alembic environment: runs migrations against the URL that cloud.db passes in."""

from __future__ import annotations

from alembic import context

from cloud import account_models  # noqa: F401 (its tables join Base.metadata)
from cloud.db import make_engine
from cloud.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or ""
engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
