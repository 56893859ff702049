"""Pure functions from a batch of rows to the bytes sent on the wire.

PostgreSQL renders each row as JSON text (``row_to_json``; see ``queries.py``), so the
encoders only join: no per-row dicts, no per-value Python conversions. A batch is either
the list of JSON texts one cursor fetch returned, or raw ``COPY`` output.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.formats import NDJSON

__all__ = ["NDJSON", "json_array_from_lines", "ndjson"]


def ndjson(batch: Sequence[str]) -> bytes:
    """One JSON object per line, each line ending in ``\\n`` (so batches concatenate)."""
    if not batch:
        return b""
    return ("\n".join(batch) + "\n").encode()


def json_array_from_lines(chunks: list[bytes]) -> bytearray:
    """One JSON array from newline-terminated JSON texts (``COPY`` output), in one buffer.

    JSON text never contains a raw newline (it is escaped as ``\\n``), so every ``\\n`` is
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
