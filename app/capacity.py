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

from app.errors import ProblemError, ServiceUnavailable


class TooManyRequests(ProblemError):
    status, title = 429, "Too Many Requests"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


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
