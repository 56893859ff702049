"""Output formats, each declared once (``FORMATS``), and content negotiation.

A format says what it is called (media type, ``?format=`` names, URL suffix), where its
rows come from (a server-side cursor, or PostgreSQL's own ``COPY``), the SQL shape it
reads (``sql.as_json``…), the encoder that turns batches into bytes and how rows are
counted on the way. A new format is one entry here and one encoder.

Negotiation: a small hand-written ``Accept`` parser (RFC 9110 §12.5.1: media ranges with
``q`` weights; ties keep the client's order). ``?format=`` and a URL suffix override the
header, so a browser or a tool that picks the format from the name gets one too.
Anything we cannot serve is a 406 listing what we can.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app import encoders, sql
from app.errors import NotAcceptable
from rowstream.media import ARROW as ARROW
from rowstream.media import CSV as CSV
from rowstream.media import JSON as JSON
from rowstream.media import NDJSON as NDJSON
from rowstream.media import PARQUET as PARQUET
from rowstream.media import TEXT as TEXT


@dataclass(frozen=True)
class Format:
    media_type: str
    #: ``?format=`` shorthand, also the URL suffix (``/datasets/x.csv``) and file extension.
    name: str
    #: Other names clients use for it (in ``Accept`` or ``?format=``).
    aliases: tuple[str, ...]
    #: ``cursor``: batches of records; ``copy``: PostgreSQL's COPY output as it is.
    source: Literal["cursor", "copy"]
    #: The SQL shape of a row.
    query: Callable[[Any, sql.Selection], sql.Query]
    #: How batches become bytes: a factory taking the typed columns of the selection and
    #: the rows a file block may hold (a Parquet row group; the others ignore it).
    encoder: Callable[[Sequence[tuple[str, Any, bool]], int], encoders.Encoder]
    #: How rows are counted as batches go by: records, lines, or CSV records.
    counter: Literal["records", "lines", "csv"]
    copy_options: dict[str, Any] = field(default_factory=dict)
    #: The OpenAPI ``schema`` of the body (JSON formats get the dataset's row schema).
    body_schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    description: str = ""
    #: A file to save rather than a stream to read (``Content-Disposition: attachment``).
    attachment: bool = False
    #: Typed columns that may come from PostgreSQL's ``COPY`` text parsed by Arrow's CSV
    #: reader instead of cursor records (``export.plan`` decides per selection).
    from_copy_text: bool = False


FORMATS: dict[str, Format] = {
    f.media_type: f
    for f in (
        Format(
            NDJSON,
            "ndjson",
            ("jsonl", "application/jsonl", "application/jsonlines", "application/x-jsonlines"),
            "cursor",
            sql.as_json,
            lambda columns, rows: encoders.NDJSONEncoder(),
            "records",
            description="one JSON object per line",
        ),
        Format(
            JSON,
            "json",
            (),
            "cursor",
            sql.as_json,
            lambda columns, rows: encoders.JSONArrayEncoder(),
            "records",
            description="one JSON array (a truncated one is never valid JSON)",
        ),
        Format(
            CSV,
            "csv",
            (),
            "copy",
            sql.as_csv,
            lambda columns, rows: encoders.Passthrough(),
            "csv",
            copy_options=sql.CSV_COPY,
            description="a header line, then RFC 4180 CSV (PostgreSQL's COPY)",
        ),
        Format(
            TEXT,
            "text",
            (),
            "copy",
            sql.as_key_lines,
            lambda columns, rows: encoders.Passthrough(),
            "lines",
            description="the original comparison's `object_id:{key} ` lines",
        ),
        Format(
            ARROW,
            "arrow",
            ("arrows",),
            "cursor",
            sql.as_arrow,
            lambda columns, rows: encoders.ArrowEncoder(columns),
            "records",
            body_schema={
                "type": "string",
                "format": "binary",
                "description": "Arrow IPC stream: schema, one record batch per cursor batch, "
                "end-of-stream marker (read with `pyarrow.ipc.open_stream`).",
            },
            description="Arrow IPC stream, typed columns",
            from_copy_text=True,
        ),
        Format(
            PARQUET,
            "parquet",
            (),
            "cursor",
            sql.as_arrow,
            encoders.ParquetEncoder,
            "records",
            body_schema={
                "type": "string",
                "format": "binary",
                "description": "A Parquet file (zstd), the Arrow format's schema, written a "
                "row group at a time; a failed stream has no footer (read with "
                "`pyarrow.parquet`, pandas, polars, DuckDB).",
            },
            description="a Parquet file, typed columns, zstd",
            attachment=True,
            from_copy_text=True,
        ),
    )
}

#: URL suffixes of the stream route (``/datasets/orders.csv``): the names tools expect.
SUFFIXES = {
    "ndjson": NDJSON,
    "jsonl": NDJSON,
    "json": JSON,
    "csv": CSV,
    "arrows": ARROW,
    "parquet": PARQUET,
}

#: ``?format=`` shorthands, and other names clients use for a type we serve.
ALIASES = {name: f.media_type for f in FORMATS.values() for name in (f.name, *f.aliases)}


def weighted(header: str) -> list[tuple[str, float]]:
    """``a;q=0.5, b`` → ``[("a", 0.5), ("b", 1.0)]``: the items of an ``Accept``-style
    header, lower-cased, in the client's order, with their ``q`` weights (default 1)."""
    out: list[tuple[str, float]] = []
    for part in header.split(","):
        item, *params = (p.strip() for p in part.split(";"))
        if not item:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        out.append((item.lower(), q))
    return out


def _ranges(accept: str) -> list[tuple[str, float]]:
    return [(ALIASES.get(media, media), q) for media, q in weighted(accept)]


def _matches(media_range: str, media: str) -> bool:
    if media_range in ("*/*", media):
        return True
    kind, _, sub = media_range.partition("/")
    return sub == "*" and media.startswith(kind + "/")


def names(supported: Sequence[str]) -> list[str]:
    """Every ``?format=`` value that selects one of ``supported``."""
    return sorted({*supported, *(a for a, m in ALIASES.items() if m in supported)})


def negotiate(accept: str | None, format: str | None, supported: Sequence[str]) -> str:
    """The media type to answer with; ``supported[0]`` is the default."""
    if format:
        wanted = ALIASES.get(format.lower(), format.lower())
        if wanted in supported:
            return wanted
        raise NotAcceptable(
            f"format {format!r} is not available here; use one of: {', '.join(supported)}",
            supported=list(supported),
        )
    if not accept or not accept.strip():
        return supported[0]
    ranges = sorted(((q, -i, r) for i, (r, q) in enumerate(_ranges(accept)) if q > 0), reverse=True)
    for _, _, media_range in ranges:
        # the most specific match for this range: our default first when it is a wildcard
        for media in supported:
            if _matches(media_range, media):
                return media
    raise NotAcceptable(
        f"none of the requested media types is available; use one of: {', '.join(supported)}",
        supported=list(supported),
    )
