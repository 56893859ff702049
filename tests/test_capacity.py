"""Overload is refused, not queued forever: stream capacity (503) and per-subject quota (429)."""

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from app.capacity import MemoryBudget, StreamLimiter, TooManyRequests
from app.errors import ServiceUnavailable
from tests.support import (
    Server,
    busy_sessions,
    metric,
    raw_request,
    reset,
    running,
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


def test_a_memory_reservation_grows_settles_and_is_returned() -> None:
    budget = MemoryBudget(100)
    first = budget.reserve(60)
    with pytest.raises(ServiceUnavailable) as refused:
        budget.reserve(50)
    assert "STANDARD_MEMORY_BUDGET_MB" in refused.value.detail
    assert refused.value.headers == {"Retry-After": "2"}
    first.grow_to(80)
    with pytest.raises(ServiceUnavailable):
        first.grow_to(101)
    assert first.size == 80 and budget.used == 80
    first.settle(30)  # the real body was smaller than the estimate
    second = budget.reserve(70)
    assert budget.used == 100
    first.release()
    second.release()
    assert budget.used == 0 and budget.rejected == 2


@pytest.fixture(scope="module")
def frugal(db_url: str) -> Iterator[Server]:
    """The standard route may hold 8 MiB of bodies; a client may stall for 1 s."""
    with running(db_url, STANDARD_MEMORY_BUDGET_MB="8", STREAM_SEND_TIMEOUT_SECONDS="1") as s:
        yield s


def _standard(server: Server, limit: int | None = None) -> httpx.Response:
    params = {"limit": limit} if limit else {}
    return httpx.get(
        f"{server.base_url}/messages", params=params, headers=server.headers(), timeout=30
    )


def test_a_body_over_the_memory_budget_is_refused_with_503_and_nothing_held(
    frugal: Server,
) -> None:
    whole = _standard(frugal)  # 100,000 rows: about 20 MB of JSON
    assert whole.status_code == 503 and whole.headers["Retry-After"] == "2"
    assert "STANDARD_MEMORY_BUDGET_MB" in whole.json()["detail"]
    assert busy_sessions(frugal.database_url) == []
    part = _standard(frugal, 10_000)  # about 2 MB
    assert part.status_code == 200 and len(part.json()) == 10_000
    assert part.headers["Cache-Control"] == "no-store"
    assert part.headers["X-Content-Type-Options"] == "nosniff"


def test_clients_that_do_not_read_hold_the_budget_only_until_the_send_timeout(
    frugal: Server,
) -> None:
    import psutil

    server = psutil.Process(frugal.process.pid)
    rss_before = server.memory_info().rss
    # each about 6 MB (more than the socket buffers hold); the budget holds one at a time
    held = [raw_request(frugal, "/messages?limit=30000", rcvbuf=4096) for _ in range(6)]
    try:
        time.sleep(0.5)
        answers = [sock.recv(12) for sock in held]
        assert answers.count(b"HTTP/1.1 200") == 1, answers
        assert answers.count(b"HTTP/1.1 503") == 5, answers
        assert server.memory_info().rss - rss_before < 40 << 20
        time.sleep(1.5)  # the stalled one is cut off, and its memory returned
        assert _standard(frugal, 30_000).status_code == 200
    finally:
        for sock in held:
            reset(sock)
