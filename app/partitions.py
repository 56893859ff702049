"""Partitioned exports: K key ranges of one snapshot, each an ordinary export that any
instance reaching the same database server serves.

``POST /datasets/{name}/partitions`` (``partitions_route.py``) opens a ``Hold``: a
connection of its own whose read-only REPEATABLE READ transaction exports its snapshot
(``pg_export_snapshot()``) and then stays open, idle, because an exported snapshot can be
imported only while the transaction that exported it lives. Inside that snapshot, as the
caller, the selection is split into key ranges of about equal rows (``ranges.py``).

Each part is a signed link (``links.py``) to the dataset's stream route carrying
``rs_part``: the snapshot, the server's tag and the key range. The instance serving it
begins its transaction with ``SET TRANSACTION SNAPSHOT`` (``transaction.Imported``), so every
part, its counts and its resumptions (``after=`` inside the range) see the same moment.

A hold ends when every part has been read through this instance, when its creator
releases it (``DELETE /partitions/{id}``, which any instance can do: the hold's session is
found by its ``application_name`` and ended), or after ``PARTITION_HOLD_SECONDS`` (its
transaction's ``idle_in_transaction_session_timeout`` ends it on the server too). Its
snapshot then is gone, and a part asked for after that is a 410.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
import databases

from app import transaction
from app.database import UNREACHABLE, connection_options, describe, raw_connection
from app.errors import ServiceUnavailable, TooManyRequests
from app.limits import (
    CLEANUP_SECONDS,
    MAX_PARTITION_HOLDS,
    MAX_PARTITION_HOLDS_PER_SUBJECT,
    PART_READ_GRACE_SECONDS,
)
from app.settings import Settings

logger = logging.getLogger(__name__)

#: A hold's session is named so (``application_name``) until it ends.
APPLICATION_NAME = "rowstream partition "


@dataclass(frozen=True)
class Part:
    """What a part's signed link carries: the snapshot, its server, the key range."""

    partition: str
    index: int
    snapshot: str
    server: str
    #: The digest of the exported snapshot (``transaction.SERVER_AND_SNAPSHOT``).
    digest: str
    #: The key the part starts after (exclusive) and the key it ends at (inclusive), as
    #: text; None: the selection's first or last row.
    after: tuple[str, ...] | None
    until: tuple[str, ...] | None

    def encode(self) -> str:
        fields = [
            *(self.partition, self.index, self.snapshot, self.server, self.digest),
            *(self.after, self.until),
        ]
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    @classmethod
    def decode(cls, text: str) -> Part:
        """The part a verified link carries; ``ValueError`` if it is not one."""
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        partition, index, snapshot, server, digest, after, until = raw
        bounds = [None if b is None else tuple(str(v) for v in b) for b in (after, until)]
        return cls(str(partition), int(index), str(snapshot), str(server), str(digest), *bounds)

    def imported(self) -> transaction.Imported:
        return transaction.Imported(self.snapshot, self.server, self.digest)


@dataclass
class Hold:
    """An exporting transaction held open for its parts."""

    id: str
    subject: str
    conn: asyncpg.Connection
    #: Its exported snapshot, as a part imports it.
    snapshot: transaction.Imported
    #: Unix time at which it ends at the latest.
    expires_at: float
    parts: int = 0
    read: set[int] = field(default_factory=set)
    #: Every part has been read: it ends after ``PART_READ_GRACE_SECONDS``.
    ending: bool = False
    expiry: asyncio.Task[None] | None = None


class Holds:
    """The holds this instance has open: at most ``MAX_PARTITION_HOLDS``, and
    ``MAX_PARTITION_HOLDS_PER_SUBJECT`` of one caller."""

    def __init__(self) -> None:
        self._holds: dict[str, Hold] = {}
        #: Holds being opened, by subject (counted against the limits before any await).
        self._opening: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._holds)

    def _reserve(self, subject: str) -> None:
        if self._closing:
            raise ServiceUnavailable("this instance is shutting down", retry_after=1)
        opening = sum(self._opening.values())
        mine = self._opening.get(subject, 0) + sum(
            h.subject == subject for h in self._holds.values()
        )
        if len(self._holds) + opening >= MAX_PARTITION_HOLDS:
            raise ServiceUnavailable(
                f"this instance holds {MAX_PARTITION_HOLDS} partitioned exports already; "
                "try again when one is read or released",
                retry_after=5,
            )
        if mine >= MAX_PARTITION_HOLDS_PER_SUBJECT:
            raise TooManyRequests(
                f"you hold {MAX_PARTITION_HOLDS_PER_SUBJECT} partitioned exports on this "
                "instance already: release one (DELETE its release URL) or read its parts",
                retry_after=5,
            )
        self._opening[subject] = self._opening.get(subject, 0) + 1

    async def open(
        self,
        db: databases.Database,
        settings: Settings,
        subject: str,
        seconds: float,
        name: str,
    ) -> Hold:
        """A new hold of at most ``seconds``, its session named ``name``: a connection of
        its own (not the pool's: a hold must not keep a stream from a connection), its
        transaction begun and its snapshot exported."""
        self._reserve(subject)
        try:
            conn = await self._connect(db, settings)
            hold_id = name.removeprefix(APPLICATION_NAME).partition(".")[0]
            try:
                snapshot = await _export_snapshot(conn, seconds, name)
            except BaseException:
                conn.terminate()
                raise
        finally:
            self._opening[subject] -= 1
            if not self._opening[subject]:
                del self._opening[subject]
        hold = Hold(hold_id, subject, conn, snapshot, time.time() + seconds)
        hold.expiry = self._spawn(self._expire(hold_id, seconds))
        conn.add_termination_listener(lambda _: self._forget(hold_id))
        self._holds[hold_id] = hold
        return hold

    @staticmethod
    async def _connect(db: databases.Database, settings: Settings) -> asyncpg.Connection:
        options = connection_options(settings)
        try:
            async with asyncio.timeout(settings.pool_acquire_timeout_seconds):
                conn: asyncpg.Connection = await asyncpg.connect(
                    getattr(db, "_dsn", str(db.url)), **options
                )
                return conn
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            raise ServiceUnavailable(f"database unavailable: {describe(exc)}") from exc

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _forget(self, hold_id: str) -> None:
        """The hold's session ended under it (released elsewhere, the server's timeout)."""
        hold = self._holds.pop(hold_id, None)
        if hold is not None and hold.expiry is not None:
            hold.expiry.cancel()

    async def _release_after(self, hold_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.release(hold_id)

    async def _expire(self, hold_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.release(hold_id)

    def get(self, hold_id: str) -> Hold | None:
        return self._holds.get(hold_id)

    def part_read(self, part: Part) -> None:
        """A part was read to its end here: the hold ends once all its parts have been."""
        hold = self._holds.get(part.partition)
        if hold is None:
            return
        hold.read.add(part.index)
        if len(hold.read) >= hold.parts and not hold.ending:
            # not at once: the last bytes may still be on their way, and a client that
            # loses them resumes its part in this snapshot
            hold.ending = True
            self._spawn(self._release_after(part.partition, PART_READ_GRACE_SECONDS))

    async def release(self, hold_id: str) -> bool:
        """End a hold of this instance; False if it has none of that id."""
        hold = self._holds.pop(hold_id, None)
        if hold is None:
            return False
        if hold.expiry is not None and hold.expiry is not asyncio.current_task():
            hold.expiry.cancel()
        with anyio.move_on_after(CLEANUP_SECONDS, shield=True):
            with contextlib.suppress(Exception):
                await hold.conn.close()  # its transaction ends with it
        if not hold.conn.is_closed():
            hold.conn.terminate()
        return True

    async def close(self) -> None:
        """End every hold at once (shutdown); none is opened after this."""
        self._closing = True
        await asyncio.gather(*(self.release(h) for h in list(self._holds)))
        for task in list(self._tasks):
            task.cancel()


async def _export_snapshot(
    conn: asyncpg.Connection, seconds: float, name: str
) -> transaction.Imported:
    """Begin the hold's transaction, its session named ``name``, and export its snapshot
    (with the server's tag and its digest). Two round trips: nothing else runs here (the
    ranges are found on a pooled connection that imports the snapshot)."""
    await conn.execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
        f"{transaction.TRANSACTION_SETTINGS}; "
        # the server's own end of the hold, should this process not end it
        f"SET LOCAL idle_in_transaction_session_timeout = {int(seconds * 1000) + 1000}"
    )
    row = await conn.fetchrow(
        "SELECT set_config('application_name', $1, true), pg_export_snapshot(), "
        f"{transaction.SERVER_AND_SNAPSHOT_COLUMNS}",
        name,
    )
    return transaction.Imported(row[1], row[2], row[3])


def session_name(hold_id: str, key: bytes, subject: str) -> str:
    """The ``application_name`` of a hold's session: its id and a MAC of its creator (at
    most 63 bytes, PostgreSQL's limit), so that a release from another instance ends
    only a hold of the caller's own."""
    mac = hmac.new(key, f"partition\n{hold_id}\n{subject}".encode(), hashlib.sha256)
    return f"{APPLICATION_NAME}{hold_id}.{mac.hexdigest()[:16]}"


def new_id() -> str:
    return secrets.token_urlsafe(16)


async def release_elsewhere(db: databases.Database, name: str) -> bool:
    """End the hold another instance keeps in the session named ``name``
    (``session_name``: only the caller's own), found among the sessions of this service's
    own database user and ended on the server (``pg_terminate_backend`` needs no
    privilege over one's own sessions)."""
    query = (
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND usename = session_user AND pid <> pg_backend_pid()"
    )
    async with raw_connection(db) as conn:
        return bool(await conn.fetchval(query, name))
