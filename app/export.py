"""One request's export, from a validated selection to a response: its counts taken in
the export's snapshot, its headers, and its body streamed (the plan, ``plan.py``) or loaded
whole within the memory budget (the standard route)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from urllib.parse import quote

import asyncpg
import databases
from starlette.responses import Response

from app import adbc, compression, cursor, encoders, plan, sql, transaction
from app.capacity import MemoryBudget, Reservation, StreamLimiter
from app.datasets import Dataset
from app.delivery import DeliveryLimits
from app.errors import HTTPVersionNotSupported, TooLarge
from app.formats import Format
from app.observability import ExportStats
from app.replica import LagMonitor
from app.responses import PrebuiltJSONResponse, StreamingResponse
from app.settings import Settings
from app.sql import Selection

#: On every data response: a private export is not for shared caches (nor any cache:
#: it is a snapshot), and its type is not to be guessed (a CSV cell is not HTML).
NOT_STORED = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

logger = logging.getLogger(__name__)


def attachment(filename: str) -> str:
    """``Content-Disposition`` for a download named ``filename`` (RFC 6266): a quoted ASCII
    name, and the exact one in ``filename*`` when it is not ASCII."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename)}"
    return value


def count_mode(prefer: str | None) -> str:
    """``exact`` or ``estimated`` from a ``Prefer`` header (RFC 7240, PostgREST's values)."""
    for preference in (prefer or "").split(","):
        key, _, value = preference.strip().partition("=")
        if key.strip().lower() == "count" and value.strip().lower() == "exact":
            return "exact"
    return "estimated"


async def count_headers(
    conn: asyncpg.Connection, dataset: Dataset, selection: Selection, mode: str
) -> dict[str, str]:
    """Taken inside the export's snapshot, before the first row is read."""
    if mode == "exact":
        total = await cursor.exact_count(conn, sql.count(dataset, selection))  # ≤ limit
        return {"X-Total-Count": str(total), "Preference-Applied": "count=exact"}
    estimate = await cursor.estimated_count(conn, sql.as_columns(dataset, selection))
    return {"X-Total-Count-Estimate": str(estimate)}


async def _then(
    body: AsyncGenerator[bytes, None], done: Callable[[], None]
) -> AsyncGenerator[bytes, None]:
    """``body``, then ``done()`` once it has ended (not when it was cut short)."""
    try:
        async for chunk in body:
            yield chunk
    finally:
        await body.aclose()
    done()


class Export:
    """One request's export: what to read, how to render it, and what it may use."""

    def __init__(
        self,
        db: databases.Database,
        settings: Settings,
        lag: LagMonitor,
        dataset: Dataset,
        selection: Selection,
        fmt: Format,
        prefer: str | None,
        *,
        download: bool = False,
        identity: transaction.DbIdentity | None = None,
        drivers: adbc.DriverPool | None = None,
        imported: transaction.Imported | None = None,
        on_complete: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.identity = identity
        #: A part of a partitioned export: the snapshot it reads in, and what to tell when
        #: it has been read to its end.
        self.imported = imported
        self.on_complete = on_complete
        #: The ADBC driver's connections, where Arrow and Parquet come from it (``adbc.py``).
        self.drivers = drivers
        self.download = download
        self.settings = settings
        self.lag = lag
        self.dataset = dataset
        self.selection = selection
        self.fmt = fmt
        self.mode = count_mode(prefer)
        self.stats = ExportStats(format=fmt.media_type, dataset=dataset.name)

    async def _count(self, conn: asyncpg.Connection) -> dict[str, str]:
        return await count_headers(conn, self.dataset, self.selection, self.mode)

    def _headers(self, headers: dict[str, str], vary: str) -> dict[str, str]:
        """What every data response says besides its counts: not to be stored or sniffed,
        what it varies with, that it has no byte ranges (a ``Range`` request gets the whole
        body, 200), and, for a file format or ``download=1``, the file's name."""
        headers.update(NOT_STORED)
        headers["Vary"] = vary
        headers["Accept-Ranges"] = "none"
        if self.fmt.attachment or self.download:
            headers["Content-Disposition"] = attachment(f"{self.dataset.name}.{self.fmt.name}")
        return headers

    async def head(self, vary: str, *, streamed: bool = False) -> Response:
        """The headers a GET would get (RFC 9110 §9.3.2), counts included, without
        reading a row: no Content-Length (a HEAD must not claim 0), and for a stream the
        ``Transfer-Encoding: chunked`` its GET has. That one matters to readers: DuckDB
        1.4's http reader takes a HEAD with neither header for a file of a size it can
        learn, caches the size from a first full read, then asks for 16 MiB byte ranges,
        which a stream cannot serve (it restarted the export again and again); with it,
        the reader streams the body once."""
        await self.lag.admit(self.settings.read_max_lag_seconds)
        async with transaction.snapshot(
            self.db, identity=self.identity, imported=self.imported
        ) as conn:
            headers = await self._count(conn)
        self._headers(headers, vary)
        if streamed:
            headers["Transfer-Encoding"] = "chunked"
        response = Response(media_type=self.fmt.media_type, headers=headers)
        response.raw_headers = [h for h in response.raw_headers if h[0] != b"content-length"]
        return response

    async def streamed(
        self,
        http_version: str,
        limiter: StreamLimiter,
        subject: str,
        accept_encoding: str | None,
    ) -> StreamingResponse:
        if http_version == "1.0":
            # HTTP/1.0 has no chunked encoding: the body would end when the connection
            # closes, and a stream cut short would look exactly like a complete one.
            raise HTTPVersionNotSupported(
                "streams need HTTP/1.1 (a truncated HTTP/1.0 body looks complete); behind "
                "nginx set 'proxy_http_version 1.1'"
            )
        await self.lag.admit(self.settings.read_max_lag_seconds)
        self.stats.streamed = True
        settings = self.settings
        binary = (self.drivers, self.identity) if self.drivers is not None else None
        encoding = compression.negotiate(accept_encoding)
        planned = plan.plan(
            self.dataset,
            self.selection,
            self.fmt,
            settings.stream_batch_size,
            settings.parquet_row_group_rows,
            binary,
            render_in_server=settings.text_rendering == "server",
            encoding=encoding,
        )
        headers, body, cleanup = await cursor.open_stream(
            self.db,
            planned.source,
            planned.encoder,
            self._count,
            guard=limiter.slot(subject),
            idle_timeout=self.settings.stream_idle_timeout_seconds,
            on_batch=plan.row_counter(planned.counter, self.stats.add_rows),
            identity=self.identity,
            imported=self.imported,
        )
        if self.on_complete is not None:
            body = _then(body, self.on_complete)
        self._headers(headers, "Accept, Accept-Encoding, Prefer")
        if encoding:
            if not planned.compressed:
                body = compression.compress(body, encoding)
            headers["Content-Encoding"] = encoding
        return StreamingResponse(
            body,
            media_type=self.fmt.media_type,
            headers=headers,
            limits=DeliveryLimits.from_settings(self.settings, streamed=True),
            stats=self.stats,
            cleanup=cleanup,
        )

    async def _refuse_too_large(self, conn: asyncpg.Connection, maximum: int) -> int | None:
        """The exact row count when it had to be taken; raises when it exceeds ``maximum``.

        Decided in the export's snapshot before any row is loaded: a buffered response
        holds every row in memory at once, which is what the streaming route is for.
        """
        selection = self.selection
        if selection.limit is not None and selection.limit <= maximum:
            return None
        total = await cursor.exact_count(conn, sql.count(self.dataset, selection))  # ≤ limit
        if total > maximum:
            stream = f"/datasets/{self.dataset.name}/stream"
            raise TooLarge(
                f"this would load {total:,} rows, more than the {maximum:,} the standard route "
                f"buffers (MAX_STANDARD_ROWS); use {stream}, which streams any number of "
                "rows in constant memory, or narrow the request (limit=, filters)",
                rows=total,
                maximum=maximum,
                stream=stream,
            )
        return total

    async def buffered(self, budget: MemoryBudget) -> PrebuiltJSONResponse:
        """The whole result in one body, held within ``budget`` until it has been sent."""
        await self.lag.admit(self.settings.read_max_lag_seconds)
        maximum = self.settings.max_standard_rows
        dataset, selection = self.dataset, self.selection
        reservation: Reservation | None = None

        async def before(conn: asyncpg.Connection) -> dict[str, str]:
            nonlocal reservation
            total = await self._refuse_too_large(conn, maximum)
            if total is not None and self.mode == "exact":
                headers = {"X-Total-Count": str(total), "Preference-Applied": "count=exact"}
            else:
                headers = await self._count(conn)
            if total is None:
                given = headers.get("X-Total-Count") or headers.get("X-Total-Count-Estimate")
                total = int(given or maximum)
                total = min(total, selection.limit or maximum)
            row_bytes = budget.row_bytes.get(dataset.name, 16.0 * (len(selection.fields) + 2))
            reservation = budget.reserve(int(total * row_bytes))
            return headers

        def on_size(size: int) -> None:
            if reservation is not None:
                reservation.grow_to(size)

        buffered = self.fmt.buffered
        assert buffered is not None  # the standard route serves only such formats
        query = self.fmt.query(dataset, selection)
        builder = encoders.BufferedBody(json_array=buffered.json_array, on_size=on_size)
        try:
            headers = await cursor.copy_all(
                self.db,
                query,
                before,
                builder.write,
                self.identity,
                self.imported,
                **buffered.copy_options,
            )
            body = builder.finish()
            rows = plan.count_body(self.fmt.counter, body, builder.rows)
        except BaseException:
            if reservation is not None:
                reservation.release()
            raise
        assert reservation is not None
        reservation.settle(len(body))
        if rows:
            budget.row_bytes[dataset.name] = len(body) / rows
        self.stats.rows = rows
        self._headers(headers, "Accept, Prefer")
        return PrebuiltJSONResponse(
            body,
            media_type=self.fmt.media_type,
            headers=headers,
            limits=DeliveryLimits.from_settings(self.settings, streamed=False),
            release=reservation.release,
            stats=self.stats,
        )
