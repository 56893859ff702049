import re

import asyncpg
import pytest

from app import migrate
from tests.support import run


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        return {r[0] for r in rows}
    finally:
        await conn.close()


async def _columns(url: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = 'messages' ORDER BY ordinal_position"
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


@pytest.fixture
def empty_url(fresh_database) -> str:  # type: ignore[no-untyped-def]
    url: str = fresh_database("rowstream_migrations")
    return url


def test_upgrade_creates_messages_with_the_documented_columns(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    assert run(_columns(empty_url)) == [
        ("id", "bigint", "NO"),
        ("sender_id", "integer", "NO"),
        ("recipient_id", "integer", "NO"),
        ("channel", "text", "NO"),
        ("body", "text", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("is_read", "boolean", "NO"),
    ]


def test_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url, "base")
    assert "messages" not in run(_tables(empty_url))
    migrate.upgrade(empty_url)
    assert "messages" in run(_tables(empty_url))


def test_head_is_the_newest_revision() -> None:
    """``head()`` is what ``serve`` and ``migrate`` report and upgrade to: it must be the one
    revision of migrations/versions/ that no other revision revises (read from the files
    here, not through Alembic, so a wrong answer from Alembic's side would show)."""
    revision = re.compile(r'^revision: str = "(\w+)"$', re.MULTILINE)
    revises = re.compile(r'^down_revision: str \| None = "(\w+)"$', re.MULTILINE)
    files = list((migrate.MIGRATIONS / "versions").glob("*.py"))
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in files:
        text = path.read_text()
        revisions.update(revision.findall(text))
        revised.update(revises.findall(text))
    assert len(revisions) == len(files) > 0  # one revision read from every file
    assert revisions - revised == {migrate.head()}


async def _plan(url: str, sql: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql))
    finally:
        await conn.close()


def test_selective_filters_are_served_by_an_index(db_url: str) -> None:
    plan = run(_plan(db_url, "SELECT id FROM messages WHERE sender_id = 7919 ORDER BY id"))
    assert "messages_sender_id_id" in plan and "Sort" not in plan
    plan = run(_plan(db_url, "SELECT id FROM messages WHERE recipient_id = 1 ORDER BY id"))
    assert "messages_recipient_id_id" in plan
