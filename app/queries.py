"""The SQL the service runs, built from validated inputs only.

Rows are turned into JSON by PostgreSQL (``row_to_json``), not by Python: it is about
twice as fast as building dicts and encoding them, and both endpoints then emit the very
same bytes per row. With ``TimeZone = 'UTC'`` (set per transaction, see ``cursor.py``)
timestamps come out as RFC 3339, e.g. ``2024-01-01T00:00:01+00:00``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The columns of ``messages``, in table order: the JSON object's keys, in this order.
COLUMNS = ("id", "sender_id", "recipient_id", "channel", "body", "created_at", "is_read")


@dataclass(frozen=True)
class Query:
    sql: str
    args: tuple[Any, ...] = ()


def messages_json(*, limit: int | None = None) -> Query:
    """Messages in ``id`` order (the primary key: an index scan, no sort, first row at once)."""
    columns = ", ".join(COLUMNS)
    return Query(
        f"SELECT row_to_json(m)::text FROM "
        f"(SELECT {columns} FROM messages ORDER BY id LIMIT $1) AS m",
        (limit,),
    )


def message_ids_text(*, limit: int | None = None) -> Query:
    """The original comparison's ``object_id:{id} \\n`` lines, for ``COPY … TO STDOUT``.

    COPY's text format ends each row with ``\\n`` and escapes nothing here (digits only).
    """
    return Query(
        "SELECT 'object_id:' || id || ' ' FROM messages ORDER BY id LIMIT $1",
        (limit,),
    )
