"""The plan of an export: where a selection's rows come from, what encodes them, and how
they are counted on the way.

The format's entry (``formats.py``) says what it reads and how it is encoded; the plan
picks the fastest source that renders it exactly. Arrow and Parquet come from the ADBC
driver's binary ``COPY`` (``adbc.py``) when the driver is there and the selection suits it;
else from PostgreSQL's ``COPY`` text parsed by Arrow's CSV reader, when every selected
column's text parses to its Arrow value (``pgtypes``); else from cursor records (arrays,
bytea). The other formats come as their entry says: ``COPY`` passed through, or the cursor.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, NamedTuple

import asyncpg

from app import adbc, compression, cursor, encoders, pgtypes, render, sql, transaction
from app.datasets import Dataset
from app.formats import Format, RowCounter
from app.sql import Selection
from rowstream import records

Source = Callable[[asyncpg.Connection], AsyncGenerator[Any, None]]


class Plan(NamedTuple):
    source: Source
    encoder: encoders.Encoder
    counter: RowCounter
    #: The encoder's bytes are compressed already (``Content-Encoding`` applied).
    compressed: bool = False


def plan(
    dataset: Dataset,
    selection: Selection,
    fmt: Format,
    batch_size: int,
    row_group_rows: int,
    binary: tuple[adbc.DriverPool, transaction.DbIdentity | None] | None = None,
    *,
    render_in_server: bool = False,
    encoding: str | None = None,
) -> Plan:
    """The source, encoder and row counter of ``selection`` as ``fmt``; ``binary``: the
    driver's pool and the database role, when the ADBC driver may be used;
    ``render_in_server``: NDJSON and CSV from binary ``COPY`` (``render.py``) when the
    renderer is built, compressed as ``encoding`` says in the same worker thread."""
    if fmt.rendered is not None and render_in_server and render.library() is not None:
        renderer = render.Renderer(dataset, selection, fmt.rendered)
        step, finish = compression.compressor(encoding) if encoding else (None, None)
        return Plan(
            lambda conn: render.rendered(conn, renderer, step),
            render.Body(finish),
            RowCounter.RECORDS,
            compressed=encoding is not None,
        )
    columns = [(f, dataset.by_name[f].type, dataset.by_name[f].nullable) for f in selection.fields]
    encoder = fmt.encoder(columns, row_group_rows)
    if fmt.from_copy_text and binary is not None and adbc.use_for(dataset, selection):
        binary_query = sql.as_binary(dataset, selection)
        assert isinstance(encoder, encoders.ArrowEncoder | encoders.ParquetEncoder)
        pool, identity = binary
        return Plan(
            lambda conn: adbc.batches(conn, pool, binary_query, identity),
            encoders.ArrowBatches(encoder),
            RowCounter.RECORDS,
        )
    if fmt.from_copy_text and all(pgtypes.arrow_from_copy_text(t) for _, t, _ in columns):
        query = sql.as_copy_text(dataset, selection)
        assert isinstance(encoder, encoders.ArrowEncoder | encoders.ParquetEncoder)
        native = encoders.ArrowFromCSV(columns, encoder)
        return Plan(
            lambda conn: cursor.copy_chunks(conn, query, **sql.COPY_TEXT),
            native,
            RowCounter.CSV,
        )
    query = fmt.query(dataset, selection)
    if fmt.source == "copy":
        return Plan(
            lambda conn: cursor.copy_chunks(conn, query, **fmt.copy_options),
            encoder,
            fmt.counter,
        )
    return Plan(lambda conn: cursor.batches(conn, query, batch_size), encoder, fmt.counter)


def row_counter(counter: RowCounter, add: Callable[[int], None]) -> Callable[[Any], None]:
    """A callback for each batch that gives ``add`` the rows it ended, as ``counter`` says."""
    if counter in (RowCounter.CSV, RowCounter.CSV_WITH_HEADER):
        state = {"in_quotes": False, "header": counter is RowCounter.CSV_WITH_HEADER}

        def count_csv(chunk: Any) -> None:
            ended, state["in_quotes"] = records.csv_records(chunk, state["in_quotes"])
            add(ended - (1 if state["header"] else 0))
            state["header"] = False

        return count_csv
    if counter is RowCounter.LINES:
        return lambda chunk: add(chunk.count(b"\n"))
    return lambda batch: add(len(batch))


def count_body(counter: RowCounter, body: bytes | bytearray, records_seen: int) -> int:
    """The rows of a whole buffered body: CSV records less the header, lines, or the
    records the builder counted (a JSON array's)."""
    if counter is RowCounter.CSV_WITH_HEADER:
        return max(records.csv_records(body, False)[0] - 1, 0)
    if counter is RowCounter.LINES:
        return body.count(b"\n")
    return records_seen
