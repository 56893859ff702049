"""Finding record boundaries in NDJSON and CSV bytes, for counting rows as they go by
(the server's stream counters, the fetch client's progress) and for cutting a partial
download back to its last whole record (``fetch --resume``). Pure functions, shared by
the server and the client, with no dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable


def csv_records(chunk: bytes | bytearray, in_quotes: bool) -> tuple[int, bool]:
    """Count the CSV records that end in ``chunk`` (RFC 4180: a newline inside a quoted
    field does not end a record); ``in_quotes`` carries the state across chunks."""
    count = 0
    segments = chunk.split(b'"')
    for i, segment in enumerate(segments):
        if not in_quotes:
            count += segment.count(b"\n")
        if i < len(segments) - 1:
            in_quotes = not in_quotes  # each '"' toggles; an escaped '""' toggles twice
    return count, in_quotes


def last_records(data: bytes, csv: bool) -> tuple[int, int, int]:
    """(start, end) of the last complete record of ``data`` and how many records end in it.

    Records end with a newline; for CSV only with one outside quotes. (0, 0, 0) if none.
    """
    return last_records_in([data], csv)


def last_records_in(blocks: Iterable[bytes], csv: bool) -> tuple[int, int, int]:
    """``last_records`` of the concatenation of ``blocks``, read one block at a time (a
    file of any size, in constant memory)."""
    in_quotes = False
    position = 0
    count = 0
    ends = [0, 0]
    for block in blocks:
        segments = block.split(b'"') if csv else [block]
        for i, segment in enumerate(segments):
            if not in_quotes:
                newlines = segment.count(b"\n")
                if newlines:
                    count += newlines
                    last = segment.rfind(b"\n")
                    if newlines > 1:
                        ends = [position + segment.rfind(b"\n", 0, last) + 1, position + last + 1]
                    else:
                        ends = [ends[1], position + last + 1]
            position += len(segment) + (i < len(segments) - 1)
            if i < len(segments) - 1:
                in_quotes = not in_quotes
    return (ends[0], ends[1], count) if count else (0, 0, 0)


def first_record_end(data: bytes) -> int:
    """Where the first CSV record of ``data`` ends (after its newline; a newline inside a
    quoted field does not end it), or -1 when it does not end in ``data``."""
    in_quotes, position = False, 0
    segments = data.split(b'"')
    for i, segment in enumerate(segments):
        if not in_quotes and (newline := segment.find(b"\n")) >= 0:
            return position + newline + 1
        position += len(segment) + 1
        in_quotes = not in_quotes if i < len(segments) - 1 else in_quotes
    return -1
