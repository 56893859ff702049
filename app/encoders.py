"""Encoders: from the batches of an export's source to the bytes sent on the wire.

PostgreSQL renders each row as JSON text (``pgtypes.json_sql``), so the JSON encoders only
join: no per-row dicts, no per-value Python conversions. A batch is the list of records
one cursor fetch returned (for JSON formats: one JSON text per record), raw ``COPY``
output (CSV passed through, or the text ``ArrowFromCSV`` parses), or Arrow batches from
the ADBC driver (``ArrowBatches``); ``BufferedBody`` builds the standard route's body.

A streamed format is an ``Encoder``: ``start()`` once, ``batch()`` per fetch, ``end()``
once, each returning the bytes to send. Only a complete stream ends with ``end()``'s
bytes, so for the JSON array, Arrow and Parquet a truncated download is never a valid
document.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from app import pgtypes
from rowstream.records import last_records

Batch = Sequence[Sequence[Any]]


class Encoder(Protocol):
    def start(self) -> bytes: ...

    def batch(self, rows: Any) -> bytes: ...

    def end(self) -> bytes: ...


class Passthrough:
    """For ``COPY`` output (CSV, text): PostgreSQL's bytes as they are."""

    def start(self) -> bytes:
        return b""

    def batch(self, rows: bytes | bytearray) -> bytes:
        # asyncpg hands COPY data over as bytearray; ASGI wants bytes.
        return bytes(rows)

    def end(self) -> bytes:
        return b""


def ndjson(rows: Batch) -> bytes:
    """One JSON object per line, each line ending in ``\\n`` (so batches concatenate)."""
    if not rows:
        return b""
    return ("\n".join([r[0] for r in rows]) + "\n").encode()


class NDJSONEncoder:
    def start(self) -> bytes:
        return b""

    def batch(self, rows: Batch) -> bytes:
        return ndjson(rows)

    def end(self) -> bytes:
        return b""


class JSONArrayEncoder:
    """``[`` + the rows, comma-separated across batches + ``]``: one valid JSON array."""

    def __init__(self) -> None:
        self._first = True

    def start(self) -> bytes:
        return b"["

    def batch(self, rows: Batch) -> bytes:
        if not rows:
            return b""
        text = ",".join([r[0] for r in rows])
        if self._first:
            self._first = False
            return text.encode()
        return ("," + text).encode()

    def end(self) -> bytes:
        return b"]"


#: End-of-stream marker of the Arrow IPC streaming format (continuation token, length 0).
ARROW_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"


@functools.cache
def _zero(kind: Any) -> Any:
    """The all-zero value of a fixed-width Arrow type (``False`` for a boolean)."""
    import pyarrow as pa

    if pa.types.is_boolean(kind):
        return pa.scalar(False)
    return pa.Array.from_buffers(kind, 1, [None, pa.py_buffer(bytes(kind.bit_width // 8))])[0]


def zero_under_nulls(column: Any) -> Any:
    """``column`` with zeros in the value slots of its NULLs.

    Arrow leaves what lies under a NULL undefined, and the builders do not all clear it:
    the same export sent different bytes under a NULL ``real`` from one request to the
    next (what was in that memory before, which must never reach a client). This clears
    top-level fixed-width columns (numbers, booleans, dates, times, timestamps, decimals);
    other columns are returned as they are (the value slots of a list's NULL elements are
    not cleared here).
    """
    import pyarrow as pa

    kind = column.type
    if column.null_count == 0 or not (pa.types.is_primitive(kind) or pa.types.is_decimal(kind)):
        return column
    if column.offset:
        column = pa.concat_arrays([column])  # from offset 0, as the validity bits below
    values = column.fill_null(_zero(kind))
    valid = column.is_valid()
    return pa.Array.from_buffers(
        kind, len(column), [valid.buffers()[1], values.buffers()[1]], null_count=column.null_count
    )


class ArrowEncoder:
    """Arrow IPC stream: the schema, one record batch per cursor batch, end-of-stream.

    Rows are ``sql.as_arrow`` records, one typed column per field (``pgtypes.arrow_type``);
    dates, times and timestamps arrive as integers since the epoch, viewed as their type
    (building a Python ``datetime`` per value only to turn it back into an integer cost
    more than all the rest).
    """

    def __init__(self, columns: Sequence[tuple[str, pgtypes.PgType, bool]]) -> None:
        import pyarrow as pa

        self._pa = pa
        self.schema = pa.schema(
            [pa.field(name, pgtypes.arrow_type(t), nullable=n) for name, t, n in columns]
        )
        self._via = [pgtypes.arrow_via_integers(t) for _, t, _ in columns]

    def start(self) -> bytes:
        return bytes(self.schema.serialize().to_pybytes())

    def record_batch(self, rows: Batch) -> Any:
        """The rows as one ``pyarrow.RecordBatch`` of the schema."""
        pa = self._pa
        columns = list(zip(*rows, strict=True))  # transpose in C: one tuple per column
        arrays = []
        for values, field, via in zip(columns, self.schema, self._via, strict=True):
            if via is not None:
                arrays.append(pa.array(values, type=via).view(field.type))  # zero-copy
            else:
                arrays.append(pa.array(values, type=field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def batch(self, rows: Batch) -> bytes:
        if not rows:
            return b""
        return self.arrow(self.record_batch(rows))

    def arrow(self, batch: Any) -> bytes:
        """One record batch, already built, as its IPC message (zeros under its NULLs)."""
        if any(c.null_count for c in batch.columns):
            columns = [zero_under_nulls(c) for c in batch.columns]
            batch = self._pa.RecordBatch.from_arrays(columns, schema=batch.schema)
        return bytes(batch.serialize().to_pybytes())

    def end(self) -> bytes:
        return ARROW_EOS


class ArrowFromCSV:
    """``COPY … (FORMAT csv)`` chunks parsed by Arrow's C++ CSV reader into record batches
    of the columns' Arrow types, handed to an Arrow or Parquet encoder.

    Measured on 500,000 ``messages`` rows: parsing PostgreSQL's 54 MB of text takes Arrow
    0.19 s, where building the same batches from cursor records took 0.6 s more than the
    COPY itself. Chunks are gathered to ``piece_bytes`` and cut after their last complete
    record (a quoted field may hold newlines), so memory stays at about one piece.
    """

    def __init__(
        self,
        columns: Sequence[tuple[str, pgtypes.PgType, bool]],
        target: ArrowEncoder | ParquetEncoder,
        piece_bytes: int = 1 << 20,
    ) -> None:
        import pyarrow.csv as pacsv

        self._csv = pacsv
        self._batches = ArrowBatches(target)
        self.piece_bytes = piece_bytes
        self._pending = bytearray()
        names = [name for name, _, _ in columns]
        self._read = pacsv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 22)
        self._parse = pacsv.ParseOptions(newlines_in_values=True)
        self._convert = pacsv.ConvertOptions(
            column_types={name: pgtypes.arrow_type(t) for name, t, _ in columns},
            true_values=["t"],
            false_values=["f"],
            null_values=[""],  # COPY's NULL: an unquoted empty field; '' is quoted
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )

    def start(self) -> bytes:
        return self._batches.start()

    def batch(self, chunk: bytes) -> bytes:
        self._pending += chunk
        if len(self._pending) < self.piece_bytes:
            return b""
        _, end, _ = last_records(bytes(self._pending), csv=True)
        return self._emit(end)

    def _emit(self, end: int) -> bytes:
        if not end:
            return b""
        table = self._csv.read_csv(
            io.BytesIO(self._pending[:end]),
            read_options=self._read,
            parse_options=self._parse,
            convert_options=self._convert,
        )
        del self._pending[:end]
        return b"".join(self._batches.batch(b) for b in table.to_batches())

    def end(self) -> bytes:
        return self._emit(len(self._pending)) + self._batches.end()


class ArrowBatches:
    """Record batches already in Arrow (parsed CSV, the ADBC driver's), handed to an Arrow
    or Parquet encoder with the columns' names and nullability (theirs may differ: CSV has
    no nullability, the driver's schema carries metadata of its own), each column in our
    type: an extension type (the driver's ``arrow.json``, a numeric's ``arrow.opaque``)
    gives its storage, and a column of another type is cast (a numeric's text to
    decimal128, checked: a value that does not fit fails the export)."""

    def __init__(self, target: ArrowEncoder | ParquetEncoder) -> None:
        import pyarrow as pa

        self._pa = pa
        self.target = target

    def start(self) -> bytes:
        return self.target.start()

    def batch(self, batch: Any) -> bytes:
        schema = self.target.schema
        columns = [self._conform(c, f.type) for c, f in zip(batch.columns, schema, strict=True)]
        return self.target.arrow(self._pa.RecordBatch.from_arrays(columns, schema=schema))

    def _conform(self, column: Any, target: Any) -> Any:
        if isinstance(column.type, self._pa.BaseExtensionType):
            column = column.storage
        return column if column.type.equals(target) else column.cast(target)

    def end(self) -> bytes:
        return self.target.end()


class _Collector:
    """A write-only file for ``pyarrow.parquet.ParquetWriter``: it keeps what is written
    until ``take`` hands it on, so the file goes out as it is written."""

    def __init__(self) -> None:
        self._data = bytearray()
        self.closed = False
        self._position = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._data += view
        self._position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self._data = bytes(self._data), bytearray()
        return data


class ParquetEncoder:
    """A Parquet file written as the rows arrive: a row group of ``row_group_rows`` rows
    at a time (zstd-compressed columns, the Arrow format's typed schema), the footer last.

    A row group is held in memory until it is complete (that is what bounds a stream's
    memory here: ``PARQUET_ROW_GROUP_ROWS``). A stream that fails ends without the
    footer, and no Parquet reader opens a file without one: a truncated download can
    never be read as complete.
    """

    def __init__(
        self, columns: Sequence[tuple[str, pgtypes.PgType, bool]], row_group_rows: int
    ) -> None:
        import pyarrow as pa

        self._arrow = ArrowEncoder(columns)
        self._pa = pa
        self.row_group_rows = row_group_rows
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._sink = _Collector()
        self._writer: Any = None

    @property
    def schema(self) -> Any:
        return self._arrow.schema

    def start(self) -> bytes:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(self._sink, self._arrow.schema, compression="zstd")
        return self._sink.take()

    def batch(self, rows: Batch) -> bytes:
        return self.arrow(self._arrow.record_batch(rows)) if rows else b""

    def arrow(self, batch: Any) -> bytes:
        """One record batch, already built: each complete row group of ``row_group_rows``
        is written, the rest kept for the next (a batch may hold several groups' rows)."""
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        if self._pending_rows < self.row_group_rows:
            return b""
        self._write(self._pending_rows - self._pending_rows % self.row_group_rows)
        return self._sink.take()

    def end(self) -> bytes:
        if self._pending_rows:
            self._write(self._pending_rows)
        self._writer.close()
        return self._sink.take()

    def _write(self, rows: int) -> None:
        """The first ``rows`` pending rows as row groups of ``row_group_rows``; the rest
        stays pending."""
        table = self._pa.Table.from_batches(self._pending, schema=self.schema)
        self._writer.write_table(table.slice(0, rows), row_group_size=self.row_group_rows)
        rest = table.slice(rows)
        self._pending, self._pending_rows = rest.to_batches(), rest.num_rows


class BufferedBody:
    """The standard route's body, built in one buffer as ``COPY`` delivers it.

    ``json_array``: the input is newline-terminated JSON texts, and the body one JSON array
    of them. JSON text never contains a raw newline (it is escaped as ``\\n``), so every
    ``\\n`` is a row separator and becomes a comma, chunk by chunk; the last one becomes
    the closing bracket. Otherwise (CSV) the input is kept as it is. Appending to one
    ``bytearray`` (which grows in place) keeps the peak near one copy of the result,
    where collecting the chunks and joining them held two. ``on_size`` is told the size
    after each chunk (to reserve memory for it) and may raise to stop the load.
    """

    def __init__(self, json_array: bool, on_size: Callable[[int], None]) -> None:
        self.json_array = json_array
        self.on_size = on_size
        self.body = bytearray(b"[" if json_array else b"")
        self.rows = 0

    async def write(self, chunk: bytes) -> None:
        self.on_size(len(self.body) + len(chunk))
        if self.json_array:
            self.rows += chunk.count(b"\n")
            chunk = chunk.replace(b"\n", b",")
        self.body += chunk

    def finish(self) -> bytearray:
        """The complete body (``[]`` for no rows); the builder is spent."""
        body, self.body = self.body, bytearray()
        if self.json_array:
            if len(body) == 1:
                body += b"]"
            else:
                body[-1] = ord("]")  # over the last row's separator
        return body
