"""A one-off measurement (docs/benchmarks.md): is Arrow's C++ CSV writer, fed by the ADBC driver's binary COPY, faster than PostgreSQL's
own CSV rendering? 500,000 rows of messages and bench_wide, medians of 5."""

import asyncio
import json
import pathlib
import statistics
import time

import adbc_driver_postgresql.dbapi as dbapi
import asyncpg
import pyarrow as pa
import pyarrow.csv as pcsv

from app import embedded


class Null:
    def __init__(self):
        self.n = 0
        self.closed = False

    def write(self, b):
        self.n += len(b)
        return len(b)

    def flush(self):
        pass

    def close(self):
        self.closed = True


async def copy(url, sql):
    conn = await asyncpg.connect(url)
    try:
        n = 0

        async def sink(chunk):
            nonlocal n
            n += len(chunk)

        t = time.perf_counter()
        await conn.copy_from_query(sql, output=sink, format="csv")
        return time.perf_counter() - t
    finally:
        await conn.close()


def arrow_only(url, sql, write):
    with dbapi.connect(url, autocommit=True) as c:
        cur = c.cursor()
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(1 << 20)})
        t = time.perf_counter()
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        sink = Null()
        writer = None
        for b in reader:
            if write:
                b = pa.RecordBatch.from_arrays(
                    [
                        c.storage if isinstance(c.type, pa.BaseExtensionType) else c
                        for c in b.columns
                    ],
                    names=b.schema.names,
                )
                if writer is None:
                    writer = pcsv.CSVWriter(
                        pa.PythonFile(sink, mode="w"),
                        b.schema,
                        write_options=pcsv.WriteOptions(quoting_style="needed"),
                    )
                writer.write_batch(b)
        if writer:
            writer.close()
        return time.perf_counter() - t


with embedded.held(
    pathlib.Path(".data")
) as server:  # the tables of: rowstream bench --datasets --wide
    url = embedded.url(server)
    out = {}
    for table, key, binary in (
        ("messages", "id", "SELECT * FROM messages ORDER BY id"),
        (
            "bench_wide",
            "id",
            "SELECT id,i4,i8,i2,amount,ratio,score,flag,label,code,ref::text,day,at,local,attrs::text,to_json(tags)::text AS tags,note,big::text,seen,updated FROM bench_wide ORDER BY id",
        ),
    ):
        rs = {
            "plain COPY csv": [],
            "binary->Arrow": [],
            "binary->Arrow->CSV (pyarrow, unformatted)": [],
        }
        for _ in range(5):
            rs["plain COPY csv"].append(
                asyncio.run(copy(url, f"SELECT * FROM {table} ORDER BY {key}"))
            )
            rs["binary->Arrow"].append(arrow_only(url, binary, False))
            rs["binary->Arrow->CSV (pyarrow, unformatted)"].append(arrow_only(url, binary, True))
        base = statistics.median(rs["plain COPY csv"])
        out[table] = {
            k: (round(statistics.median(v), 3), round(statistics.median(v) / base, 2))
            for k, v in rs.items()
        }
    print(json.dumps(out, indent=1))
