"""Which zoo types polars renders byte-exactly from the binary path, per column."""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import adbc_driver_postgresql.dbapi as adbc
import asyncpg
import polars as pl

from app import cursor, datasets, embedded, introspection, sql
from tests import zoo


async def setup(admin):
    conn = await asyncpg.connect(admin)
    await conn.execute("DROP DATABASE IF EXISTS render_probe")
    await conn.execute("CREATE DATABASE render_probe")
    await conn.close()


async def reference(url, col):
    conn = await asyncpg.connect(url)
    try:
        cfg = datasets.DatasetsFile.model_validate({"datasets": {"z": {"table": "zoo"}}})
        d = (await introspection.describe_all(conn, cfg))["z"]
        sel = sql.Selection(fields=("id", col))
        out = {}
        for kind, q, opts in (
            ("ndjson", sql.as_json(d, sel), sql.JSON_LINES_COPY),
            ("csv", sql.as_csv(d, sel), sql.CSV_COPY),
        ):
            chunks = []

            async def sink(b):
                chunks.append(bytes(b))

            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute(cursor.TRANSACTION_SETTINGS)
                await conn.copy_from_query(q.sql, *q.args, output=sink, **opts)
            out[kind] = b"".join(chunks)
        return out
    finally:
        await conn.close()


def first_difference(got: bytes, expected: bytes) -> str:
    """The first line that differs, both sides cut short."""
    pairs = zip(got.split(b"\n"), expected.split(b"\n"), strict=False)
    return next((f"{a[:90]!r} vs {b[:90]!r}" for a, b in pairs if a != b), "length")


with embedded.held(Path(".data")) as server:
    admin = embedded.url(server)
    asyncio.run(setup(admin))
    url = embedded.url(server, "render_probe")

    async def schema():
        c = await asyncpg.connect(url)
        await c.execute(zoo.SCHEMA)
        await c.close()

    asyncio.run(schema())
    exact_nd, exact_csv, failed = [], [], {}
    with adbc.connect(url) as c, c.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        for col in zoo.ZOO_COLUMNS:
            if col == "id":
                continue
            ref = asyncio.run(reference(url, col))
            try:
                cur.execute(f'SELECT id, "{col}" FROM zoo ORDER BY id')
                frame = pl.from_arrow(cur.fetch_arrow_table())
                nd = frame.write_ndjson().encode()
                cs = frame.write_csv(datetime_format="%Y-%m-%dT%H:%M:%S%.f%:z").encode()
            except BaseException as exc:  # polars panics are BaseException
                failed[col] = f"{type(exc).__name__}: {str(exc)[:80]}"
                continue
            for kind, rendered, exact in (("ndjson", nd, exact_nd), ("csv", cs, exact_csv)):
                if rendered == ref[kind]:
                    exact.append(col)
                else:
                    failed[f"{col} {kind}"] = first_difference(rendered, ref[kind])
    print("NDJSON exact:", exact_nd)
    print("CSV exact:", exact_csv)
    for k, v in failed.items():
        print(" ", k, ":", v)
