"""NDJSON and CSV rendered in the server from PostgreSQL's binary ``COPY`` (``render.c``).

PostgreSQL renders text on the single core of the export's backend: each value's JSON
text (``pgtypes.json_sql``) cost NDJSON three times what a plain ``COPY`` costs. Here
PostgreSQL sends the columns the renderer knows in their binary form (integers, booleans,
text, enum labels, uuid, date, time, timestamps, numeric), which costs it less than its
own CSV, and the renderer, compiled C called through ``ctypes`` (which releases the GIL),
writes the exact text in a worker thread while the event loop reads the next ``COPY``
data: the two cores work at once. Every other column (floats, json, jsonb, arrays, bytea,
intervals, types we do not know) is rendered by PostgreSQL in the same statement, as
today, and passed through (``RAW``): per column, never the whole export. Compression
runs in the same worker thread, on the rendered bytes.

The renderer is built by ``make`` (``app/_render.so``). Without it (no C compiler), or
with ``TEXT_RENDERING=database``, PostgreSQL renders everything, with the same bytes.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import asyncpg

from app import cursor, pgtypes, sql
from app.formats import Rendering
from app.limits import (
    RENDER_BATCH_BYTES,
    RENDER_BATCH_SECONDS,
    RENDER_FIRST_BYTES,
    RENDER_OUT_BYTES,
    RENDER_QUEUE_CHUNKS,
)
from app.pgtypes import Kind, PgType
from app.quoting import ident

if TYPE_CHECKING:
    from app.datasets import Dataset

logger = logging.getLogger(__name__)

LIBRARY = Path(__file__).with_name("_render.so")
#: ``rs_abi()`` of the ``render.c`` this module speaks to.
ABI = 2
_MODES = {"ndjson": 0, "csv": 1}
#: ``render.c``'s kinds; 0 (``RAW``): rendered by PostgreSQL, passed through or quoted.
RAW = 0
_INTEGERS = {"int2": 1, "int4": 2, "int8": 3}
_KINDS = {
    Kind.BOOLEAN: 4,
    Kind.TEXT: 5,
    Kind.ENUM: 5,
    Kind.UUID: 6,
    Kind.DATE: 7,
    Kind.TIME: 8,
    Kind.TIMESTAMP: 9,
    Kind.TIMESTAMPTZ: 10,
    Kind.NUMERIC: 11,
}
#: ``rs_render``'s statuses.
_MORE, _FULL, _END = 0, 1, 2
#: Binary COPY's signature, then a flags word and the header extension's length.
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = len(SIGNATURE) + 8
#: Renders run here, beside the event loop: one thread a core the server may use.
_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render")


class _Plan(ctypes.Structure):
    _fields_ = [
        ("mode", ctypes.c_int32),
        ("ncols", ctypes.c_int32),
        ("kinds", ctypes.POINTER(ctypes.c_int32)),
        ("prefixes", ctypes.POINTER(ctypes.c_char_p)),
        ("prefix_lengths", ctypes.POINTER(ctypes.c_int32)),
    ]


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled renderer, or None (said once in the log) when it is not there."""
    try:
        lib = ctypes.CDLL(str(LIBRARY))
    except OSError as exc:
        logger.warning("PostgreSQL renders NDJSON and CSV: no compiled renderer (%s)", exc)
        return None
    if lib.rs_abi() != ABI:
        logger.warning("PostgreSQL renders NDJSON and CSV: %s is stale (run make)", LIBRARY)
        return None
    int64_p = ctypes.POINTER(ctypes.c_int64)
    lib.rs_render.argtypes = [
        ctypes.POINTER(_Plan),
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_int64,
        int64_p,
        int64_p,
        int64_p,
        int64_p,
    ]
    lib.rs_render.restype = ctypes.c_int
    return lib


def kind(pgtype: PgType, mode: Rendering, csv_safe: bool = False) -> int:
    """``render.c``'s kind for a column of ``pgtype``, or ``RAW``."""
    if pgtype.kind is Kind.INTEGER:
        return _INTEGERS[pgtype.name]
    if csv_safe and mode == "csv" and pgtype.kind in (Kind.TEXT, Kind.ENUM):
        return RAW  # PostgreSQL adds the formula-escaping quote (``pgtypes.csv_safe_sql``)
    return _KINDS.get(pgtype.kind, RAW)


def _binary(column: str, pgtype: PgType) -> str:
    """The column in the binary form ``render.c`` reads: the built-in type the ADBC path
    casts to (``pgtypes.binary_base``: a domain's base type, text types as ``text``,
    ``bpchar`` keeping its padding), an enum's label as ``text``."""
    return f"{column}::{'text' if pgtype.kind is Kind.ENUM else pgtypes.binary_base(pgtype)}"


def _raw(column: str, pgtype: PgType, nullable: bool, mode: Rendering, csv_safe: bool) -> str:
    """PostgreSQL's rendering of the column, as the database path has it (``pgtypes``)."""
    if mode == "ndjson":
        return pgtypes.json_sql(column, pgtype, nullable)
    rendered = pgtypes.csv_sql(column, pgtype)
    if rendered == column:
        # COPY prints the value with its type's output function, which concat() calls; a
        # cast to text may differ from it (inet's keeps the mask), and concat(NULL) is ''
        rendered = f"CASE WHEN {column} IS NULL THEN NULL ELSE concat({column}) END"
    if csv_safe:
        rendered = pgtypes.csv_safe_sql(rendered, pgtype)
    return rendered


def _identifier(name: str) -> str:
    """``name`` as PostgreSQL keeps an identifier (the CSV header is the columns' aliases
    there): at most 63 bytes, cut on a character boundary."""
    return name.encode()[:63].decode(errors="ignore")


def csv_field(text: str, single: bool) -> str:
    """``text`` as PostgreSQL's ``COPY (FORMAT csv)`` writes it (``put_csv`` in C)."""
    if text == "" or (single and text == "\\.") or any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


@dataclass(frozen=True)
class Rendered:
    """Bytes ready to send, and the rows they end (``len``: counted as records)."""

    data: bytes
    rows: int

    def __len__(self) -> int:
        return self.rows

    def __bool__(self) -> bool:
        return True  # a batch with no row ended (a header, a row's start) is still one


class Renderer:
    """One export's rendering: its statement, the C plan, and the bytes carried over
    between ``COPY`` chunks (a row split across two)."""

    def __init__(self, dataset: Dataset, selection: sql.Selection, mode: Rendering) -> None:
        lib = library()
        assert lib is not None
        self._lib = lib
        fields = selection.fields
        columns = [dataset.by_name[f] for f in fields]
        codes = [kind(c.type, mode, selection.csv_safe) for c in columns]
        expressions = [
            _binary(ident(c.name), c.type)
            if code != RAW
            else _raw(ident(c.name), c.type, c.nullable, mode, selection.csv_safe)
            for c, code in zip(columns, codes, strict=True)
        ]
        self.query = sql.select(dataset, selection, ", ".join(expressions))
        prefixes = [sql.json_key(i, f).encode() for i, f in enumerate(fields)]
        if mode == "csv":
            safe = selection.csv_safe
            names = [_identifier(pgtypes.csv_safe_name(f)) if safe else f for f in fields]
            header = ",".join(csv_field(n, len(names) == 1) for n in names) + "\n"
            self._head = header.encode()
        else:
            self._head = b""
        n = len(fields)
        self._keep = (
            (ctypes.c_int32 * n)(*codes),
            (ctypes.c_char_p * n)(*prefixes),
            (ctypes.c_int32 * n)(*map(len, prefixes)),
        )
        self._plan = _Plan(_MODES[mode], n, *self._keep)
        self._carry = b""
        self._started = False
        self.ended = False
        self._out = ctypes.create_string_buffer(RENDER_OUT_BYTES)

    def render(self, chunk: bytes) -> tuple[bytes, int]:
        """The text of the whole rows in the carried bytes and ``chunk`` (called in a
        worker thread; one call at a time per export)."""
        data = self._carry + chunk if self._carry else bytes(chunk)
        pieces: list[bytes] = []
        if not self._started:
            header = _HEADER + _extension(data) if len(data) >= _HEADER else None
            if header is None or len(data) < header:
                self._carry = data
                return b"", 0
            data = data[header:]
            self._started = True
            pieces.append(self._head)
        rows, offset = 0, 0
        base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
        consumed, written, done, needed = (ctypes.c_int64() for _ in range(4))
        out = self._out
        while True:
            status = self._lib.rs_render(
                ctypes.byref(self._plan),
                base + offset,
                len(data) - offset,
                out,
                len(out),
                ctypes.byref(consumed),
                ctypes.byref(written),
                ctypes.byref(done),
                ctypes.byref(needed),
            )
            pieces.append(ctypes.string_at(out, written.value))
            rows += done.value
            offset += consumed.value
            if status == _FULL:
                # one row larger than the buffer gets one of its size, for that row only
                out = self._out if written.value else ctypes.create_string_buffer(needed.value)
            elif status == _END:
                self.ended = True
                break
            elif status == _MORE:
                break
            else:
                raise ValueError("malformed binary COPY data")
        self._carry = b"" if self.ended else data[offset:]
        return b"".join(pieces), rows


def _extension(data: bytes) -> int:
    """The length of binary COPY's header extension (after checking the signature)."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not binary COPY data")
    return int.from_bytes(data[_HEADER - 4 : _HEADER], "big")


class Body:
    """The encoder of a rendered export: the bytes as they come, and the compressor's
    end when the stream is complete."""

    def __init__(self, finish: Callable[[], bytes] | None = None) -> None:
        self._finish = finish

    def start(self) -> bytes:
        return b""

    def batch(self, rows: Rendered) -> bytes:
        return rows.data

    def end(self) -> bytes:
        return self._finish() if self._finish is not None else b""


async def rendered(
    conn: asyncpg.Connection,
    renderer: Renderer,
    compress: Callable[[bytes], bytes] | None = None,
) -> AsyncGenerator[Rendered, None]:
    """The export's rows as text, chunk by chunk: each ``COPY`` chunk rendered (and
    compressed) in a worker thread while the next is read."""
    loop = asyncio.get_running_loop()

    def step(chunk: bytes) -> Rendered:
        text, rows = renderer.render(chunk)
        if compress is not None and text:
            text = compress(text)
        return Rendered(text, rows)

    chunks = cursor.copy_chunks(
        conn,
        renderer.query,
        queue_size=RENDER_QUEUE_CHUNKS,
        coalesce_bytes=RENDER_BATCH_BYTES,
        coalesce_seconds=RENDER_BATCH_SECONDS,
        format="binary",
    )
    first = True
    try:
        async for chunk in chunks:
            # the first rows go out before the rest of the first chunk is rendered: the
            # response starts with them
            pieces = [chunk[:RENDER_FIRST_BYTES], chunk[RENDER_FIRST_BYTES:]] if first else [chunk]
            first = False
            for piece in filter(None, pieces):
                out = await loop.run_in_executor(_EXECUTOR, step, piece)
                if out.data:
                    yield out
        if not renderer.ended:
            raise ValueError("binary COPY data ended without its trailer")
    finally:
        # at once, not when collected, and shielded (the task is often being cancelled): it
        # cancels the COPY, which must be over before the transaction is rolled back
        with anyio.CancelScope(shield=True):
            await chunks.aclose()
