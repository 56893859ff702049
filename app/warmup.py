"""The first export of a fresh process, paid at start instead of by a client.

A process's first export otherwise pays for what only the first one needs: importing
pyarrow, asyncpg's first statements on the pooled connection, first use of each code
path (measured: 45 ms to the first NDJSON byte, 200 ms to the first Arrow byte, against
5 ms warm).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import databases

from app import adbc, cursor, export, formats, plan
from app.datasets import Dataset
from app.limits import WARM_UP_SECONDS
from app.settings import Settings
from app.sql import Selection

logger = logging.getLogger(__name__)


async def warm_up(
    db: databases.Database,
    datasets: dict[str, Dataset],
    settings: Settings,
    drivers: adbc.DriverPool | None = None,
) -> None:
    """Run the first row of one table through every streamed format, at start, each the
    way a request would (Arrow and Parquet through ``drivers``, the ADBC driver's pool,
    when there is one; not at all with ``ARROW_PRELOAD=false``, which leaves pyarrow and
    the driver unloaded until the first such request).

    The cost is per process, not per dataset, so one table does, and
    start-up stays the same however many datasets are declared. Its connections stay in
    their pools for the first request. A failure here (a value Arrow cannot hold) only
    means a colder start.
    """
    # A table anyone may read as the service's own user: views and saved queries may cost a
    # full evaluation for their first row; a row-filtered or role-bound table is not to be
    # read without a caller.
    table = next(
        (d for d in datasets.values() if d.kind == "table" and not d.row_filter and not d.roles),
        None,
    )
    if table is None:
        return
    selection = Selection(fields=table.column_names, limit=1)
    count = partial(export.count_headers, dataset=table, selection=selection, mode="estimated")
    binary = (drivers, None) if drivers is not None else None
    for media_type in formats.streamed():
        fmt = formats.FORMATS[media_type]
        if fmt.from_copy_text and not settings.arrow_preload:
            continue
        try:
            planned = plan.plan(
                table,
                selection,
                fmt,
                settings.stream_batch_size,
                row_group_rows=1,
                binary=binary,
                render_in_server=settings.text_rendering == "server",
            )
            async with asyncio.timeout(WARM_UP_SECONDS):
                _, body, cleanup = await cursor.open_stream(
                    db, planned.source, planned.encoder, count
                )
                try:
                    async for _ in body:
                        pass
                finally:
                    await cleanup()
        except Exception as exc:
            logger.debug("warm-up of %s as %s: %s", table.name, media_type, exc)
