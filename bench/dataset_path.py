"""``rowstream bench --datasets``: a declared dataset through the generic path, against
PostgreSQL's plain ``COPY`` of the same table measured in the same round.

Each round starts a fresh server process (so the first stream's first byte is that of a
fresh process, and memory is measured from its idle level), then streams the whole
dataset as NDJSON, CSV, Arrow and Parquet, and takes two references on a direct connection:
``COPY (SELECT * FROM t ORDER BY key) TO STDOUT (FORMAT csv)`` (plain) and the very
``COPY`` statement the CSV format runs. ``--wide`` adds a 20-column table of mixed types;
``--baseline DIR`` also measures the server of another checkout (e.g. the build before
datasets existed) on ``messages`` in the same rounds, to compare the two paths.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from app import auth, database, datasets, demo, introspection, migrate, quoting, sql, transaction
from app.settings import Settings
from bench import curl
from bench import measure as bench
from bench.report import Sample, machine
from rowstream import media

#: The 20-column table of ``--wide``: every common type, row i a pure function of i.
WIDE_SQL = """
CREATE TABLE IF NOT EXISTS bench_wide (
    id bigint PRIMARY KEY, i4 integer NOT NULL, i8 bigint, i2 smallint, amount numeric(12,2),
    ratio double precision, score real, flag boolean NOT NULL, label text NOT NULL,
    code varchar(40), ref uuid, day date, at timestamptz NOT NULL, local timestamp,
    attrs jsonb, tags integer[], note text, big numeric, seen boolean, updated timestamptz
)
"""
WIDE_SEED = """
INSERT INTO bench_wide
SELECT i, (i * 7919) % 100000, i * 1000003, (i % 30000)::smallint, (i % 100000) / 100.0,
       i / 7.0, (i % 1000) / 3.0, i % 2 = 0, 'label ' || (i % 1000), 'c' || (i % 97),
       md5(i::text)::uuid, date '2020-01-01' + (i % 2000)::int,
       timestamptz '2024-01-01 00:00+00' + i * interval '1 second',
       timestamp '2024-01-01' + i * interval '1 minute',
       jsonb_build_object('i', i % 100, 'k', 'v'), ARRAY[i % 10, i % 7],
       CASE WHEN i % 5 = 0 THEN NULL ELSE repeat('n', (i % 40)::int) END,
       (i::numeric * 1.0001), CASE WHEN i % 3 = 0 THEN NULL ELSE i % 3 = 1 END,
       timestamptz '2024-06-01 00:00+00' + (i % 86400) * interval '1 second'
FROM generate_series(1::bigint, $1::bigint) AS i
"""

#: The bench's datasets and their tables.
TABLES = {"messages": "messages", "wide": "bench_wide"}

#: What each round streams: a name, the media type and the ``Content-Encoding`` asked for.
STREAMS: dict[str, tuple[str, str | None]] = {
    "ndjson": (media.NDJSON, None),
    "csv": (media.CSV, None),
    "arrow": (media.ARROW, None),
    "parquet": (media.PARQUET, None),
    "ndjson zstd": (media.NDJSON, "zstd"),
    "ndjson gzip": (media.NDJSON, "gzip"),
}
#: With ``--rendering``: what a server with ``TEXT_RENDERING=database`` streams as well.
DATABASE_RENDERED = ("ndjson", "csv", "ndjson zstd")


async def _prepare(url: str, rows: int, wide: bool) -> None:
    await prepare_one(url, "messages", rows)
    if wide:
        await prepare_one(url, "wide", rows)


async def prepare_one(url: str, name: str, rows: int) -> None:
    """Only ``name``'s table, with ``rows`` rows (``messages``: at least that many)."""
    conn = await asyncpg.connect(url, command_timeout=None)
    try:
        if name == "messages":  # migrated by the caller
            if await demo.count(conn) < rows:
                await demo.seed(conn, rows)
            return
        await conn.execute(WIDE_SQL)
        if await conn.fetchval("SELECT count(*) FROM bench_wide") != rows:
            await conn.execute("TRUNCATE bench_wide")
            await conn.execute(WIDE_SEED, rows)
            await conn.execute("VACUUM (ANALYZE) bench_wide")
    finally:
        await conn.close()


async def reference(url: str, name: str, rows: int, own: bool) -> Sample:
    """Plain ``COPY (SELECT * … ORDER BY key)``, or (``own``) the CSV format's statement."""
    conn = await asyncpg.connect(url)
    try:
        dataset = (await introspection.describe_all(conn, _declared([name])))[name]
        size, started = 0, time.perf_counter()

        async def sink(data: bytes) -> None:
            nonlocal size
            size += len(data)

        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(transaction.TRANSACTION_SETTINGS)
            if own:
                query = sql.as_csv(dataset, sql.Selection(dataset.column_names, limit=rows))
                await conn.copy_from_query(query.sql, *query.args, output=sink, **sql.CSV_COPY)
            else:
                order = ", ".join(map(quoting.ident, dataset.key))
                await conn.copy_from_query(
                    f"SELECT * FROM {dataset.source} ORDER BY {order} LIMIT $1",
                    rows,
                    output=sink,
                    format="csv",
                )
        return Sample(0.0, 0.0, time.perf_counter() - started, size, rows)
    finally:
        await conn.close()


def _declared(names: list[str]) -> datasets.DatasetsFile:
    return datasets.DatasetsFile.model_validate(
        {"datasets": {n: {"table": TABLES[n]} for n in names}}
    )


@contextlib.contextmanager
def fresh_server(url: str, secret: str, cwd: Path | None, **env: str) -> Iterator[tuple[str, int]]:
    """A server process started for this round, answering ``/healthz`` (no request that
    would warm it), given the half second a supervisor's first probe would give it."""
    with bench.serve(url, secret, cwd=cwd, ready="/healthz", extra_env=env) as (base, pid):
        time.sleep(0.5)
        assert pid is not None
        yield base, pid


def _scenario(label: str, path: str, fmt: str, rows: int) -> bench.Scenario:
    """The format travels in ``Accept``, which both builds understand."""
    accept, encoding = STREAMS[fmt]
    count = b"" if fmt in ("arrow", "parquet") else b"\n"
    headers = (("Accept", accept), ("Accept-Encoding", encoding or "identity"))
    return bench.Scenario(
        label, path, rows, headers, count, extra_lines=1 if fmt == "csv" else 0, encoding=encoding
    )


async def _round(
    url: str,
    secret: str,
    names: list[str],
    rows: int,
    files: Path,
    baseline: Path | None,
    options: argparse.Namespace,
) -> dict[str, Sample]:
    token = auth.issue(secret, "bench", 3600)
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    out: dict[str, Sample] = {}
    files_env = {"DATASETS_FILE": str(files)}
    # (label prefix, checkout, path template, environment, formats, datasets)
    builds: list[tuple[str, Path | None, str, dict[str, str], tuple[str, ...], list[str]]] = [
        ("", None, "/datasets/{name}/stream", files_env, tuple(STREAMS), names)
    ]
    if options.rendering:
        env = {**files_env, "TEXT_RENDERING": "database"}
        builds.append(("database-rendered ", None, builds[0][2], env, DATABASE_RENDERED, names))
    if baseline is not None:
        base_formats = ("ndjson", "csv", "arrow", "parquet")
        builds.append(("baseline ", baseline, "/messages/stream", {}, base_formats, ["messages"]))
    for prefix, cwd, template, env, fmts, datasets_ in builds:
        with fresh_server(url, secret, cwd, **env) as (base, pid):
            probe = bench.ServerProbe(pid)
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=900) as client:
                for name in datasets_:
                    for fmt in fmts:
                        label = f"{prefix}{name} {fmt}"
                        sc = _scenario(label, template.format(name=name), fmt, rows)
                        if options.client == "curl":
                            sample = curl.fetch(base, token, probe, sc)
                        else:
                            sample = await bench.fetch(client, probe, sc, False)
                        if sample.rows != rows:
                            raise RuntimeError(f"{label}: {sample.rows} rows, expected {rows}")
                        out[label] = sample
    if options.first_bytes:
        out.update(_first_bytes(url, secret, names[0], files_env, token))
    for name in names:
        out[f"{name} plain COPY csv"] = await reference(url, name, rows, own=False)
        out[f"{name} COPY of the csv format"] = await reference(url, name, rows, own=True)
    return out


def _first_bytes(
    url: str, secret: str, name: str, env: dict[str, str], token: str
) -> dict[str, Sample]:
    """Each format as the first request of a fresh process (1,000 rows, curl), and the
    process's RSS once started (after its warm-up), before that request."""
    out: dict[str, Sample] = {}
    for fmt in ("ndjson", "csv", "arrow", "parquet"):
        with fresh_server(url, secret, None, **env) as (base, pid):
            probe = bench.ServerProbe(pid)
            sc = _scenario(f"first {fmt}", f"/datasets/{name}/stream", fmt, 1000)
            out[f"first {fmt}"] = curl.fetch(base, token, probe, sc)
    return out


def run(args: argparse.Namespace, settings: Settings) -> None:
    names = ["messages", *(["wide"] if args.wide else [])]
    rows = 5_000_000 if args.big else args.datasets_rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = (out / "datasets.toml").resolve()
    files.write_text("".join(f'[datasets.{n}]\ntable = "{TABLES[n]}"\n\n' for n in names))
    secret = os.urandom(24).hex()
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    baseline = Path(args.baseline).resolve() if args.baseline else None
    rounds: list[dict[str, Sample]] = []
    with database.database_url(settings) as url:
        migrate.upgrade(url)  # the bench's own tables: asked for by running the bench
        asyncio.run(_prepare(url, rows, args.wide))
        for number in range(args.rounds + 1):
            measured = asyncio.run(_round(url, secret, names, rows, files, baseline, args))
            if number:  # the first round warms PostgreSQL's caches
                rounds.append(measured)
            if not args.quiet:
                print(
                    f"round {number}: "
                    + ", ".join(f"{k} {v.total_s:.2f}s" for k, v in measured.items()),
                    flush=True,
                )
    report = summarise(rounds, names, baseline is not None)
    report.update(rows=rows, rounds=len(rounds), machine=machine(), command=args.command)
    (out / "datasets.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report["figures"], indent=1))


def summarise(rounds: list[dict[str, Sample]], names: list[str], baseline: bool) -> dict[str, Any]:
    """Medians over rounds of each figure, ratios taken within each round."""

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    figures: dict[str, Any] = {}
    for name in names:
        plain = [r[f"{name} plain COPY csv"].total_s for r in rounds]
        own = [r[f"{name} COPY of the csv format"].total_s for r in rounds]
        figures[f"{name} plain COPY csv s"] = median(plain)
        figures[f"{name} csv statement x plain COPY"] = median(
            [o / p for o, p in zip(own, plain, strict=True)]
        )
        for fmt in STREAMS:
            samples = [r[f"{name} {fmt}"] for r in rounds]
            figures[f"{name} {fmt} s"] = median([s.total_s for s in samples])
            figures[f"{name} {fmt} x plain COPY"] = median(
                [s.total_s / p for s, p in zip(samples, plain, strict=True)]
            )
            figures[f"{name} {fmt} peak MiB above idle"] = median(
                [s.peak_mib or 0.0 for s in samples]
            )
        for fmt in DATABASE_RENDERED if f"database-rendered {name} ndjson" in rounds[0] else ():
            samples = [r[f"database-rendered {name} {fmt}"] for r in rounds]
            figures[f"{name} {fmt} database-rendered x plain COPY"] = median(
                [s.total_s / p for s, p in zip(samples, plain, strict=True)]
            )
        first = [r[f"{name} ndjson"].first_byte_s * 1000 for r in rounds]
        figures[
            f"{name} ndjson first byte ms" + (" (fresh process)" if name == names[0] else "")
        ] = median(first)
    for fmt in ("ndjson", "csv", "arrow", "parquet") if "first ndjson" in rounds[0] else ():
        firsts = [r[f"first {fmt}"] for r in rounds]
        figures[f"first {fmt} byte ms (first request of a fresh process)"] = median(
            [s.first_byte_s * 1000 for s in firsts]
        )
        figures[f"idle MiB before the first {fmt} request"] = median(
            [s.idle_mib or 0.0 for s in firsts]
        )
    if baseline:
        for fmt in ("ndjson", "csv", "arrow", "parquet"):
            figures[f"messages {fmt} x baseline build"] = median(
                [
                    r[f"messages {fmt}"].total_s / r[f"baseline messages {fmt}"].total_s
                    for r in rounds
                ]
            )
        figures["baseline first byte ms (fresh process)"] = median(
            [r["baseline messages ndjson"].first_byte_s * 1000 for r in rounds]
        )
    return {"figures": figures}
