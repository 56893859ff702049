"""Issue 26: candidates for rendering NDJSON and CSV in the server from the binary path's
Arrow batches, against the service's own bytes (PostgreSQL's rendering), on `messages`."""

import asyncio
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import adbc_driver_postgresql.dbapi as adbc
import asyncpg
import duckdb
import polars as pl
import pyarrow.csv as pacsv

from app import cursor, demo, embedded, introspection, sql

ROUNDS = 5


def timed(fn):
    out, times = None, []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


async def service_bytes(url, kind):
    conn = await asyncpg.connect(url)
    try:
        d = (await introspection.describe_all(conn, demo.DECLARATION))["messages"]
        sel = sql.Selection(fields=d.column_names)
        q = sql.as_json(d, sel) if kind == "ndjson" else sql.as_csv(d, sel)
        opts = sql.JSON_LINES_COPY if kind == "ndjson" else sql.CSV_COPY
        chunks = []

        async def sink(b):
            chunks.append(bytes(b))

        t = time.perf_counter()
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(cursor.TRANSACTION_SETTINGS)
            await conn.copy_from_query(q.sql, *q.args, output=sink, **opts)
        return b"".join(chunks), time.perf_counter() - t
    finally:
        await conn.close()


async def plain_copy(url):
    conn = await asyncpg.connect(url)
    n = 0

    async def sink(b):
        nonlocal n
        n += len(b)

    t = time.perf_counter()
    await conn.copy_from_query("SELECT * FROM messages ORDER BY id", output=sink, format="csv")
    await conn.close()
    return time.perf_counter() - t


def first_diff(a, b):
    la, lb = a.split(b"\n"), b.split(b"\n")
    for x, y in zip(la, lb):
        if x != y:
            return x[:160], y[:160]
    return (len(la), len(lb)) if len(la) != len(lb) else None


with embedded.held(Path(".data")) as server:
    url = embedded.url(server)
    with adbc.connect(url) as c, c.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")

        def read():
            cur.execute("SELECT * FROM messages ORDER BY id")
            return cur.fetch_arrow_table()

        table, t_read = timed(read)
    ref_nd, t_nd = asyncio.run(service_bytes(url, "ndjson"))
    ref_csv, t_csv = asyncio.run(service_bytes(url, "csv"))
    t_copy = statistics.median([asyncio.run(plain_copy(url)) for _ in range(ROUNDS)])
    print(
        f"rows {table.num_rows}; plain COPY csv {t_copy:.3f}s; ADBC read {t_read:.3f}s; service NDJSON COPY {t_nd:.3f}s; service CSV COPY {t_csv:.3f}s"
    )
    frame = pl.from_arrow(table)
    out, t = timed(lambda: frame.write_ndjson().encode())
    print(f"polars write_ndjson {t:.3f}s exact={out == ref_nd} diff={first_diff(out, ref_nd)}")

    def pl_csv():
        return frame.write_csv(datetime_format="%Y-%m-%dT%H:%M:%S%:z").encode()

    out, t = timed(pl_csv)
    print(f"polars write_csv {t:.3f}s exact={out == ref_csv} diff={first_diff(out, ref_csv)}")

    def pa_csv():
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        return buf.getvalue()

    out, t = timed(pa_csv)
    print(f"pyarrow write_csv {t:.3f}s exact={out == ref_csv} diff={first_diff(out, ref_csv)}")
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.register("t", table)

    def dd(fmt):
        p = f"/tmp/dd.{fmt}"
        con.execute(
            f"COPY (SELECT * FROM t) TO '{p}' (FORMAT {fmt}{', HEADER' if fmt == 'csv' else ''})"
        )
        return Path(p).read_bytes()

    out, t = timed(lambda: dd("json"))
    print(f"duckdb json {t:.3f}s exact={out == ref_nd} diff={first_diff(out, ref_nd)}")
    out, t = timed(lambda: dd("csv"))
    print(f"duckdb csv {t:.3f}s exact={out == ref_csv} diff={first_diff(out, ref_csv)}")
