"""The served datasets, described once from the database and kept for the process.

The declarations are read when the app is built (a bad file stops it there). The
descriptions need the database: they are read when the service starts and, should the
database be down then, on the first request or readiness probe once it answers, so a
service started before its database comes up without a crash loop (``/readyz`` says 503
meanwhile). A declaration the database contradicts (no such table, no such column, a
key that is not unique) is a configuration error: at start it stops the service with one
line; found later, ``/readyz`` and every data route answer 503 with that line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg
import databases

from app import cursor, introspection, sql, transaction
from app.database import UNREACHABLE, describe, raw_connection
from app.datasets import ConfigError, Dataset, DatasetsFile
from app.errors import NotFound, ServiceUnavailable

logger = logging.getLogger(__name__)


class Catalog:
    def __init__(self, config: DatasetsFile, ready_cache_seconds: float) -> None:
        self.config = config
        self.ready_cache_seconds = ready_cache_seconds
        self.names = tuple(config.datasets)
        self._datasets: dict[str, Dataset] | None = None
        self._error: str | None = None
        self._lock = asyncio.Lock()
        self._ready_at = float("-inf")
        self._ready_error: str | None = None
        #: The readiness probe running now, which later callers wait for.
        self._probing: asyncio.Future[str | None] | None = None

    @property
    def loaded(self) -> dict[str, Dataset]:
        return self._datasets or {}

    async def load(self, db: databases.Database, *, at_start: bool = False) -> None:
        """Describe every dataset. At start, an unreachable database is only logged; a
        wrong declaration raises ``ConfigError``."""
        async with self._lock:
            if self._datasets is not None:
                return
            try:
                async with raw_connection(db) as conn:
                    self._datasets = await introspection.describe_all(conn, self.config)
            except ConfigError as exc:
                self._error = str(exc)
                if at_start:
                    raise
                logger.error("datasets: %s", exc)
            except (*UNREACHABLE, ServiceUnavailable) as exc:
                if not at_start:
                    raise
                logger.warning(
                    "database unreachable at start (%s); datasets are read once it answers",
                    describe(exc),
                )

    async def get(self, db: databases.Database, name: str) -> Dataset:
        """The dataset called ``name``: 404 if none is declared, 503 while unreadable."""
        if name not in self.config.datasets:
            raise NotFound(
                f"no dataset {name!r}; GET /datasets lists them", datasets=list(self.names)
            )
        return (await self.all(db))[name]

    async def all(self, db: databases.Database) -> dict[str, Dataset]:
        if self._datasets is None and self._error is None:
            await self.load(db)
        if self._error is not None:
            raise ServiceUnavailable(f"datasets misconfigured: {self._error}", retry_after=30)
        assert self._datasets is not None
        return self._datasets

    async def estimates(
        self,
        db: databases.Database,
        row_filters: dict[str, tuple[str, ...] | None],
        identity: transaction.DbIdentity | None = None,
    ) -> dict[str, int | None]:
        """The planner's row estimate of each dataset named in ``row_filters`` (with its
        row filter's values), as ``identity`` sees it: one ``EXPLAIN`` each, no scan. None
        where it cannot be had: a saved query (it needs its parameters), no row filter
        values, or a dataset the database role may not read."""
        out: dict[str, int | None] = {}
        loaded = await self.all(db)
        async with transaction.snapshot(db, identity=identity) as conn:
            for name, values in row_filters.items():
                dataset = loaded[name]
                out[name] = None
                if dataset.params or values is None:
                    continue
                selection = sql.Selection(fields=dataset.column_names, row_filter=values)
                query = sql.as_columns(dataset, selection)
                try:
                    async with conn.transaction():  # a savepoint: a refusal ends only it
                        out[name] = await cursor.estimated_count(conn, query)
                except (asyncpg.exceptions.InsufficientPrivilegeError, asyncpg.DataError):
                    pass  # not the caller's to read, or a claim that is no value of the column
        return out

    async def check_readable(self, db: databases.Database, *, within: float) -> str | None:
        """None when every dataset answers a one-row read within ``within`` seconds; else
        why not. The verdict is kept ``ready_cache_seconds``, and callers that come while a
        probe runs wait for that probe rather than start their own: a probe held up by a
        lock would otherwise be joined by one more, each holding a pooled connection,
        every time the orchestrator asks."""
        if time.monotonic() - self._ready_at < self.ready_cache_seconds:
            return self._ready_error
        if self._probing is None:
            self._probing = asyncio.ensure_future(self._probe_all(db, within))
        # Shielded: a caller that goes away does not cancel the probe others wait for.
        return await asyncio.shield(self._probing)

    async def _probe_all(self, db: databases.Database, within: float) -> str | None:
        """Probe every dataset, all within ``within`` seconds; record and return the verdict."""
        deadline = time.monotonic() + within
        error: str | None = None
        try:
            loaded = await self.all(db)
            async with (
                raw_connection(db, acquire_timeout=within) as conn,
                conn.transaction(readonly=True),
            ):
                for dataset in loaded.values():
                    error = await _probe(conn, dataset, deadline - time.monotonic(), within)
                    if error:
                        break
        except ServiceUnavailable as exc:
            error = exc.detail
        except Exception as exc:
            error = f"database not ready: {describe(exc)}"
        finally:
            self._probing = None
        self._ready_at, self._ready_error = time.monotonic(), error
        return error


#: How much longer than the server's own bound the client waits for the probe's answer: a
#: backstop for a server that does not answer at all (``lock_timeout`` and
#: ``statement_timeout`` end the statement on the server, so no session is left waiting).
_CLIENT_GRACE_SECONDS = 1.0
#: ``statement_timeout`` ends the probe this much after ``lock_timeout`` would: with both
#: at once the statement timer, started first, fires first, and a wait for a lock would be
#: reported as a slow read.
_STATEMENT_AFTER_LOCK_MS = 250


async def _probe(conn: Any, dataset: Dataset, budget: float, within: float) -> str | None:
    """Plan (not run) a one-row read of the dataset: it exists, is readable, and nothing
    holds it up. Planning takes the locks a data request's query takes, so a session
    holding the table ACCESS EXCLUSIVE (``ALTER TABLE``, ``VACUUM FULL``, a migration)
    blocks this probe as it blocks every data request, until ``lock_timeout`` ends the
    wait. A saved query needs its parameters to be planned; preparing it (parse and
    rewrite, no values) takes the same locks."""
    if budget <= 0:
        return f"dataset {dataset.name!r} is stuck: the readiness probe ran out of {within:g} s"
    placeholders = ("",) * len(dataset.params)
    selection = sql.Selection(
        fields=dataset.column_names[:1],
        limit=1,
        params=placeholders,
        row_filter=(None,) * len(dataset.row_filter),  # planned, never run: any value
    )
    query = sql.select(dataset, selection, "1")
    lock_ms = max(1, int(budget * 1000))
    timeout = budget + _CLIENT_GRACE_SECONDS
    try:
        await conn.execute(
            f"SET LOCAL lock_timeout = {lock_ms}; "
            f"SET LOCAL statement_timeout = {lock_ms + _STATEMENT_AFTER_LOCK_MS}"
        )
        if dataset.params:
            await conn.prepare(query.sql, timeout=timeout)
        else:
            await conn.fetch(f"EXPLAIN {query.sql}", *query.args, timeout=timeout)
    except asyncpg.exceptions.LockNotAvailableError:
        return (
            f"dataset {dataset.name!r} is stuck: reading it waited over {within:g} s for a "
            "lock another session holds (pg_locks shows which); data requests on it wait "
            "behind that lock too"
        )
    except (asyncpg.exceptions.QueryCanceledError, TimeoutError):
        return f"dataset {dataset.name!r} is stuck: reading it took over {within:g} s"
    except Exception as exc:
        return f"dataset {dataset.name!r} is not readable: {describe(exc)}"
    return None
