"""The SQL-rendered JSON equals PostgreSQL's own row_to_json, byte for byte, on hard values."""

import json

import asyncpg
import pytest

from app import queries

pytestmark = pytest.mark.anyio

HARD_TEXT = [
    "plain",
    'quote " and backslash \\',
    "new\nline\ttab\r",
    "control \x01\x1f",
    "unicode é ✓ 𝄞",
    "",
    "</script>",
]


async def test_json_object_sql_matches_row_to_json(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        rows = await conn.fetch(
            f"""
            SELECT {queries.json_object_sql()} AS ours, row_to_json(messages)::text AS theirs
            FROM (
                SELECT (9007199254740993 + n)::bigint AS id, -5 AS sender_id,
                       2147483647 AS recipient_id, t AS channel, t AS body,
                       timestamptz '2024-02-29 23:59:59.123456+05' AS created_at,
                       n % 2 = 0 AS is_read
                FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n)
            ) AS messages
            """,
            HARD_TEXT,
        )
    finally:
        await conn.close()
    assert len(rows) == len(HARD_TEXT)
    for row, text in zip(rows, HARD_TEXT, strict=True):
        assert row["ours"] == row["theirs"]
        parsed = json.loads(row["ours"])
        assert parsed["body"] == text
        assert parsed["created_at"] == "2024-02-29T18:59:59.123456+00:00"
        assert list(parsed) == list(queries.COLUMNS)


def test_json_object_sql_of_a_subset_keeps_the_given_order() -> None:
    sql = queries.json_object_sql(("channel", "id"))
    assert sql == """'{"channel":' || to_json(channel) || ',"id":' || id || '}'"""
