"""Alembic environment: online migrations over SQLAlchemy's asyncpg driver."""

from __future__ import annotations

import asyncio
import os
import uuid

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


def _url() -> str:
    url = context.config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set DATABASE_URL or use 'rowstream migrate'")
    scheme, rest = url.split("://", 1)
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgres", "postgresql") else url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    # Unique statement names and no statement caches: safe behind PgBouncer in transaction
    # mode (DATABASE_POOLER=transaction), where a named statement could meet another
    # client's on a shared server connection. Migrations are rare: the cost is nothing.
    engine = create_async_engine(
        _url(),
        poolclass=NullPool,
        connect_args={
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__rowstream_{uuid.uuid4().hex}__",
        },
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) mode is not supported")
asyncio.run(_main())
