"""Exports from a hot standby (``DATABASE_READ_URL``), made here with ``pg_basebackup -R``
from an embedded primary: rows as on the primary, a replication conflict is a failed export
(never a clean end) that ``after_id`` resumes, no conflict with ``hot_standby_feedback``,
and ``READ_MAX_LAG_SECONDS`` refusing exports while replay is behind."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    REPLICA_ROWS,
    Pair,
    Server,
    busy_sessions,
    execute,
    metric,
    raw_request,
    read_all,
    reset,
    run,
    sigterm_during_a_stalled_stream,
    start_server,
    stop_server,
    wait_for_replay,
)


@pytest.fixture(scope="module")
def reader(pair: Pair) -> Iterator[Server]:
    """Reads the standby through a cursor, 10 rows a fetch: a slow export whose query is
    still running when a conflict comes. (Rendered in the server, the 20,000 rows' binary
    COPY is read whole into buffers in milliseconds, and the snapshot that a conflict
    would end has already given every row.)"""
    s = start_server(
        pair.primary_url,
        DATABASE_READ_URL=pair.standby_url,
        STREAM_BATCH_SIZE="10",
        STREAM_SEND_TIMEOUT="60",
        TEXT_RENDERING="database",
    )
    try:
        yield s
    finally:
        stop_server(s)


@pytest.mark.parametrize("rendering", ["server", "database"])
def test_streams_and_csv_come_from_the_standby_with_the_primarys_rows(
    pair: Pair, reader: Server, rendering: str
) -> None:
    if rendering == "server":
        rendered = start_server(pair.primary_url, DATABASE_READ_URL=pair.standby_url)
        try:
            _streams_from_the_standby(pair, rendered)
        finally:
            stop_server(rendered)
    else:
        _streams_from_the_standby(pair, reader)


def _streams_from_the_standby(pair: Pair, reader: Server) -> None:
    h = {**reader.headers(), "Accept-Encoding": "identity"}
    for fmt in ("ndjson", "csv"):
        r = httpx.get(
            f"{reader.base_url}/messages/stream", params={"format": fmt}, headers=h, timeout=60
        )
        assert r.status_code == 200, r.text
        lines = r.content.count(b"\n")
        assert lines == REPLICA_ROWS + (1 if fmt == "csv" else 0)
    ready = httpx.get(f"{reader.base_url}/readyz").json()
    assert ready["read"]["lag_seconds"] == 0
    standby_sessions = run(
        execute(
            pair.standby_url,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
        )
    )
    assert standby_sessions >= 2  # the reader's pool lives on the standby


def _conflict_round(pair: Pair, reader: Server) -> tuple[bool, bytes]:
    """Hold a slow export on the standby, make the primary clean up what it still sees."""
    sock = raw_request(reader, "/messages/stream", rcvbuf=4096)
    time.sleep(0.5)
    run(
        execute(
            pair.primary_url,
            "UPDATE messages SET is_read = NOT is_read WHERE id > 5000",
            "VACUUM messages",
        )
    )
    wait_for_replay(pair)
    time.sleep(1.5)  # max_standby_streaming_delay = 1 s
    # now read everything there is
    body = read_all(sock, timeout=30)
    reset(sock)
    return body.endswith(b"0\r\n\r\n"), body


def test_a_replication_conflict_is_a_failed_export_that_after_id_resumes(
    pair: Pair, reader: Server
) -> None:
    complete, body = _conflict_round(pair, reader)
    assert not complete, "a stream killed by a recovery conflict must not end cleanly"
    failed = metric(reader, "rowstream_streams_ended_total", outcome="database error") + metric(
        reader, "rowstream_streams_ended_total", outcome="recovery conflict"
    )
    assert failed >= 1
    # resume after the last complete row received: the rest arrives, in a new snapshot
    lines = [line for line in body.split(b"\r\n") if line.startswith(b'{"id":')]
    last = int(lines[-1].split(b",")[0].split(b":")[1]) if lines else 0
    rest = httpx.get(
        f"{reader.base_url}/messages/stream",
        params={"after_id": last, "fields": "id"},
        headers=reader.headers(),
        timeout=60,
    )
    ids = [int(x.split(b":")[1].rstrip(b"}")) for x in rest.content.splitlines()]
    assert ids == list(range(last + 1, REPLICA_ROWS + 1))


def test_with_hot_standby_feedback_there_is_no_conflict(pair: Pair, reader: Server) -> None:
    pair.standby_setting("hot_standby_feedback = on")
    try:
        time.sleep(1)
        complete, _ = _conflict_round(pair, reader)
        assert complete
    finally:
        pair.standby_setting("hot_standby_feedback = off")  # as the module's pair began


def test_exports_are_refused_while_the_replica_lags(pair: Pair) -> None:
    s = start_server(pair.primary_url, DATABASE_READ_URL=pair.standby_url, READ_MAX_LAG_SECONDS="1")
    try:
        ok = httpx.get(f"{s.base_url}/chunked", params={"limit": 2}, headers=s.headers())
        assert ok.status_code == 200
        run(execute(pair.standby_url, "SELECT pg_wal_replay_pause()"))
        try:
            run(
                execute(
                    pair.primary_url, "UPDATE messages SET is_read = NOT is_read WHERE id <= 10"
                )
            )
            time.sleep(3)  # replay paused: the standby falls behind
            r = httpx.get(f"{s.base_url}/chunked", params={"limit": 2}, headers=s.headers())
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert "behind" in r.json()["detail"]
            assert httpx.get(f"{s.base_url}/readyz").status_code == 503
            assert metric(s, "rowstream_read_replica_lag_seconds") > 1
        finally:
            run(execute(pair.standby_url, "SELECT pg_wal_replay_resume()"))
        wait_for_replay(pair)
        time.sleep(1.2)  # the lag is measured at most once a second
        again = httpx.get(f"{s.base_url}/chunked", params={"limit": 2}, headers=s.headers())
        assert again.status_code == 200
    finally:
        stop_server(s)


def test_a_multi_host_read_url_prefers_the_standby(pair: Pair) -> None:
    from urllib.parse import parse_qs, urlsplit

    primary = urlsplit(pair.primary_url)
    standby = urlsplit(pair.standby_url)
    p_host = parse_qs(primary.query)["host"][0]
    s_query = parse_qs(standby.query)
    both = (
        f"postgresql://postgres@/postgres?host={p_host},{s_query['host'][0]}"
        f"&port=5432,{s_query['port'][0]}&target_session_attrs=prefer-standby"
    )
    count_sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()"
    )
    before = run(execute(pair.standby_url, count_sql))
    s = start_server(pair.primary_url, DATABASE_READ_URL=both, POOL_MIN_SIZE="2")
    try:
        r = httpx.get(f"{s.base_url}/chunked", params={"limit": 3}, headers=s.headers())
        assert r.status_code == 200 and r.text.count("\n") == 3
        assert "read" in httpx.get(f"{s.base_url}/readyz").json()
        # the read pool connected to the standby (listed second), not to the primary
        assert run(execute(pair.standby_url, count_sql)) >= before + 2
    finally:
        stop_server(s)


def test_sigterm_during_a_slow_stream_from_the_standby_leaves_no_session_anywhere(
    pair: Pair,
) -> None:
    s = start_server(
        pair.primary_url,
        DATABASE_READ_URL=pair.standby_url,
        STREAM_BATCH_SIZE="10",
        STREAM_SEND_TIMEOUT="60",
    )
    took, sock = sigterm_during_a_stalled_stream(s)
    reset(sock)
    assert took < 10 + 3, took  # the default drain (--graceful-timeout 10) plus 3 s
    assert busy_sessions(pair.standby_url) == []
    assert busy_sessions(pair.primary_url) == []


def test_database_roles_and_row_level_security_on_the_standby(pair: Pair, tmp_path: Path) -> None:
    """``SET LOCAL ROLE`` and ``set_config(…, true)`` are allowed in a standby's read-only
    transactions: the policy on the primary's table decides there too."""
    for statement in (
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rs_standby_a') "
        "THEN CREATE ROLE rs_standby_a; END IF; END $$",
        "CREATE TABLE IF NOT EXISTS owned (id int PRIMARY KEY, owner text NOT NULL)",
        "INSERT INTO owned SELECT i, CASE WHEN i % 2 = 0 THEN 'rs_standby_a' ELSE 'x' END "
        "FROM generate_series(1, 50) AS i ON CONFLICT DO NOTHING",
        "GRANT SELECT ON owned TO rs_standby_a",
        "ALTER TABLE owned ENABLE ROW LEVEL SECURITY",
        "DROP POLICY IF EXISTS mine ON owned",
        "CREATE POLICY mine ON owned USING (owner = current_user)",
    ):
        run(execute(pair.primary_url, statement))
    wait_for_replay(pair)
    config = tmp_path / "datasets.toml"
    config.write_text('[datasets.owned]\ntable = "owned"\n')
    env = {
        "DATABASE_READ_URL": pair.standby_url,
        "DATASETS_FILE": str(config),
        "DB_ROLE_CLAIM": "db_role",
        "DB_ROLES": '["rs_standby_a"]',
    }
    server = start_server(pair.primary_url, **env)
    try:
        response = httpx.get(
            f"{server.base_url}/datasets/owned/stream",
            headers={**server.headers(db_role="rs_standby_a"), "Prefer": "count=exact"},
        )
        assert response.status_code == 200, response.text
        rows = [json.loads(line) for line in response.content.splitlines()]
        assert [r["id"] for r in rows] == list(range(2, 51, 2))
        assert response.headers["x-total-count"] == "25"
    finally:
        stop_server(server)


def test_parts_are_planned_and_read_on_the_standby_and_pinned_to_it(pair: Pair) -> None:
    """A partitioned export of a service reading a standby: its snapshot is exported and
    held there, and its parts are read there; an instance whose connection reaches the
    primary instead refuses a part (503), never serving the primary's rows for it."""
    on_standby = start_server(pair.primary_url, DATABASE_READ_URL=pair.standby_url)
    on_primary = start_server(pair.primary_url)
    try:
        planned = httpx.post(
            f"{on_standby.base_url}/datasets/messages/partitions?parts=3&fields=id",
            headers=on_standby.headers(),
            timeout=30,
        ).json()
        assert len(planned["parts"]) == 3
        ids = []
        for part in planned["parts"]:
            body = httpx.get(part["url"], timeout=30)
            assert body.status_code == 200, body.text
            ids += [json.loads(line)["id"] for line in body.text.splitlines()]
        assert ids == list(range(1, REPLICA_ROWS + 1))
        elsewhere = planned["parts"][0]["url"].replace(on_standby.base_url, on_primary.base_url)
        refused = httpx.get(elsewhere, timeout=30)
        assert refused.status_code == 503, refused.text
        assert "another database server" in refused.json()["detail"]
    finally:
        stop_server(on_standby)
        stop_server(on_primary)
