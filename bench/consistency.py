"""``rowstream bench --consistency N``: what a partitioned read returns while the table
changes, ConnectorX's against rowstream's (the reason partitions exist here).

A ledger of ``--datasets-rows`` rows, each with the same amount, in a database of the
bench's own; a writer moves 1 from the first row to the last, one transaction a move, the
whole time, so the total never changes. Each of N rounds reads the table in 4 parts twice:
ConnectorX (``partition_on="id", partition_num=4``: four queries on four connections) and
``Client.to_arrow(parallel=4)`` (four parts of one snapshot, ``partitions.py``). A read is
right when it has every id once and the total; the bench counts the reads that are not,
and by how much their totals are off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from app import auth, database, quoting
from app.settings import Settings
from bench import dataset_path
from bench import measure as bench
from bench.clients import connectorx_url
from bench.report import machine
from rowstream.client import Client

AMOUNT = 100


async def _ledger(url: str, rows: int) -> None:
    conn = await asyncpg.connect(url, command_timeout=None)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_ledger "
            "(id integer PRIMARY KEY, amount bigint NOT NULL)"
        )
        await conn.execute("TRUNCATE bench_ledger")
        await conn.execute(
            f"INSERT INTO bench_ledger SELECT i, {AMOUNT} FROM generate_series(1, $1) AS i", rows
        )
        await conn.execute("VACUUM (ANALYZE) bench_ledger")
    finally:
        await conn.close()


@contextmanager
def moving(url: str, table: str, last: int) -> Iterator[list[int]]:
    """A writer moving 1 from row 1 of ``table`` (``id``, ``amount``) to row ``last``, one
    transaction a move, for the block (begun when the block starts: one move made);
    yields [moves made]. The total never changes: a read of one moment sees it."""
    stop, moves = threading.Event(), [0]
    name = quoting.ident(table)

    async def write() -> None:
        conn = await asyncpg.connect(url)
        try:
            while not stop.is_set():
                async with conn.transaction():
                    await conn.execute(f"UPDATE {name} SET amount = amount - 1 WHERE id = 1")
                    await conn.execute(f"UPDATE {name} SET amount = amount + 1 WHERE id = $1", last)
                moves[0] += 1
        finally:
            await conn.close()

    thread = threading.Thread(target=lambda: asyncio.run(write()))
    thread.start()
    try:
        while not moves[0] and thread.is_alive():
            time.sleep(0.01)
        yield moves
    finally:
        stop.set()
        thread.join()


def _check(table: Any, rows: int) -> dict[str, Any]:
    ids = table.column("id").to_pylist()
    total = sum(table.column("amount").to_pylist())
    return {
        "rows": len(ids),
        "distinct": len(set(ids)),
        "total off by": total - rows * AMOUNT,
        "right": len(ids) == rows == len(set(ids)) and total == rows * AMOUNT,
    }


def run(args: argparse.Namespace, settings: Settings) -> None:
    import connectorx as cx

    rows, reads = args.datasets_rows, args.consistency
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = (out / "datasets.toml").resolve()
    files.write_text('[datasets.ledger]\ntable = "bench_ledger"\n')
    secret = os.urandom(24).hex()
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    results: dict[str, list[dict[str, Any]]] = {"ConnectorX": [], "rowstream": []}
    with database.database_url(settings) as admin:
        url = asyncio.run(bench.database_beside(admin, "rowstream_ledger"))
        asyncio.run(_ledger(url, rows))
        cx_url = connectorx_url(url)
        with dataset_path.fresh_server(url, secret, None, DATASETS_FILE=str(files)) as (base, _):
            client = Client(base, auth.issue(secret, "bench", 3600))
            ways: dict[str, Callable[[], Any]] = {
                "ConnectorX": lambda: cx.read_sql(
                    cx_url,
                    "SELECT id, amount FROM bench_ledger",
                    partition_on="id",
                    partition_num=4,
                    return_type="arrow",
                ),
                "rowstream": lambda: client.to_arrow("ledger", parallel=4),
            }
            with client, moving(url, "bench_ledger", rows) as moves:
                for _ in range(reads):
                    for way, read in ways.items():
                        started = time.perf_counter()
                        table = read()
                        seconds = time.perf_counter() - started
                        results[way].append({**_check(table, rows), "seconds": seconds})
    report: dict[str, Any] = {
        "rows": rows,
        "reads": reads,
        "moves": moves[0],
        "machine": machine(),
        "summary": {
            way: {
                "wrong reads": sum(not r["right"] for r in rs),
                "largest total error": max(abs(r["total off by"]) for r in rs),
                "median s": round(statistics.median(r["seconds"] for r in rs), 4),
            }
            for way, rs in results.items()
        },
        "raw": results,
    }
    (out / "consistency.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
