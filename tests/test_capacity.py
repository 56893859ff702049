"""Overload is refused, not queued forever: stream capacity (503) and per-subject quota (429)."""

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from app.capacity import StreamLimiter, TooManyRequests
from app.errors import ServiceUnavailable
from tests.support import (
    Server,
    busy_sessions,
    metric,
    raw_request,
    reset,
    start_server,
    stop_server,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_limiter_bounds_streams_and_subjects() -> None:
    limiter = StreamLimiter(capacity=2, per_subject=1, admission_wait=0.05)
    async with limiter.slot("a"), limiter.slot("b"):
        assert limiter.active == 2
        with pytest.raises(TooManyRequests):
            async with limiter.slot("a"):
                pass
        with pytest.raises(ServiceUnavailable):
            async with limiter.slot("c"):
                pass
    assert limiter.active == 0
    async with limiter.slot("c"):  # freed again
        assert limiter.active == 1
    assert dict(limiter.rejected) == {429: 1, 503: 1}


@pytest.mark.anyio
async def test_a_waiting_stream_gets_a_slot_freed_within_the_admission_wait() -> None:
    """A full limiter makes a newcomer wait, not fail: when the holder leaves before
    ``admission_wait`` runs out, the waiter gets the freed slot, and nothing is counted as
    rejected."""
    limiter = StreamLimiter(capacity=1, per_subject=5, admission_wait=1.0)
    events: list[str] = []
    a_admitted, a_may_leave = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with limiter.slot("a"):
            events.append("a admitted")
            a_admitted.set()
            await a_may_leave.wait()
        events.append("a left")

    async def wait_for_a_slot() -> None:
        async with limiter.slot("b"):
            events.append("b admitted")
            assert limiter.active == 1

    holder = asyncio.create_task(hold())
    await a_admitted.wait()
    waiter = asyncio.create_task(wait_for_a_slot())
    await asyncio.sleep(0.1)  # well within b's admission wait
    assert events == ["a admitted"] and not waiter.done()  # b waits: not admitted, not refused
    a_may_leave.set()
    await asyncio.gather(holder, waiter)
    assert events == ["a admitted", "a left", "b admitted"]
    assert not limiter.rejected
    assert limiter.active == 0


@pytest.fixture(scope="module")
def small(db_url: str) -> Iterator[Server]:
    s = start_server(
        db_url,
        STREAM_CAPACITY="3",
        STREAM_PER_SUBJECT="2",
        STREAM_ADMISSION_WAIT="0.3",
        STREAM_BATCH_SIZE="10",
        MAX_STANDARD_ROWS="1000",
    )
    try:
        yield s
    finally:
        stop_server(s)


def test_capacity_plus_n_requests_extra_ones_get_503_quickly(small: Server) -> None:
    # three stalled streams from three subjects fill the capacity
    held = [
        raw_request(small, "/messages/stream", rcvbuf=4096, token=small.token(f"s{i}"))
        for i in range(3)
    ]
    try:
        time.sleep(0.3)
        assert metric(small, "rowstream_streams_active") == 3
        for i in range(5):
            started = time.monotonic()
            r = httpx.get(
                f"{small.base_url}/messages/stream", headers=small.headers(f"extra{i}"), timeout=10
            )
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.headers["content-type"] == "application/problem+json"
            assert time.monotonic() - started < 2  # refused, not queued
        # other routes are not starved
        ready = httpx.get(f"{small.base_url}/readyz", timeout=5)
        assert ready.status_code == 200
    finally:
        for sock in held:
            reset(sock)
    assert busy_sessions(small.database_url) == []
    ok = httpx.get(f"{small.base_url}/chunked", params={"limit": 2}, headers=small.headers())
    assert ok.status_code == 200
    assert metric(small, "rowstream_rejected_total", status="503") >= 5


def test_one_subject_over_its_quota_gets_429(small: Server) -> None:
    held = [
        raw_request(small, "/messages/stream", rcvbuf=4096, token=small.token("greedy"))
        for _ in range(2)
    ]
    try:
        time.sleep(0.3)
        r = httpx.get(f"{small.base_url}/messages/stream", headers=small.headers("greedy"))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert "limit" in r.json()["detail"]
        other = httpx.get(
            f"{small.base_url}/chunked", params={"limit": 1}, headers=small.headers("modest")
        )
        assert other.status_code == 200
    finally:
        for sock in held:
            reset(sock)


def test_standard_endpoint_refuses_results_over_max_standard_rows(small: Server) -> None:
    r = httpx.get(f"{small.base_url}/messages", headers=small.headers(), timeout=10)
    assert r.status_code == 400
    body = r.json()
    assert "/messages/stream" in body["detail"] and body["maximum"] == 1000
    assert body["rows"] > 1000
    assert (
        httpx.get(
            f"{small.base_url}/messages", params={"limit": 1000}, headers=small.headers()
        ).status_code
        == 200
    )
    narrow = httpx.get(
        f"{small.base_url}/messages", params={"sender_id": 7919}, headers=small.headers()
    )
    assert narrow.status_code == 200 and len(narrow.json()) < 1000
    # the stream serves it all
    s = httpx.get(
        f"{small.base_url}/messages/stream",
        params={"limit": 5000},
        headers=small.headers(),
        timeout=30,
    )
    assert s.text.count("\n") == 5000


@pytest.mark.anyio
async def test_waiting_requests_count_against_the_subjects_quota() -> None:
    limiter = StreamLimiter(capacity=1, per_subject=1, admission_wait=0.5)
    async with limiter.slot("a"):  # capacity full

        async def wait_for_slot() -> None:
            with pytest.raises(ServiceUnavailable):
                async with limiter.slot("b"):
                    pass

        waiter = asyncio.create_task(wait_for_slot())
        await asyncio.sleep(0.05)  # "b" is now waiting, holding its quota
        started = asyncio.get_running_loop().time()
        with pytest.raises(TooManyRequests):
            async with limiter.slot("b"):
                pass
        assert asyncio.get_running_loop().time() - started < 0.1  # refused at once
        await waiter
    assert limiter.active == 0
