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

from app import cursor, export, formats, plan
from app.datasets import Dataset
from app.limits import WARM_UP_SECONDS
from app.settings import Settings
from app.sql import Selection

logger = logging.getLogger(__name__)


async def warm_up(db: databases.Database, datasets: dict[str, Dataset], settings: Settings) -> None:
    """Run the first row of one table through every streamed format, at start.

    The cost is per process, not per dataset, so one table does, and
    start-up stays the same however many datasets are declared. Its connection stays in
    the pool for the first request. A failure here (a value Arrow cannot hold) only means
    a colder start.
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
    for media_type in formats.streamed():
        try:
            planned = plan.plan(
                table,
                selection,
                formats.FORMATS[media_type],
                settings.stream_batch_size,
                row_group_rows=1,
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
