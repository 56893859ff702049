"""Every filter operator, over a real server, selects exactly the rows the same condition
selects when PostgreSQL runs it; and an indexed filter is planned on its index."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from tests.support import Server, run

CASES: list[tuple[dict[str, str], str]] = [
    ({"i4": "5000"}, "i4 = 5000"),
    ({"i4__eq": "5000"}, "i4 = 5000"),
    ({"i2__ne": "7"}, "i2 <> 7"),
    ({"i8__gt": "2000000000000"}, "i8 > 2000000000000"),
    ({"i8__gte": "2000000000000"}, "i8 >= 2000000000000"),
    ({"i2__lt": "3"}, "i2 < 3"),
    ({"i2__lte": "3"}, "i2 <= 3"),
    ({"i4__in": "3000,4000,999999"}, "i4 IN (3000, 4000, 999999)"),
    ({"t__isnull": "true"}, "t IS NULL"),
    ({"t__isnull": "false"}, "t IS NOT NULL"),
    ({"t__prefix": "text 1"}, "t LIKE 'text 1%'"),
    ({"t__prefix": 'quote "'}, "t LIKE 'quote \"%'"),
    ({"t__prefix": "14%"}, "t LIKE '14\\%%'"),  # unescaped, 147% would match too
    ({"t__prefix": 'quote " backslash \\'}, "t LIKE 'quote \" backslash \\\\%'"),
    ({"vc__prefix": "v1"}, "vc LIKE 'v1%'"),
    ({"c3": "a"}, "c3 = 'a'"),
    ({"n__gt": "20.5"}, "n > 20.5"),
    ({"n52__lte": "1.5"}, "n52 <= 1.5"),
    ({"r__gte": "50.25"}, "r >= 50.25"),
    ({"d__lt": "2"}, "d < 2"),
    ({"r": "NaN"}, "r = 'NaN'"),
    ({"d": "-Infinity"}, "d = '-Infinity'"),
    ({"b": "true"}, "b"),
    ({"b__ne": "true"}, "b <> true"),
    ({"u": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"}, "u = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
    ({"dt__gte": "2024-06-01"}, "dt >= '2024-06-01'"),
    ({"dt__in": "2024-01-05,2024-02-29"}, "dt IN ('2024-01-05', '2024-02-29')"),
    ({"tm__lt": "01:00:00"}, "tm < '01:00'"),
    ({"ts__gt": "2024-01-10T00:00:00"}, "ts > '2024-01-10'"),
    ({"tstz__lt": "2024-01-05T12:00:00+02:00"}, "tstz < '2024-01-05 10:00+00'"),
    ({"tstz__gte": "2024-01-05T10:00:00"}, "tstz >= '2024-01-05 10:00+00'"),
    ({"iv": "00:04:07"}, "iv = '247 seconds'"),
    ({"jb": '{"i": 7, "even": false}'}, 'jb = \'{"i": 7, "even": false}\''),
    ({"j__isnull": "true"}, "j IS NULL"),
    ({"ia": "{5,6}"}, "ia = '{5,6}'"),
    ({"m": "happy"}, "m = 'happy'"),
    ({"m__gt": "sad"}, "m > 'sad'"),
    ({"ip": "10.0.7.1"}, "ip = '10.0.7.1'"),
    ({"by": "\\x0007"}, "by = '\\x0007'"),
    ({"i2__lt": "50", "b": "false", "t__isnull": "false"}, "i2 < 50 AND NOT b AND t IS NOT NULL"),
    ({"i4__gte": "10000", "i4__lte": "20000"}, "i4 BETWEEN 10000 AND 20000"),
]


async def _ids(url: str, condition: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        rows = await conn.fetch(f"SELECT id FROM zoo WHERE {condition} ORDER BY id")
        return [r["id"] for r in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize(("params", "condition"), CASES, ids=[c for _, c in CASES])
def test_each_operator_selects_what_postgres_selects(
    zoo_server: Server, zoo_url: str, params: dict[str, Any], condition: str
) -> None:
    expected = run(_ids(zoo_url, condition))
    for fmt in ("ndjson", "csv"):
        r = httpx.get(
            f"{zoo_server.base_url}/datasets/zoo/stream",
            params={**params, "fields": "id", "format": fmt},
            headers=zoo_server.headers(),
        )
        assert r.status_code == 200, r.text
        lines = r.text.splitlines()
        got = [int(x) for x in lines[1:]] if fmt == "csv" else [json.loads(x)["id"] for x in lines]
        assert got == expected, (fmt, condition)
    assert expected, "a case that selects nothing proves little"


def test_an_indexed_filter_is_planned_on_its_index(db_url: str) -> None:
    """``sender_id`` filters on the demo table EXPLAIN to its ``(sender_id, id)`` index:
    the service's own SQL, not a hand-written copy."""
    from app import demo, introspection, params, sql

    async def plan() -> str:
        conn = await asyncpg.connect(db_url)
        try:
            dataset = (await introspection.describe_all(conn, demo.DECLARATION))["messages"]
            selection, _ = params.parse(dataset, [("sender_id", "7919"), ("limit", "100")])
            query = sql.as_json(dataset, selection)
            rows = await conn.fetch(f"EXPLAIN {query.sql}", *query.args)
            return "\n".join(r[0] for r in rows)
        finally:
            await conn.close()

    text = run(plan())
    assert "messages_sender_id_id" in text, text
    assert "Seq Scan" not in text
