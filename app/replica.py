"""The read side: how far behind the replica that serves exports is.

Exports (streams, COPY, large buffered reads) go to ``DATABASE_READ_URL`` when it is set.
On a hot standby the rows an export sees are as old as the replay: with
``READ_MAX_LAG_SECONDS`` new exports are refused (503, ``Retry-After``) while the replica
lags more than that. Lag is zero on a primary, and zero on a standby that has replayed
everything it received (an idle primary sends nothing, so "time since the last replayed
transaction" alone would grow forever).
"""

from __future__ import annotations

import math
import time

import databases

from app.database import raw_connection
from app.errors import ServiceUnavailable

LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
    ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)
END::float8
"""


class LagMonitor:
    """The read side's replication lag, asked at most once per ``ttl`` seconds."""

    def __init__(self, db: databases.Database, ttl: float = 1.0) -> None:
        self.db = db
        self.ttl = ttl
        self.last: float = 0.0
        self._checked = -math.inf

    async def lag(self) -> float:
        now = time.monotonic()
        if now - self._checked >= self.ttl:
            async with raw_connection(self.db, acquire_timeout=2.0) as conn:
                self.last = float(await conn.fetchval(LAG_SQL))
            self._checked = now
        return self.last

    async def admit(self, max_lag: float | None) -> None:
        """Refuse a new export while the replica is more than ``max_lag`` s behind."""
        if max_lag is None:
            return
        lag = await self.lag()
        if lag > max_lag:
            raise ServiceUnavailable(
                f"the read replica is {lag:.1f} s behind, more than READ_MAX_LAG_SECONDS "
                f"({max_lag:g} s); retry shortly",
                retry_after=max(1, math.ceil(lag - max_lag)),
            )
