"""The scale-out topology of ``deploy/compose.scale.yml``, run as local processes instead of
containers: nginx with ``deploy/nginx.compose.conf`` (least_conn) in front of two rowstream
instances (``DATABASE_POOLER=transaction``), one PgBouncer with the recommended settings and
two logical databases, and behind it the primary (``DATABASE_URL``) and a hot standby
made with ``pg_basebackup -R`` (``DATABASE_READ_URL``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest

from bench import pooler
from tests.support import (
    DEPLOY,
    REPLICA_ROWS,
    Pair,
    Server,
    execute,
    metric,
    run,
    start_nginx,
    start_server,
    stop_server,
    wait_for_replay,
)


@dataclass
class Topology:
    pair: Pair
    instances: list[Server]
    #: nginx, the only address clients use
    base_url: str

    def headers(self, subject: str = "tester") -> dict[str, str]:
        # every instance has the same JWT secret: a token from one is good for all
        return {**self.instances[0].headers(subject), "Accept-Encoding": "identity"}


@pytest.fixture(scope="module")
def topology(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    pair.standby_setting("hot_standby_feedback = on")  # as in the compose file
    databases = {"rowstream": pair.primary_url, "rowstream_read": pair.standby_url}
    with pooler.running(databases) as urls:
        env = {
            "DATABASE_READ_URL": urls["rowstream_read"],
            "DATABASE_POOLER": "transaction",
            "READ_MAX_LAG_SECONDS": "30",
            "STREAM_BATCH_SIZE": "100",
        }
        instances: list[Server] = []
        directory = tmp_path_factory.mktemp("nginx")
        try:
            for _ in range(2):
                instances.append(start_server(urls["rowstream"], **env))
            proc, base = start_nginx(DEPLOY / "nginx.compose.conf", instances, directory)
            try:
                yield Topology(pair, instances, base)
            finally:
                proc.terminate()
                proc.wait(10)
        finally:
            for s in instances:
                stop_server(s)


def _ids(ndjson: bytes) -> list[int]:
    return [orjson.loads(line)["id"] for line in ndjson.splitlines()]


def _completed(topology: Topology) -> list[float]:
    ended = "rowstream_streams_ended_total"
    return [metric(s, ended, outcome="complete") for s in topology.instances]


def test_concurrent_exports_through_nginx_and_pgbouncer_are_whole_and_use_both_instances(
    topology: Topology,
) -> None:
    direct = start_server(topology.pair.primary_url)
    try:
        expected = {
            fmt: httpx.get(
                f"{direct.base_url}/messages/stream",
                params={"format": fmt},
                headers={**direct.headers(), "Accept-Encoding": "identity"},
                timeout=60,
            ).content
            for fmt in ("ndjson", "csv")
        }
    finally:
        stop_server(direct)
    assert _ids(expected["ndjson"]) == list(range(1, REPLICA_ROWS + 1))
    before = _completed(topology)

    async def exports() -> list[tuple[str, bytes]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:

            async def one(i: int, fmt: str) -> tuple[str, bytes]:
                r = await client.get(
                    f"{topology.base_url}/messages/stream",
                    params={"format": fmt},
                    headers=topology.headers(f"client{i}"),
                )
                assert r.status_code == 200, r.text
                assert r.headers["transfer-encoding"] == "chunked"
                return fmt, r.content

            formats = ["ndjson"] * 12 + ["csv"] * 4
            return list(await asyncio.gather(*(one(i, f) for i, f in enumerate(formats))))

    for fmt, body in asyncio.run(exports()):
        assert body == expected[fmt]
    # a stream is counted once its last byte is sent, which can be just after the client
    # has it all: read the counters until all 16 are in
    deadline = time.monotonic() + 10
    while True:
        served = [after - b for after, b in zip(_completed(topology), before, strict=True)]
        if sum(served) >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sum(served) == 16
    assert min(served) >= 4, served  # least_conn spreads concurrent streams over both


def test_exports_read_the_standby_through_pgbouncer_and_writes_stay_on_the_primary(
    topology: Topology,
) -> None:
    pair = topology.pair
    new_id = REPLICA_ROWS + 1
    # the lag is measured from the last transaction replayed: make that one recent, so the
    # pause below stays well inside READ_MAX_LAG_SECONDS
    run(execute(pair.primary_url, "UPDATE messages SET is_read = is_read WHERE id = 1"))
    wait_for_replay(pair)
    run(execute(pair.standby_url, "SELECT pg_wal_replay_pause()"))
    try:
        run(
            execute(
                pair.primary_url,
                f"INSERT INTO messages (id, sender_id, recipient_id, channel, body, created_at,"
                f" is_read) VALUES ({new_id}, 1, 2, 'sms', 'only on the primary yet', now(),"
                " false)",
            )
        )
        time.sleep(0.5)
        r = httpx.get(
            f"{topology.base_url}/messages/stream",
            params={"after_id": REPLICA_ROWS - 2},
            headers=topology.headers(),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        # the standby has not replayed the insert: the export came from there
        assert _ids(r.content) == [REPLICA_ROWS - 1, REPLICA_ROWS]
        ready = httpx.get(f"{topology.base_url}/readyz", timeout=10)
        assert ready.status_code == 200 and "lag_seconds" in ready.json()["read"]
    finally:
        run(execute(pair.standby_url, "SELECT pg_wal_replay_resume()"))
    try:
        wait_for_replay(pair)
        r = httpx.get(
            f"{topology.base_url}/messages/stream",
            params={"after_id": REPLICA_ROWS - 2},
            headers=topology.headers(),
            timeout=30,
        )
        assert _ids(r.content) == [REPLICA_ROWS - 1, REPLICA_ROWS, new_id]
    finally:
        run(execute(pair.primary_url, f"DELETE FROM messages WHERE id = {new_id}"))
        wait_for_replay(pair)
