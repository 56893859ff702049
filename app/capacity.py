"""Admission control for streams: a bounded number at once, a quota per subject.

A stream pins a pooled connection and an open transaction for as long as its client
reads. Without a bound, slow or many clients exhaust the pool and every other request
waits; so streams draw on their own capacity, and when it is full a new one waits only
``admission_wait`` seconds before it is refused with 503 and ``Retry-After``, instead of
queueing forever. One subject holding more than its quota gets 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

from app.errors import ServiceUnavailable, TooManyRequests


class StreamLimiter:
    def __init__(self, capacity: int, per_subject: int, admission_wait: float) -> None:
        self.capacity = capacity
        self.per_subject = per_subject
        self.admission_wait = admission_wait
        self._free = asyncio.Semaphore(capacity)
        self._by_subject: Counter[str] = Counter()
        self._active = 0
        self.rejected: Counter[int] = Counter()

    @property
    def active(self) -> int:
        """Streams holding a slot now."""
        return self._active

    @contextlib.asynccontextmanager
    async def slot(self, subject: str) -> AsyncIterator[None]:
        """Hold one stream slot for ``subject`` while the context is open."""
        if self._by_subject[subject] >= self.per_subject:
            self.rejected[429] += 1
            raise TooManyRequests(
                f"this token already runs {self.per_subject} streams, its limit; "
                "retry when one has finished"
            )
        # reserve the subject's share before waiting, so waiters count against the quota
        self._by_subject[subject] += 1
        try:
            try:
                async with asyncio.timeout(self.admission_wait):
                    await self._free.acquire()
            except TimeoutError:
                self.rejected[503] += 1
                raise ServiceUnavailable(
                    f"all {self.capacity} stream slots are busy; retry shortly", retry_after=1
                ) from None
            self._active += 1
            try:
                yield
            finally:
                self._active -= 1
                self._free.release()
        finally:
            self._by_subject[subject] -= 1
            if not self._by_subject[subject]:
                del self._by_subject[subject]


class MemoryBudget:
    """Bytes the standard (buffered) route may hold for response bodies, over all requests.

    A buffered response holds its whole body from the first row loaded to the last byte
    sent; without a bound, a few concurrent full-table requests (or clients that never
    read) take the process's memory. Each request reserves an estimate before its query
    and grows the reservation as rows arrive (so the bound holds however wrong the
    estimate); one that does not fit gets 503 with ``Retry-After`` before anything was
    sent. Everything here is synchronous: the event loop is the only lock needed.
    """

    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.used = 0
        #: The last measured body bytes per row of each dataset, for the next estimate.
        self.row_bytes: dict[str, float] = {}
        self.rejected = 0

    def reserve(self, size: int) -> Reservation:
        reservation = Reservation(self)
        reservation.grow_to(size)
        return reservation

    def _take(self, size: int) -> None:
        if self.used + size > self.total:
            self.rejected += 1
            raise ServiceUnavailable(
                f"the standard route's memory budget ({self.total >> 20} MiB, "
                f"STANDARD_MEMORY_BUDGET_MB) is taken by other responses: {self.used >> 20} MiB "
                f"in use, {size >> 20} MiB more needed; retry shortly, or use the stream "
                "route, which needs no buffer",
                retry_after=2,
            )
        self.used += size


class Reservation:
    """One response's share of a ``MemoryBudget``; ``release`` it exactly once."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.size = 0

    def grow_to(self, size: int) -> None:
        """Hold ``size`` bytes in all (at least what is held); raises 503 if it cannot."""
        if size > self.size:
            self.budget._take(size - self.size)
            self.size = size

    def settle(self, size: int) -> None:
        """Hold exactly ``size`` bytes (the real body): the estimate's excess goes back."""
        if size < self.size:
            self.budget.used -= self.size - size
            self.size = size
        else:
            self.grow_to(size)

    def release(self) -> None:
        self.budget.used -= self.size
        self.size = 0
