"""Pure functions from a batch of rows to the bytes sent on the wire.

PostgreSQL renders each row as JSON text (``row_to_json``; see ``queries.py``), so the
encoders only join: no per-row dicts, no per-value Python conversions. A batch is the
list of JSON texts that one cursor fetch returned.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.formats import NDJSON

__all__ = ["NDJSON", "json_array", "ndjson"]


def ndjson(batch: Sequence[str]) -> bytes:
    """One JSON object per line, each line ending in ``\\n`` (so batches concatenate)."""
    if not batch:
        return b""
    return ("\n".join(batch) + "\n").encode()


def json_array(rows: Sequence[str]) -> bytes:
    """The whole result as one JSON array, for the buffered (standard) response."""
    return ("[" + ",".join(rows) + "]").encode()
