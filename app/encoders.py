"""Pure functions from a batch of rows to the bytes sent on the wire.

PostgreSQL renders each row as JSON text (see ``queries.py``), so the JSON encoders only
join: no per-row dicts, no per-value Python conversions. A batch is the list of records
one cursor fetch returned (for JSON formats: one JSON text per record), or raw ``COPY``
output for the buffered endpoint.

A streamed format is an ``Encoder``: ``start()`` once, ``batch()`` per fetch, ``end()``
once, each returning the bytes to send. Only a complete stream ends with ``end()``'s
bytes, so for the JSON array and Arrow a truncated download is never a valid document.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from app import pgtypes

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

    def batch(self, rows: Batch) -> bytes:
        if not rows:
            return b""
        pa = self._pa
        columns = list(zip(*rows, strict=True))  # transpose in C: one tuple per column
        arrays = []
        for values, field, via in zip(columns, self.schema, self._via, strict=True):
            if via is not None:
                arrays.append(pa.array(values, type=via).view(field.type))  # zero-copy
            else:
                arrays.append(pa.array(values, type=field.type))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        return bytes(batch.serialize().to_pybytes())

    def end(self) -> bytes:
        return ARROW_EOS


def json_array_from_lines(chunks: list[bytes]) -> bytearray:
    """One JSON array from newline-terminated JSON texts (``COPY`` output), in one buffer.

    JSON text never contains a raw newline (it is escaped as ``\\\\n``), so every ``\\\\n`` is
    a row separator and becomes a comma. The buffer is allocated once at its final size
    (growing it would copy it, briefly doubling it) and ``chunks`` is consumed as it is
    copied, so the peak stays near one copy of the result plus the input.
    """
    size = sum(map(len, chunks))
    if not size:
        chunks.clear()
        return bytearray(b"[]")
    out = bytearray(size + 1)
    out[0] = ord("[")
    position = 1
    chunks.reverse()
    while chunks:
        chunk = chunks.pop().replace(b"\n", b",")
        out[position : position + len(chunk)] = chunk
        position += len(chunk)
    out[-1] = ord("]")  # over the last row's separator
    return out


def concatenate(chunks: list[bytes]) -> bytearray:
    """``COPY`` output joined into one buffer, consuming ``chunks`` (buffered CSV)."""
    out = bytearray(sum(map(len, chunks)))
    position = 0
    chunks.reverse()
    while chunks:
        chunk = chunks.pop()
        out[position : position + len(chunk)] = chunk
        position += len(chunk)
    return out
