"""Partitioned exports (``partitions.py``, ``partitions_route.py``): parts of one snapshot,
served by two real instances, while a writer moves amounts between the first and the last
rows (the total never changes, so a read of mixed moments shows as a wrong total)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pyarrow as pa
import pytest

from bench.consistency import moving
from rowstream.client import Client
from tests.support import Server, execute, metric, run, serving

ROWS = 20_000
AMOUNT = 100
SCHEMA = f"""
CREATE TABLE ledger (id integer PRIMARY KEY, amount bigint NOT NULL, note text);
INSERT INTO ledger SELECT i, {AMOUNT}, 'row ' || i || repeat('.', 200)
FROM generate_series(1, {ROWS}) AS i;
CREATE TABLE pairs (day date, n integer, PRIMARY KEY (day, n));
CREATE TABLE coded (code text COLLATE "C" PRIMARY KEY);
INSERT INTO coded SELECT c FROM (SELECT chr(65 + i % 26) || chr(97 + i / 26 % 26) || i AS c
FROM generate_series(0, 4999) AS i) AS s;
INSERT INTO pairs SELECT DATE '2024-01-01' + (i % 50), i FROM generate_series(1, 3000) AS i;
CREATE VIEW ledger_view AS SELECT id, amount FROM ledger;
CREATE VIEW holes AS SELECT NULLIF(id % 1000, 0) AS id FROM ledger WHERE id <= 3000;
CREATE TABLE tree (id integer PRIMARY KEY, v text);
CREATE TABLE tree_child () INHERITS (tree);
INSERT INTO tree SELECT i, 'parent' FROM generate_series(1, 6000) AS i;
INSERT INTO tree_child SELECT i, 'child' FROM generate_series(6001, 9000) AS i;
ANALYZE;
"""
DATASETS = """
[datasets.ledger]
table = "ledger"
[datasets.pairs]
table = "pairs"
[datasets.ledger_view]
table = "ledger_view"
key = ["id"]
[datasets.coded]
table = "coded"
[datasets.holes]
table = "holes"
key = ["id"]
[datasets.tree]
table = "tree"
[datasets.unkeyed]
query = "SELECT v FROM generate_series(1, 10) AS v"
"""


@pytest.fixture(scope="module")
def ledger_url(fresh_database: Callable[..., str]) -> str:
    return fresh_database("rowstream_partitions", SCHEMA)


@pytest.fixture(scope="module")
def instances(ledger_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two instances of the service on the same database (the same secrets)."""
    one, two = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    with serving(ledger_url, DATASETS, one) as a, serving(ledger_url, DATASETS, two) as b:
        yield [a, b]


PLANNERS = itertools.count()


def plan(
    server: Server, name: str, query: str = "parts=4", sub: str | None = None
) -> httpx.Response:
    """``POST …/partitions`` as ``sub`` (by default a caller of its own: a caller holds at
    most 4 partitioned exports, and most tests leave theirs to expire)."""
    sub = sub or f"planner{next(PLANNERS)}"
    response = httpx.post(
        f"{server.base_url}/datasets/{name}/partitions?{query}", headers=server.headers(sub)
    )
    if response.status_code == 201:
        PLANNED.append((server, sub, response.json()["release"]))
    return response


#: What ``plan`` made: released after each test (an instance holds at most 16).
PLANNED: list[tuple[Server, str, str]] = []


@pytest.fixture(autouse=True)
def release_what_was_planned() -> Iterator[None]:
    yield
    while PLANNED:
        server, sub, release = PLANNED.pop()
        httpx.delete(f"{server.base_url}{release}", headers=server.headers(sub))  # or 404


def at(server: Server, url: str) -> str:
    """A part's link, sent to ``server`` instead (the signature covers path and query)."""
    parts = urlsplit(url)
    return f"{server.base_url}{parts.path}?{parts.query}"


def rows_of(url: str, **headers: str) -> list[dict]:
    response = httpx.get(url, headers={"Accept": "application/x-ndjson", **headers}, timeout=30)
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def move(url: str, amount: int) -> None:
    """Move ``amount`` from the first row to the last, in one transaction."""
    run(
        execute(
            url,
            "BEGIN",
            f"UPDATE ledger SET amount = amount - {amount} WHERE id = 1",
            f"UPDATE ledger SET amount = amount + {amount} WHERE id = {ROWS}",
            "COMMIT",
        )
    )


async def holds(url: str, partition: str = "") -> int:
    """Sessions holding partitioned exports (``partition``'s, or any)."""
    conn = await asyncpg.connect(url)
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1"
        return int(await conn.fetchval(query, f"rowstream partition {partition}%"))
    finally:
        await conn.close()


def wait_for_no_hold(url: str, partition: str) -> int:
    deadline = time.monotonic() + 10  # PART_READ_GRACE_SECONDS (5) and some
    while (held := run(holds(url, partition))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return held


def writing(url: str) -> contextlib.AbstractContextManager[list[int]]:
    """A writer moving 1 from the first row to the last (``bench/consistency.py``'s, on
    ``ledger``) for the block; yields [moves made]."""
    return moving(url, "ledger", ROWS)


def exactly_once(ids: list[int], amounts: list[int]) -> None:
    assert ids == list(range(1, ROWS + 1))
    assert sum(amounts) == ROWS * AMOUNT


def test_parts_cover_the_selection_once_in_key_order(instances: list[Server]) -> None:
    a, _ = instances
    response = plan(a, "ledger")
    assert response.status_code == 201, response.text
    planned = response.json()
    parts = planned["parts"]
    assert len(parts) == 4 and parts[0]["after"] is None and parts[-1]["until"] is None
    assert [p["after"] for p in parts[1:]] == [p["until"] for p in parts[:-1]]
    sizes = []
    ids: list[int] = []
    for part in parts:
        rows = rows_of(part["url"])
        sizes.append(len(rows))
        ids += [r["id"] for r in rows]
    assert ids == list(range(1, ROWS + 1))  # every row once, in key order
    assert max(sizes) < ROWS / 4 * 1.5 and min(sizes) > ROWS / 4 * 0.5, sizes  # about equal
    assert abs(sum(p["estimated_rows"] for p in parts) - ROWS) < ROWS * 0.1


def test_a_filtered_selection_splits_into_parts_of_about_equal_rows(
    instances: list[Server],
) -> None:
    """The bounds fit the selection's rows, not the whole table's: a filter on the key
    keeping a fifth of it (the histogram inside the filter's range), and one on another
    column whose rows crowd at the end (a sample of the pages, read through the filter)."""
    a, _ = instances
    parts = plan(a, "ledger", "parts=4&id__lte=4000").json()["parts"]
    sizes = [len(rows_of(p["url"])) for p in parts]
    assert sum(sizes) == 4000 and max(sizes) - min(sizes) <= 4, sizes
    assert all(abs(p["estimated_rows"] - 1000) < 300 for p in parts)
    # ids 1, 10-19, 100-199, 1000-1999, 10000-19999: spread along the key as the table is
    # not (the histogram would leave a part empty)
    parts = plan(a, "ledger", "parts=4&fields=id&note__prefix=row%201").json()["parts"]
    sizes = [len(rows_of(p["url"])) for p in parts]
    assert sum(sizes) == 11_111 and min(sizes) >= 2000, sizes


def test_parts_read_one_snapshot_while_a_writer_moves_amounts(
    instances: list[Server], ledger_url: str
) -> None:
    a, b = instances
    parts = plan(a, "ledger").json()["parts"]
    first = rows_of(parts[0]["url"])  # holds id 1
    move(ledger_url, 50)  # committed between the parts
    rest = [rows_of(at([a, b][i % 2], p["url"])) for i, p in enumerate(parts[1:], 1)]
    rows = first + [r for part in rest for r in part]
    assert [r["id"] for r in rows] == list(range(1, ROWS + 1))
    assert sum(r["amount"] for r in rows) == ROWS * AMOUNT
    assert rows[-1]["amount"] == rows[0]["amount"]  # both before the move: one moment
    fresh = rows_of(f"{a.base_url}/datasets/ledger/stream", **a.headers())
    assert fresh[0]["amount"] - fresh[-1]["amount"] <= -100  # a new export sees the moves


def test_a_part_counts_and_resumes_inside_its_range(instances: list[Server]) -> None:
    a, _ = instances
    part = plan(a, "ledger").json()["parts"][1]
    low, high = int(part["after"][0]), int(part["until"][0])
    whole = httpx.get(part["url"], headers={"Prefer": "count=exact"})
    assert whole.headers["x-total-count"] == str(high - low)
    middle = (low + high) // 2
    resumed = rows_of(f"{part['url']}&after=[{middle}]")
    assert [r["id"] for r in resumed] == list(range(middle + 1, high + 1))
    widened = rows_of(f"{part['url']}&after=[0]")  # after= narrows, never widens
    assert [r["id"] for r in widened] == list(range(low + 1, high + 1))
    for tampered in (f"{part['url']}&limit=1", part["url"].replace("rs_part=", "rs_part=x")):
        assert httpx.get(tampered).status_code == 401


@pytest.mark.parametrize("fmt", ["csv", "arrow", "parquet", "json"])
def test_every_format_is_an_ordinary_export_of_its_part(instances: list[Server], fmt: str) -> None:
    a, _ = instances
    parts = plan(a, "ledger", f"parts=3&format={fmt}&fields=id,note&id__gt=100").json()["parts"]
    ids: list[int] = []
    for part in parts:
        body = httpx.get(part["url"], timeout=30).content
        if fmt == "csv":
            lines = body.decode().splitlines()
            assert lines[0] == "id,note"
            ids += [int(line.split(",")[0]) for line in lines[1:]]
        elif fmt == "json":
            ids += [r["id"] for r in json.loads(body)]
        elif fmt == "arrow":
            ids += pa.ipc.open_stream(body).read_all().column("id").to_pylist()
        else:
            import pyarrow.parquet as pq

            ids += pq.read_table(io.BytesIO(body)).column("id").to_pylist()
    assert ids == list(range(101, ROWS + 1))


@pytest.mark.parametrize("name", ["pairs", "ledger_view", "tree", "coded"])
def test_a_composite_key_and_a_view_split_too(instances: list[Server], name: str) -> None:
    a, _ = instances
    parts = plan(a, name, "parts=4").json()["parts"]
    # (a table with children: one histogram, the whole tree's; a key of collation "C" in a
    # database whose default sorts otherwise: the histogram's order is the key's)
    assert len(parts) == 4
    keys = [tuple(r.values())[:2] for p in parts for r in rows_of(p["url"])]
    stream = f"{a.base_url}/datasets/{name}/stream"
    whole = [tuple(r.values())[:2] for r in rows_of(stream, **a.headers())]
    assert keys == whole


def test_a_released_partition_answers_410_on_any_instance(
    instances: list[Server], ledger_url: str
) -> None:
    a, b = instances
    planned = plan(a, "ledger", sub="tester").json()
    url = planned["parts"][2]["url"]
    assert httpx.get(url).status_code == 200
    released = httpx.delete(f"{b.base_url}{planned['release']}", headers=b.headers())
    assert released.status_code == 204  # held by a, released through b
    for server in (a, b):
        gone = httpx.get(at(server, url))
        assert gone.status_code == 410, gone.text
        assert gone.headers["content-type"] == "application/problem+json"
        assert "no longer held" in gone.json()["detail"]
    assert httpx.delete(f"{a.base_url}{planned['release']}", headers=a.headers()).status_code == 404
    assert wait_for_no_hold(ledger_url, planned["partition"]) == 0


def test_a_hold_ends_once_every_part_is_read_through_its_instance(
    instances: list[Server], ledger_url: str
) -> None:
    a, _ = instances
    held = metric(a, "rowstream_partition_holds")
    planned = plan(a, "ledger", "parts=2").json()
    parts = planned["parts"]
    assert run(holds(ledger_url, planned["partition"])) == 1
    assert metric(a, "rowstream_partition_holds") == held + 1
    for part in parts:
        rows_of(part["url"])
    assert wait_for_no_hold(ledger_url, planned["partition"]) == 0
    assert metric(a, "rowstream_partition_holds") == held
    assert httpx.get(parts[0]["url"]).status_code == 410


def test_another_callers_release_is_404_and_changes_nothing(instances: list[Server]) -> None:
    a, _ = instances
    planned = plan(a, "ledger", "parts=2", sub="tester").json()
    other = httpx.delete(f"{a.base_url}{planned['release']}", headers=a.headers("mallory"))
    assert other.status_code == 404
    assert httpx.get(planned["parts"][0]["url"]).status_code == 200
    assert httpx.delete(f"{a.base_url}{planned['release']}", headers=a.headers()).status_code == 204


@pytest.mark.parametrize(
    ("name", "query", "status", "says"),
    [
        ("ledger", "parts=0", 422, "parts"),
        ("ledger", "parts=65", 422, "parts"),
        ("ledger", "", 422, "parts"),
        ("ledger", "parts=2&limit=5", 422, "limit"),
        ("ledger", "parts=2&after=[5]", 422, "after"),
        ("ledger", "parts=2&nope=1", 422, "nope"),
        ("unkeyed", "parts=2", 400, "no key"),
        ("holes", "parts=2", 400, "NULL in its key"),
        ("ledger", "parts=2&format=xml", 422, "format"),
        ("ledger", "parts=9", 422, "STREAM_PER_SUBJECT"),
        ("missing", "parts=2", 404, "missing"),
    ],
)
def test_a_bad_request_opens_no_snapshot(
    instances: list[Server], ledger_url: str, name: str, query: str, status: int, says: str
) -> None:
    a, _ = instances
    held = run(holds(ledger_url))
    response = plan(a, name, query)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert says in response.text
    assert run(holds(ledger_url)) == held


def test_parts_need_the_callers_token_and_a_signature(instances: list[Server]) -> None:
    a, _ = instances
    assert httpx.post(f"{a.base_url}/datasets/ledger/partitions?parts=2").status_code == 401
    url = plan(a, "ledger", "parts=2").json()["parts"][0]["url"]
    unsigned = url.split("&rs_signature=")[0]
    refused = httpx.get(unsigned, headers=a.headers())  # a token, and an unsigned rs_part
    assert refused.status_code == 422 and "rs_part" in refused.text


def test_to_arrow_in_parallel_is_one_snapshot_under_a_writer(
    instances: list[Server], ledger_url: str
) -> None:
    a, _ = instances
    with Client(a.base_url, a.token()) as client, writing(ledger_url) as moves:
        table = client.to_arrow("ledger", parallel=4)
        frame = client.to_pandas("ledger", parallel=2, fields="id,amount")
        polars = client.to_polars("ledger", parallel=3)
        batches = list(client.iter_batches("ledger", parallel=4, id__gt=10))
    assert moves[0] > 1
    exactly_once(table.column("id").to_pylist(), table.column("amount").to_pylist())
    exactly_once(frame["id"].tolist(), frame["amount"].tolist())
    exactly_once(polars["id"].to_list(), polars["amount"].to_list())
    assert [i for b in batches for i in b.column("id").to_pylist()] == list(range(11, ROWS + 1))


def rowstream_fetch(server: Server, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "fetch", "--quiet", url, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "ROWSTREAM_TOKEN": server.token()},
        timeout=120,
    )


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_fetch_in_parallel_is_the_single_stream_byte_for_byte(
    instances: list[Server], ledger_url: str, tmp_path: Path, fmt: str
) -> None:
    a, _ = instances
    url = f"{a.base_url}/datasets/ledger.{fmt}?id__gt=7"
    one, four = tmp_path / f"one.{fmt}", tmp_path / f"four.{fmt}"
    assert rowstream_fetch(a, url, "-o", str(one)).returncode == 0
    done = rowstream_fetch(a, url, "--parallel", "4", "-o", str(four))
    assert done.returncode == 0, done.stderr
    assert f"{ROWS - 7:,} rows, complete" in done.stderr
    assert four.read_bytes() == one.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([one.name, four.name])
    with writing(ledger_url) as moves:
        assert (
            rowstream_fetch(
                a, url.replace("?id__gt=7", ""), "--parallel", "4", "-o", str(four)
            ).returncode
            == 0
        )
    assert moves[0] > 1
    if fmt == "ndjson":
        rows = [json.loads(line) for line in four.read_text().splitlines()]
    else:
        lines = four.read_text().splitlines()[1:]
        rows = [{"id": int(x.split(",")[0]), "amount": int(x.split(",")[1])} for x in lines]
    exactly_once([r["id"] for r in rows], [r["amount"] for r in rows])


def test_fetch_in_parallel_refuses_what_it_cannot_join(
    instances: list[Server], tmp_path: Path
) -> None:
    a, _ = instances
    out = tmp_path / "x.arrows"
    done = rowstream_fetch(
        a, f"{a.base_url}/datasets/ledger.arrows", "--parallel", "2", "-o", str(out)
    )
    assert (
        done.returncode == 1
        and "NDJSON or CSV" in done.stderr
        and len(done.stderr.splitlines()) == 1
    )
    assert not out.exists()


def test_parts_cut_off_resume_in_their_snapshot_and_a_hold_expires(
    ledger_url: str, tmp_path: Path
) -> None:
    settings = {"STREAM_MAX_SECONDS": "0.004", "PARTITION_HOLD_SECONDS": "4"}
    with serving(ledger_url, DATASETS, tmp_path, **settings) as c:
        with Client(c.base_url, c.token(), retries=200, backoff_seconds=0) as client:
            assert metric(c, "rowstream_streams_ended_total", outcome="time limit") == 0
            with writing(ledger_url):
                table = client.to_arrow("ledger", parallel=4)
                out = tmp_path / "cut.ndjson"
                client.download("ledger", out, parallel=4)
            exactly_once(table.column("id").to_pylist(), table.column("amount").to_pylist())
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            exactly_once([r["id"] for r in rows], [r["amount"] for r in rows])
            cut = metric(c, "rowstream_streams_ended_total", outcome="time limit")
            assert cut >= 4  # both reads resumed after cut-offs
            planned = client.partitions("ledger", 2)
        time.sleep(4.5)
        assert run(holds(ledger_url, planned["partition"])) == 0
        expired = httpx.get(planned["parts"][0]["url"])
        assert expired.status_code == 401 and "expired" in expired.text


def test_a_view_whose_key_may_be_null_splits_once_its_nulls_are_filtered(
    instances: list[Server],
) -> None:
    a, _ = instances
    parts = plan(a, "holes", "parts=3&id__isnull=false").json()["parts"]
    ids = [r["id"] for p in parts for r in rows_of(p["url"])]
    assert ids == sorted(i % 1000 for i in range(1, 3001) if i % 1000)


def test_only_a_part_resumes_an_ordinary_signed_link_is_not_widened(
    instances: list[Server],
) -> None:
    a, _ = instances
    made = httpx.post(
        f"{a.base_url}/links", json={"url": "/datasets/ledger.ndjson?limit=5"}, headers=a.headers()
    )
    url = made.json()["url"]
    assert len(rows_of(url)) == 5
    widened = httpx.get(f"{url}&after=[5]")
    assert widened.status_code == 401 and "only a part" in widened.text


def test_a_release_through_another_instance_by_another_caller_changes_nothing(
    instances: list[Server],
) -> None:
    a, b = instances
    planned = plan(a, "ledger", "parts=2", sub="tester").json()
    for server in (a, b):
        other = httpx.delete(
            f"{server.base_url}{planned['release']}", headers=server.headers("mallory")
        )
        assert other.status_code == 404
    assert httpx.get(planned["parts"][1]["url"]).status_code == 200
    assert httpx.delete(f"{b.base_url}{planned['release']}", headers=b.headers()).status_code == 204


def test_one_caller_holds_a_bounded_number_of_partitioned_exports(
    instances: list[Server],
) -> None:
    a, _ = instances
    greedy = a.headers("greedy")
    url = f"{a.base_url}/datasets/ledger/partitions?parts=1"
    held = [httpx.post(url, headers=greedy) for _ in range(4)]
    assert [r.status_code for r in held] == [201] * 4
    refused = httpx.post(url, headers=greedy)
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert httpx.post(url, headers=a.headers("modest")).status_code == 201
    for r in held:
        assert httpx.delete(f"{a.base_url}{r.json()['release']}", headers=greedy).status_code == 204


def test_an_imported_snapshot_must_be_the_exported_one(ledger_url: str) -> None:
    """The digest signed into a part is checked after the import: a snapshot of the same
    name that is another moment (names repeat after a crash restart) is a 410."""
    from app import database, transaction
    from app.errors import Gone
    from app.settings import Settings

    async def check() -> None:
        holder = await asyncpg.connect(ledger_url)
        db = database.create(Settings(), ledger_url)
        await db.connect()
        try:
            await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            name = await holder.fetchval("SELECT pg_export_snapshot()")
            server, digest = await holder.fetchrow(transaction.SERVER_AND_SNAPSHOT)
            right = transaction.Imported(name, server, digest)
            async with transaction.snapshot(db, imported=right) as conn:
                assert await conn.fetchval("SELECT count(*) FROM ledger") == ROWS
            with pytest.raises(Gone):
                wrong = transaction.Imported(name, server, "0" * 16)
                async with transaction.snapshot(db, imported=wrong):
                    pass
        finally:
            await holder.close()
            await db.disconnect()

    run(check())
