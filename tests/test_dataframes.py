"""The data tools people load exports with, each with its own reader, against a running
server: the rows they read are the database's rows (count and values).

- pandas reads URLs itself (``storage_options`` become request headers): CSV, NDJSON,
  Parquet.
- DuckDB reads URLs itself through its ``httpfs`` extension (loaded by path from the
  ``duckdb-extension-httpfs`` wheel: no download) with an ``http`` secret carrying the
  token; it sends ``HEAD`` first and may ask for byte ranges, which get the whole body.
- polars' own URL readers cannot send the token (its HTTP ``storage_options`` take no
  headers, and ``read_ipc_stream`` wants fsspec), so it reads the response body; the
  README says so.
- pyarrow reads the Arrow stream from the body.
"""

from __future__ import annotations

import io
import math
import pathlib
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import duckdb
import httpx
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from rowstream.client import ResponseFile
from tests.support import Server, run, serving

ROWS = 2_000
#: The columns compared with the database, as each tool reads them.
COLUMNS = ["id", "sender_id", "channel", "body", "created_at", "is_read"]


def _url(server: Server, fmt: str) -> str:
    return f"{server.base_url}/messages/stream?limit={ROWS}&format={fmt}"


@pytest.fixture(scope="module")
def expected(server: Server) -> list[tuple[Any, ...]]:
    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(server.database_url)
        try:
            sql = f"SELECT {', '.join(COLUMNS)} FROM messages ORDER BY id LIMIT {ROWS}"
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return run(fetch())


def _normalise(records: Iterator[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Timestamps as aware UTC datetimes (each tool has its own type), the rest as is."""
    out = []
    for record in records:
        values = list(record)
        at = values[4]
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        elif isinstance(at, int):
            at = datetime.fromtimestamp(at / 1_000_000, UTC)
        elif hasattr(at, "to_pydatetime"):
            at = at.to_pydatetime()
        values[4] = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        values[5] = bool(values[5])
        out.append(tuple(values))
    return out


def _pandas(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return _normalise(frame[COLUMNS].itertuples(index=False, name=None))


@pytest.mark.parametrize(
    ("fmt", "read"),
    [
        ("csv", pd.read_csv),
        ("ndjson", lambda url, **kw: pd.read_json(url, lines=True, **kw)),
        ("parquet", pd.read_parquet),
    ],
)
def test_pandas_reads_the_url(
    server: Server, expected: list[tuple[Any, ...]], fmt: str, read: Any
) -> None:
    frame = read(_url(server, fmt), storage_options=server.headers())
    if fmt != "parquet":
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    assert _pandas(frame) == _normalise(iter(expected))


def duckdb_with_httpfs() -> duckdb.DuckDBPyConnection:
    """DuckDB with its http reader, loaded by path from the wheel (no download)."""
    import duckdb_extension_httpfs

    folder = pathlib.Path(duckdb_extension_httpfs.__file__).parent
    extension = next(folder.glob(f"extensions/v{duckdb.__version__}/httpfs.duckdb_extension"))
    con = duckdb.connect()
    con.execute(f"LOAD '{extension}'")
    return con


def _duckdb(server: Server) -> duckdb.DuckDBPyConnection:
    con = duckdb_with_httpfs()
    token = server.headers()["Authorization"]
    headers = f"MAP {{'Authorization': '{token}'}}"
    con.execute(f"CREATE SECRET rowstream (TYPE http, EXTRA_HTTP_HEADERS {headers})")
    return con


@pytest.mark.parametrize(
    ("fmt", "reader"),
    [("csv", "read_csv"), ("ndjson", "read_json"), ("parquet", "read_parquet")],
)
def test_duckdb_reads_the_url(
    server: Server, expected: list[tuple[Any, ...]], fmt: str, reader: str
) -> None:
    con = _duckdb(server)
    # the timestamp as microseconds: DuckDB's Python result needs pytz for time zones
    columns = ", ".join("epoch_us(created_at)" if c == "created_at" else c for c in COLUMNS)
    query = f"SELECT {columns} FROM {reader}('{_url(server, fmt)}') ORDER BY id"
    got = con.execute(query).fetchall()
    assert _normalise(iter(got)) == _normalise(iter(expected))


def test_polars_reads_each_format_from_the_body(
    server: Server, expected: list[tuple[Any, ...]]
) -> None:
    def body(fmt: str) -> bytes:
        response = httpx.get(_url(server, fmt), headers=server.headers(), timeout=30)
        assert response.status_code == 200
        return response.content

    frames = {
        "arrow": pl.read_ipc_stream(body("arrow")),
        "parquet": pl.read_parquet(io.BytesIO(body("parquet"))),
        "csv": pl.read_csv(body("csv"), try_parse_dates=True),
        "ndjson": pl.read_ndjson(body("ndjson")),
    }
    for fmt, frame in frames.items():
        if frame["created_at"].dtype == pl.String:
            frame = frame.with_columns(pl.col("created_at").str.to_datetime(time_zone="UTC"))
        assert _normalise(frame.select(COLUMNS).iter_rows()) == _normalise(iter(expected)), fmt


def test_pyarrow_reads_the_arrow_stream_as_it_arrives(
    server: Server, expected: list[tuple[Any, ...]]
) -> None:
    with httpx.stream("GET", _url(server, "arrow"), headers=server.headers(), timeout=30) as r:
        body = io.BufferedReader(ResponseFile(r.iter_bytes()))  # reads fill what is asked
        reader = pa.ipc.open_stream(pa.PythonFile(body, mode="r"))
        table = reader.read_all()
    assert table.num_rows == ROWS
    got = zip(*(table.column(c).to_pylist() for c in COLUMNS), strict=True)
    assert _normalise(got) == _normalise(iter(expected))


ORDERS = '''
[datasets.orders]
query = """
SELECT * FROM (VALUES
    (1, 'a', timestamptz '2024-01-01 00:00:01+00', date '2024-01-01'),
    (2, '', timestamptz '2024-01-01 00:00:01.25+00', NULL::date),
    (3, NULL, NULL::timestamptz, date '2024-01-03')
) AS v(id, note, placed_at, due)
"""
key = ["id"]
'''

#: NULL and '' apart, a timestamp with its fraction, dates and their NULL.
ORDERS_ROWS = [
    (1, "a", datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC), date(2024, 1, 1)),
    (2, "", datetime(2024, 1, 1, 0, 0, 1, 250000, tzinfo=UTC), None),
    (3, None, None, date(2024, 1, 3)),
]


def _plain(value: Any) -> Any:
    """A cell as Python: None for every kind of missing, aware datetimes in UTC, dates."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        assert value.tzinfo is not None, "a timestamptz read without its time zone"
        return value.astimezone(UTC)
    return value.item() if hasattr(value, "item") else value


def _readme_block(first_line: str) -> str:
    text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    (block,) = [b for b in blocks if b.startswith(first_line)]
    return block


def test_the_readmes_exact_value_recipes_as_written(zoo_url: str, tmp_path: pathlib.Path) -> None:
    """Each tool's reader, with the options the README gives, reads NULL apart from '' and
    timestamps and dates as such, as the database holds them."""
    block = _readme_block("# Exact values in each tool")
    with serving(zoo_url, ORDERS, tmp_path) as server:
        con = _duckdb(server)
        scope: dict[str, Any] = {"token": server.token(), "con": con}
        exec(block.replace("http://127.0.0.1:8000", server.base_url), scope)
    columns = ["id", "note", "placed_at", "due"]
    for name in ("orders", "orders_csv", "orders_json", "orders_pl", "orders_duck"):
        frame = scope[name]
        if isinstance(frame, pl.DataFrame):
            rows = list(frame.select(columns).iter_rows())
        else:
            rows = list(frame[columns].astype(object).itertuples(index=False, name=None))
        assert [tuple(map(_plain, r)) for r in rows] == ORDERS_ROWS, name
