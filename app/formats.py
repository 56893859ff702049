"""The output formats: each is one entry of the registry (``FORMATS``) and one encoder.

Everything that differs between formats is read from its entry: what it is called (media
type, ``?format=`` names, URL suffixes, download name), which routes serve it, where its
rows come from (a server-side cursor, or PostgreSQL's own ``COPY``), the SQL shape it reads
(``sql.as_json``…), the encoder that turns batches into bytes, how rows are counted on the
way (``RowCounter``), how the standard route buffers it, and its OpenAPI example. Routes,
the dataset list, the OpenAPI document, negotiation (``negotiation.py``) and the warm-up
read the registry when the app is built, so a format registered before then (``register``)
is served everywhere, with no other module touched (``tests/test_formats.py`` registers TSV).
Register in the process that builds the app: with ``WORKERS > 1`` each worker builds its
own, and a registration made only in ``serve``'s parent process does not reach them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app import encoders, sql
from rowstream.media import ARROW as ARROW
from rowstream.media import CSV as CSV
from rowstream.media import JSON as JSON
from rowstream.media import NDJSON as NDJSON
from rowstream.media import PARQUET as PARQUET


class RowCounter(enum.Enum):
    """How an export counts the rows it sends, batch by batch."""

    #: a batch is a sequence of records (the cursor, Arrow batches): its length
    RECORDS = "records"
    #: a batch is ``COPY`` output with one row a line
    LINES = "lines"
    #: a batch is CSV from ``COPY`` whose first record is a header
    CSV_WITH_HEADER = "csv with header"
    #: a batch is CSV from ``COPY`` without a header (the text Arrow parses)
    CSV = "csv"


#: The texts ``render.c`` renders from binary ``COPY``.
Rendering = Literal["ndjson", "csv"]


@dataclass(frozen=True)
class Buffered:
    """How the standard route loads a format whole: ``COPY`` of ``Format.query`` with these
    options, and either kept as it is or (``json_array``) its lines joined into one array."""

    copy_options: dict[str, Any]
    json_array: bool = False


#: An OpenAPI media-type object for a dataset, from an example row and the row's schema.
Example = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Format:
    media_type: str
    #: ``?format=`` shorthand, file extension and download name (``orders.csv``).
    name: str
    #: ``cursor``: batches of records; ``copy``: PostgreSQL's COPY output as it is.
    source: Literal["cursor", "copy"]
    #: The SQL shape of a row.
    query: Callable[[Any, sql.Selection], sql.Query]
    #: How batches become bytes: a factory taking the typed columns of the selection and
    #: the rows a file block may hold (a Parquet row group; the others ignore it).
    encoder: Callable[[Sequence[tuple[str, Any, bool]], int], encoders.Encoder]
    counter: RowCounter
    #: Other names clients use for it (in ``Accept`` or ``?format=``).
    aliases: tuple[str, ...] = ()
    #: URL suffixes of the stream route (``/datasets/orders.csv``): the names tools expect.
    suffixes: tuple[str, ...] = ()
    #: Served by every dataset's stream route (the demo's ``text`` is served by its own).
    streamed: bool = True
    #: Served by the standard route too, loaded whole this way.
    buffered: Buffered | None = None
    copy_options: dict[str, Any] = field(default_factory=dict)
    #: The OpenAPI ``schema`` of the body, when ``example`` gives none.
    body_schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    example: Example | None = None
    description: str = ""
    #: A file to save rather than a stream to read (``Content-Disposition: attachment``).
    attachment: bool = False
    #: Typed columns that may come from PostgreSQL's ``COPY`` text parsed by Arrow's CSV
    #: reader, or the ADBC driver's binary ``COPY``, instead of cursor records
    #: (``plan.plan`` decides per selection).
    from_copy_text: bool = False
    #: Rendered in the server from PostgreSQL's binary ``COPY`` by ``render.c`` in this
    #: mode, when it is built and ``TEXT_RENDERING`` is ``server`` (``plan.plan``).
    rendered: Rendering | None = None

    def openapi(self, row: dict[str, Any], row_schema: dict[str, Any]) -> dict[str, Any]:
        """This format's entry in a data route's ``200`` content."""
        if self.example is not None:
            return self.example(row, row_schema)
        return {"schema": self.body_schema}


def _csv_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _csv_example(row: dict[str, Any], row_schema: dict[str, Any]) -> dict[str, Any]:
    text = ",".join(row) + "\n" + ",".join(map(_csv_text, row.values())) + "\n"
    return {"schema": {"type": "string"}, "example": text}


def passthrough(columns: Sequence[tuple[str, Any, bool]], rows: int) -> encoders.Encoder:
    return encoders.Passthrough()


FORMATS: dict[str, Format] = {}
#: ``?format=`` shorthands and other names clients use for a type we serve.
ALIASES: dict[str, str] = {}
#: URL suffixes of the stream route and the media type each selects.
SUFFIXES: dict[str, str] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to the registry (before the app is built: routes are made from it).
    A name or suffix another format has, or one that names a route in ``GET /datasets``'
    links, is a ``ValueError``."""
    taken = {*ALIASES, *SUFFIXES, "standard", "stream", "also"}
    clash = sorted(taken & {fmt.name, *fmt.aliases, *fmt.suffixes})
    if clash or fmt.media_type in FORMATS:
        raise ValueError(f"format {fmt.media_type}: {', '.join(clash) or 'media type'} taken")
    FORMATS[fmt.media_type] = fmt
    ALIASES.update(dict.fromkeys((fmt.name, *fmt.aliases), fmt.media_type))
    SUFFIXES.update(dict.fromkeys(fmt.suffixes, fmt.media_type))
    return fmt


def streamed() -> tuple[str, ...]:
    """What every stream route answers with; the first is its default."""
    return tuple(m for m, f in FORMATS.items() if f.streamed)


def standard() -> tuple[str, ...]:
    """What every standard route answers with; the first is its default."""
    return tuple(m for m, f in FORMATS.items() if f.buffered is not None)


for _format in (
    Format(
        NDJSON,
        "ndjson",
        "cursor",
        sql.as_json,
        lambda columns, rows: encoders.NDJSONEncoder(),
        RowCounter.RECORDS,
        aliases=("jsonl", "application/jsonl", "application/jsonlines", "application/x-jsonlines"),
        suffixes=("ndjson", "jsonl"),
        example=lambda row, schema: {
            "schema": {"type": "string"},
            "example": json.dumps(row) + "\n",
        },
        description="one JSON object per line",
        rendered="ndjson",
    ),
    Format(
        JSON,
        "json",
        "cursor",
        sql.as_json,
        lambda columns, rows: encoders.JSONArrayEncoder(),
        RowCounter.RECORDS,
        suffixes=("json",),
        buffered=Buffered(sql.JSON_LINES_COPY, json_array=True),
        example=lambda row, schema: {
            "schema": {"type": "array", "items": schema},
            "example": [row],
        },
        description="one JSON array (a truncated one is never valid JSON)",
    ),
    Format(
        CSV,
        "csv",
        "copy",
        sql.as_csv,
        passthrough,
        RowCounter.CSV_WITH_HEADER,
        suffixes=("csv",),
        buffered=Buffered(sql.CSV_COPY),
        copy_options=sql.CSV_COPY,
        example=_csv_example,
        description="a header line, then RFC 4180 CSV (PostgreSQL's COPY)",
        rendered="csv",
    ),
    Format(
        ARROW,
        "arrow",
        "cursor",
        sql.as_arrow,
        lambda columns, rows: encoders.ArrowEncoder(columns),
        RowCounter.RECORDS,
        aliases=("arrows",),
        suffixes=("arrows",),
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
        "cursor",
        sql.as_arrow,
        encoders.ParquetEncoder,
        RowCounter.RECORDS,
        suffixes=("parquet",),
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
):
    register(_format)
