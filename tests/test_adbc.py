"""Arrow from binary COPY through the ADBC driver (``app/adbc.py``): when it is used, that
the statement carries no value in its text, that it reads the export's own snapshot, and
that closing it early cancels the query and leaves no session."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pyarrow as pa
import pytest

from app import adbc, encoders, plan, sql
from app.datasets import Column, Dataset, Param
from app.errors import NotRepresentable
from app.formats import ARROW, FORMATS, RowCounter
from app.pgtypes import Kind, PgType
from app.transaction import TRANSACTION_SETTINGS, DbIdentity

INT8 = PgType("int8", "bigint", "bigint", Kind.INTEGER)
TEXT = PgType("text", "text", "text", Kind.TEXT)
UUID = PgType("uuid", "uuid", "uuid", Kind.UUID)
INTS = PgType(
    "_int4",
    "integer[]",
    "integer[]",
    Kind.ARRAY,
    element=PgType("int4", "integer", "integer", Kind.INTEGER),
)
SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, name text);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 200000) AS i;
CREATE TABLE grids (id bigint PRIMARY KEY, ref uuid, g integer[]);
INSERT INTO grids VALUES (1, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}'),
    (2, NULL, '{}'), (3, NULL, NULL), (4, NULL, '{{1,2},{3,4}}');
CREATE TABLE amounts (n numeric PRIMARY KEY);
INSERT INTO amounts VALUES (10), (2), (1.5);
"""


def dataset(
    *columns: Column,
    name: str = "items",
    key: tuple[str, ...] = ("id",),
    params: tuple[Param, ...] = (),
) -> Dataset:
    return Dataset(
        name=name,
        kind="table",
        source=f'"public"."{name}"',
        columns=columns,
        key=key,
        filters=tuple(c.name for c in columns),
        params=params,
    )


ITEMS = dataset(Column("id", INT8, False), Column("name", TEXT, True))


def test_it_is_used_only_where_it_is_safe() -> None:
    plain = sql.Selection(fields=("id", "name"))
    assert adbc.use_for(ITEMS, plain)
    listed = sql.Selection(fields=("id",), conditions=(sql.Condition("id", "in", ("1", "2")),))
    assert not adbc.use_for(ITEMS, listed)
    saved = dataset(Column("id", INT8, False), params=(Param("since", TEXT),))
    assert not adbc.use_for(saved, sql.Selection(fields=("id",), params=("x",)))
    _, encoder, counter, _ = plan.plan(
        ITEMS, plain, FORMATS[ARROW], 100, 100, binary=(adbc.DriverPool("postgresql://x"), None)
    )
    assert type(encoder).__name__ == "ArrowBatches" and counter is RowCounter.RECORDS
    _, fallback, _, _ = plan.plan(ITEMS, plain, FORMATS[ARROW], 100, 100, binary=None)
    assert type(fallback).__name__ == "ArrowFromCSV"


def test_values_travel_as_bound_settings_never_in_the_statement() -> None:
    selection = sql.Selection(
        fields=("id",),
        conditions=(sql.Condition("name", "prefix", "it's"),),
        after=("7",),
        limit=None,
    )
    query = sql.as_binary(ITEMS, selection)
    assert "$" not in query.sql and "it" not in query.sql.replace('"items"', "")
    assert "current_setting('rowstream.arg_1')::text::text" in query.sql
    assert query.sql.endswith("LIMIT current_setting('rowstream.arg_3')::bigint")
    assert query.args == ("it's%", "7", None)
    statements = adbc._statements("00000003-1", DbIdentity("r", "{}"), query.args)
    assert statements[1] == ("SET TRANSACTION SNAPSHOT E'00000003-1'", ())
    last, values = statements[-1]
    assert last.startswith("SELECT set_config('rowstream.arg_1', $1, true)")
    assert values == ("it's%", "7", str(adbc.NO_LIMIT))
    assert len(statements) == 2 + len(TRANSACTION_SETTINGS.split(";")) + 2


@pytest.fixture(scope="module")
def items_url(fresh_database: Callable[..., str]) -> str:
    url: str = fresh_database("rowstream_adbc", SCHEMA)
    return url


async def _open(url: str) -> tuple[asyncpg.Connection, object]:
    conn = await asyncpg.connect(url)
    tx = conn.transaction(isolation="repeatable_read", readonly=True)
    await tx.start()
    return conn, tx


def test_it_reads_the_exports_snapshot(items_url: str) -> None:
    async def scenario() -> tuple[int, list[int]]:
        conn, _ = await _open(items_url)
        try:
            count = await conn.fetchval("SELECT count(*) FROM items WHERE id > 199990")
            writer = await asyncpg.connect(items_url)
            await writer.execute("INSERT INTO items VALUES (300000, 'late')")  # after the count
            await writer.close()
            selection = sql.Selection(
                fields=("id",), conditions=(sql.Condition("id", "gt", "199990"),), limit=None
            )
            ids: list[int] = []
            pool = adbc.DriverPool(items_url)
            query = sql.as_binary(ITEMS, selection)
            async for batch in adbc.batches(conn, pool, query, None):
                ids += batch.column("id").to_pylist()
            assert len(pool._idle) == 1  # a clean end: kept for the next export
            await pool.close()
            return count, ids
        finally:
            await conn.close()
            cleanup = await asyncpg.connect(items_url)
            await cleanup.execute("DELETE FROM items WHERE id = 300000")
            await cleanup.close()

    count, ids = asyncio.run(scenario())
    assert ids == list(range(199991, 200001)) and count == len(ids)  # the late row unseen


def test_closing_it_early_cancels_the_query_and_leaves_no_session(items_url: str) -> None:
    async def scenario() -> list[str]:
        conn, _ = await _open(items_url)
        selection = sql.Selection(fields=("id", "name"))
        pool = adbc.DriverPool(items_url)
        body = adbc.batches(conn, pool, sql.as_binary(ITEMS, selection), None)
        first = await anext(body)
        assert first.num_rows > 0
        await body.aclose()
        assert pool._idle == []  # cancelled mid-way: closed, not kept
        await conn.close()
        await asyncio.sleep(0.3)
        watcher = await asyncpg.connect(items_url)
        try:
            rows = await watcher.fetch(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            return [r["state"] for r in rows]
        finally:
            await watcher.close()

    assert asyncio.run(scenario()) == []


def test_a_pooled_connection_the_server_closed_is_replaced(items_url: str) -> None:
    async def scenario() -> int:
        pool = adbc.DriverPool(items_url)
        selection = sql.Selection(fields=("id",), limit=5)
        for _ in range(2):
            conn, _ = await _open(items_url)
            got = [b async for b in adbc.batches(conn, pool, sql.as_binary(ITEMS, selection), None)]
            await conn.close()
            assert sum(b.num_rows for b in got) == 5
            # the server ends the idle pooled session, as a restart or a timeout would
            killer = await asyncpg.connect(items_url)
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            await killer.close()
        idle = len(pool._idle)
        await pool.close()
        return idle

    assert asyncio.run(scenario()) == 1


GRIDS = dataset(
    Column("id", INT8, False), Column("ref", UUID, True), Column("g", INTS, True), name="grids"
)


def test_every_type_arrives_as_ours_and_a_flat_read_of_a_grid_fails(items_url: str) -> None:
    """A uuid travels as its text (the driver would give 16 bytes), an int[] as a list;
    the driver would read ``{{1,2},{3,4}}`` as ``[1, 2, 3, 4]``: that export fails."""

    async def read(selection: sql.Selection) -> pa.Table:
        conn, _ = await _open(items_url)
        pool = adbc.DriverPool(items_url)
        columns = [
            (c.name, c.type, c.nullable) for c in GRIDS.columns if c.name in selection.fields
        ]
        conform = encoders.ArrowBatches(encoders.ArrowEncoder(columns))
        body = conform.start()
        try:
            async for batch in adbc.batches(conn, pool, sql.as_binary(GRIDS, selection), None):
                body += conform.batch(batch)
        finally:
            await pool.close()
            await conn.close()
        return pa.ipc.open_stream(body + conform.end()).read_all()

    below_4 = (sql.Condition("id", "lt", "4"),)
    table = asyncio.run(read(sql.Selection(fields=("id", "ref", "g"), conditions=below_4)))
    assert table.schema.field("ref").type == pa.string()
    assert table.schema.field("g").type == pa.list_(pa.int32())
    assert table.to_pylist() == [
        {"id": 1, "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "g": [1, None, 3]},
        {"id": 2, "ref": None, "g": []},
        {"id": 3, "ref": None, "g": None},
    ]
    with pytest.raises(NotRepresentable, match="a multi-dimensional array: Arrow lists have one"):
        asyncio.run(read(sql.Selection(fields=("id", "g"))))


def test_rows_come_in_key_order_however_a_column_is_rendered(items_url: str) -> None:
    """A numeric key travels as text: ordered by the column, not by its text (where 10
    sorts before 2)."""
    numeric = PgType("numeric", "numeric", "numeric", Kind.NUMERIC)
    amounts = dataset(Column("n", numeric, False), name="amounts", key=("n",))

    async def read() -> list[str]:
        conn, _ = await _open(items_url)
        pool = adbc.DriverPool(items_url)
        try:
            query = sql.as_binary(amounts, sql.Selection(fields=("n",)))
            return [
                v
                for b in [b async for b in adbc.batches(conn, pool, query, None)]
                for v in b.column("n").to_pylist()
            ]
        finally:
            await pool.close()
            await conn.close()

    assert asyncio.run(read()) == ["1.5", "2", "10"]
