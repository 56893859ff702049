"""``rowstream bench``: the standard-vs-streaming comparison, measured.

For each scenario (endpoint x row count) the bench runs a warm-up, then ``--rounds``
rounds in alternating order, and reports median/min/max of: time to response headers,
time to the first body byte, total time, bytes, rows/s, MB/s, the server's peak resident
memory above its idle level and its CPU seconds. Every round also takes the *limit
reference* -- ``COPY (SELECT * FROM messages ORDER BY id LIMIT n) TO STDOUT (FORMAT csv)``
drained by asyncpg to nowhere -- and each scenario's total is reported as a ratio to the
reference taken in the same round (the machine is noisy; ratios from one round are fair).

How memory is measured: the server is a separate process started by the bench. Before
each request the bench reads the server's RSS (``psutil``) as its idle level; while the
request runs a thread samples the RSS every 2 ms; the peak above idle is the maximum
sample minus the idle level. CPU seconds are the server's user+system time across the
request. With ``--url`` (a server the bench did not start) give ``--pid`` to get both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app import auth, database, migrate
from app.settings import Settings
from bench import pooler
from bench.measure import (
    ServerProbe,
    copy_reference,
    database_beside,
    ensure_rows,
    fetch,
    scenarios,
    serve,
)
from bench.report import (
    PICTURED,
    REFERENCE_NAMES,
    Sample,
    machine,
    markdown,
    plots,
    stats,
    summarise,
)


async def _run(
    servers: dict[str, tuple[str, int | None]],
    token: str,
    db_url: str | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Measure every scenario; ``servers`` maps a scenario name to (base URL, pid)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    todo = scenarios(args.rows, formats=args.formats)
    probes = {name: ServerProbe(pid) for name, (_, pid) in servers.items()}
    samples: dict[str, list[Sample]] = {s.label: [] for s in todo}
    # the references each round takes: the plain COPY at every row count, and the CSV
    # format's own COPY wherever a scenario is compared with it
    ref_keys = sorted({("copy", n) for n in args.rows} | {(sc.reference, sc.rows) for sc in todo})
    refs: dict[tuple[str, int], list[Sample]] = {key: [] for key in ref_keys}
    timelines: dict[str, Sample] = {}
    timeline_rows = max(args.rows)
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base,
                    headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"},
                    timeout=600,
                )
            )
            for name, (base, _) in servers.items()
        }
        per_round = len(todo) + (len(ref_keys) if db_url else 0)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            transient=False,
            disable=args.quiet,
        ) as progress:
            task = progress.add_task("warm-up", total=(args.rounds + args.warmup) * per_round)
            for round_no in range(args.warmup + args.rounds):
                warm = round_no < args.warmup
                order = list(todo)
                # alternate the order each round, so neither side always goes first
                if round_no % 2:
                    order.reverse()
                ref_in_round: dict[tuple[str, int], Sample] = {}
                for kind, n in ref_keys:
                    if db_url is None:
                        break
                    progress.update(task, description=f"round {round_no + 1}: {kind} {n:,}")
                    ref_in_round[kind, n] = await copy_reference(db_url, n, kind)
                    progress.advance(task)
                for sc in order:
                    progress.update(task, description=f"round {round_no + 1}: {sc.label}")
                    with_timeline = sc.rows == timeline_rows and sc.name in PICTURED
                    s = await fetch(clients[sc.name], probes[sc.name], sc, with_timeline)
                    if s.rows != sc.rows:
                        raise RuntimeError(f"{sc.label}: got {s.rows} rows, expected {sc.rows}")
                    progress.advance(task)
                    if warm:
                        continue
                    samples[sc.label].append(s)
                    if with_timeline:
                        timelines[sc.label] = s
                if not warm:
                    for key, r in ref_in_round.items():
                        refs[key].append(r)
    results: list[dict[str, Any]] = []
    for kind, n in ref_keys:
        if refs[kind, n]:
            results.append(
                summarise(f"{REFERENCE_NAMES[kind]} {n:,}", refs[kind, n], refs[kind, n])
            )
        for sc in todo:
            if sc.rows == n and sc.reference == kind:
                reference = refs[kind, n] or samples[sc.label]
                results.append(summarise(sc.label, samples[sc.label], reference))
    return {"results": results, "timelines": timelines}


async def _concurrent_round(
    servers: list[tuple[str, ServerProbe]], secret: str, streams: int, rows: int
) -> dict[str, float]:
    """``streams`` full NDJSON streams at once, each with its own token subject, spread
    over ``servers`` in turn (the bench's own client-side spread)."""
    extras: list[dict[str, float | None]] = [{} for _ in servers]
    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(timeout=3600, limits=limits) as client:

        async def one(i: int) -> int:
            token = auth.issue(secret, f"bench-{i}", 3600)
            counted = 0
            headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
            base = servers[i % len(servers)][0]
            async with client.stream(
                "GET", f"{base}/messages/stream", params={"limit": rows}, headers=headers
            ) as response:
                response.raise_for_status()
                async for chunk in response.aiter_raw():
                    counted += chunk.count(b"\n")
            return counted

        with contextlib.ExitStack() as probes:
            for (_, probe), extra in zip(servers, extras, strict=True):
                probes.enter_context(probe.measure(extra))
            started = time.perf_counter()
            counts = await asyncio.gather(*(one(i) for i in range(streams)))
            total = time.perf_counter() - started
    if any(c != rows for c in counts):
        raise RuntimeError(f"a concurrent stream got {min(counts)} rows, expected {rows}")
    return {
        "total_s": total,
        "rows_per_s": streams * rows / total,
        # per instance: the largest peak, its idle level, and the CPU of all of them
        "peak_mib": max(e.get("peak_mib") or 0.0 for e in extras),
        "idle_mib": max(e.get("idle_mib") or 0.0 for e in extras),
        "cpu_s": sum(e.get("cpu_s") or 0.0 for e in extras),
    }


@dataclass(frozen=True)
class Route:
    """How the servers of a ``--concurrent`` run reach PostgreSQL."""

    how: str
    #: a PgBouncer the bench starts with this ``pkt_buf`` (None: no PgBouncer of ours)
    pkt_buf: int | None = None
    #: reach that PgBouncer over its Unix socket instead of TCP on 127.0.0.1
    unix: bool = False
    #: a DATABASE_URL given with ``--pooled-url`` (a PgBouncer someone else runs)
    url: str | None = None

    @property
    def pooled(self) -> bool:
        return self.pkt_buf is not None or self.url is not None


def routes(args: argparse.Namespace) -> list[Route]:
    out = [Route("direct")]
    if args.pooled_url:
        out.append(Route("via PgBouncer", url=args.pooled_url))
    for unix, pkt_buf in dict.fromkeys(args.pgbouncer):  # each once, in the order given
        where = "Unix socket" if unix else "TCP"
        out.append(Route(f"via PgBouncer, pkt_buf {pkt_buf}, {where}", pkt_buf, unix))
    return out


def _pgbouncer_specs(text: str) -> list[tuple[bool, int]]:
    """``--pgbouncer 4096,unix:65536`` → ``[(False, 4096), (True, 65536)]``."""
    specs = []
    for spec in text.split(","):
        size = spec.removeprefix("unix:")
        if not size.isdigit() or not 1024 <= int(size) <= 1 << 24:
            raise argparse.ArgumentTypeError(f"{spec!r}: expected [unix:]PKT_BUF, in bytes")
        if (spec.startswith("unix:"), int(size)) in specs:
            raise argparse.ArgumentTypeError(f"{spec!r} is given twice")
        specs.append((spec.startswith("unix:"), int(size)))
    return specs


@contextmanager
def _route_url(route: Route, url: str, pool_size: int) -> Iterator[str]:
    if route.url is not None:
        yield route.url
    elif route.pkt_buf is None:
        yield url
    else:
        with pooler.running(
            {"rowstream": url}, pkt_buf=route.pkt_buf, unix=route.unix, pool_size=pool_size
        ) as urls:
            yield urls["rowstream"]


def _ratios(rounds: list[dict[str, float]], reference: list[dict[str, float]]) -> dict[str, float]:
    """Total time over the reference's, round by round (same round: same machine state)."""
    return stats([r["total_s"] / d["total_s"] for r, d in zip(rounds, reference, strict=True)])


def run_concurrent(args: argparse.Namespace, settings: Settings) -> None:
    """``--concurrent N``: N full-table streams at once, per table size, ``--rounds`` times.

    Every round runs every configuration (route x instance count), in alternating order,
    each on freshly started servers (and PgBouncer) after a short warm-up stream, so no
    configuration inherits another's pools, heap or server connections. A pooled route's
    ratio to direct is taken round by round against direct with as many instances.
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    sizes = [max(args.rows)] + ([5_000_000] if args.big else [])
    capacity = str(args.concurrent)
    env = {
        "STREAM_CAPACITY": capacity,
        "STREAM_PER_SUBJECT": capacity,
        "POOL_MAX_SIZE": str(args.concurrent + 4),
    }
    results: list[dict[str, Any]] = []
    counts = sorted({1, args.instances})
    # ``--baseline DIR``: each configuration also with the server of that checkout
    builds = [None, *([Path(args.baseline).resolve()] if args.baseline else [])]
    configs = [(route, n, build) for route in routes(args) for n in counts for build in builds]
    with database.database_url(settings) as base_url:
        for size in sizes:
            url = base_url
            if size > 500_000:
                url = asyncio.run(database_beside(base_url, "rowstream_big"))
            migrate.upgrade(url)
            asyncio.run(ensure_rows(url, size))
            measured: dict[tuple[Route, int, Path | None], list[dict[str, float]]] = {
                c: [] for c in configs
            }
            for round_no in range(args.rounds):
                order = configs if round_no % 2 == 0 else configs[::-1]
                for route, instances, build in order:
                    server_env = {**env, "DATABASE_POOLER": "transaction"} if route.pooled else env
                    pool = (args.concurrent + 4) * instances
                    with contextlib.ExitStack() as stack:
                        server_url = stack.enter_context(_route_url(route, url, pool))
                        servers = [
                            (base, ServerProbe(pid))
                            for base, pid in (
                                stack.enter_context(
                                    serve(server_url, secret, cwd=build, extra_env=server_env)
                                )
                                for _ in range(instances)
                            )
                        ]
                        asyncio.run(_concurrent_round(servers, secret, args.concurrent, 1000))
                        measured[route, instances, build].append(
                            asyncio.run(_concurrent_round(servers, secret, args.concurrent, size))
                        )
            for (route, instances, build), rounds in measured.items():
                label = "instance" if instances == 1 else "instances"
                result: dict[str, Any] = {
                    "scenario": f"{args.concurrent} streams x {size:,} rows, "
                    f"{instances} {label}, {route.how}{', baseline build' if build else ''}",
                    "rounds": len(rounds),
                    **{key: stats([r[key] for r in rounds]) for key in rounds[0]},
                }
                direct = measured[configs[0][0], instances, build]
                result["ratio_to_direct"] = _ratios(rounds, direct)
                if build is None and len(builds) > 1:
                    result["ratio_to_baseline"] = _ratios(
                        rounds, measured[route, instances, builds[1]]
                    )
                results.append(result)
    lines = [
        "| scenario | total s | aggregate rows/s | x direct, same round "
        "| x baseline build, same round "
        "| peak MiB above idle per instance (idle) | server CPU s, all instances |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(r: dict[str, Any], key: str) -> str:
        if key not in r:
            return "-"
        return f"{r[key]['median']:.2f} ({r[key]['min']:.2f}-{r[key]['max']:.2f})"

    for r in results:
        lines.append(
            f"| {r['scenario']} | {r['total_s']['median']:.2f} "
            f"| {r['rows_per_s']['median']:,.0f} "
            f"| {ratio(r, 'ratio_to_direct')} | {ratio(r, 'ratio_to_baseline')} "
            f"| {r['peak_mib']['median']:.1f} ({r['idle_mib']['median']:.0f}) "
            f"| {r['cpu_s']['median']:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    report = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["rowstream", *sys.argv[1:]]),
        "results": results,
    }
    (out / "concurrent.json").write_text(json.dumps(report, indent=1))
    (out / "concurrent.md").write_text(table)
    print(table)


def run(args: argparse.Namespace, settings: Settings) -> None:
    if args.consistency:
        from bench import consistency as bench_consistency

        bench_consistency.run(args, settings)
        return
    if args.parallel:
        from bench import parallel as bench_parallel

        bench_parallel.run(args, settings)
        return
    if args.datasets:
        from bench import dataset_path as bench_datasets

        args.command = " ".join(["rowstream", *sys.argv[1:]])
        bench_datasets.run(args, settings)
        return
    if args.concurrent:
        run_concurrent(args, settings)
        return
    if args.clients:
        from bench import clients as bench_clients

        bench_clients.run(args, settings)
        return
    if args.hostile:
        from bench import hostile as bench_hostile

        bench_hostile.run(args, settings)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.rows, args.rounds, args.warmup = [1_000, 5_000], 1, 0
    if args.big:
        args.rows = sorted({*args.rows, 5_000_000})
    if args.url:
        if not args.token:
            raise SystemExit("rowstream bench: --url needs --token")
        db_url = settings.database_url
        if not db_url:
            # every ratio is to plain COPY from the same database, taken in the same round:
            # without one, each scenario would be divided by itself
            raise SystemExit(
                "rowstream bench: --url needs DATABASE_URL (the server's database, for the "
                "COPY reference each figure is a ratio to)"
            )
        every = {sc.name: (args.url, args.pid) for sc in scenarios(args.rows, args.formats)}
        measured = asyncio.run(_run(every, args.token, db_url, args))
    else:
        secret = secrets.token_urlsafe(48)
        token = auth.issue(secret, "bench", 24 * 3600)
        with database.database_url(settings) as url:
            if args.big:
                # 5,000,000 rows live in their own database, so the regular 500,000-row table
                # stays as it is. Row i is the same in both: smaller limits read the same data.
                url = asyncio.run(database_beside(url, "rowstream_big"))
            migrate.upgrade(url)
            asyncio.run(ensure_rows(url, max(args.rows)))
            # One server process per scenario kind: each one's memory is measured from its
            # own idle level, untouched by what another kind of request left in the heap.
            with contextlib.ExitStack() as stack:
                servers = {
                    name: stack.enter_context(serve(url, secret))
                    for name in dict.fromkeys(sc.name for sc in scenarios(args.rows, args.formats))
                }
                measured = asyncio.run(_run(servers, token, url, args))
    results = measured["results"]
    report = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "results": results,
        "timelines": {k: v.timeline for k, v in measured["timelines"].items()},
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    table = markdown(results)
    (out / "results.md").write_text(table)
    images = plots(results, measured["timelines"], out)
    print(table)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, " + ", ".join(map(str, images)))


def add_parser(sub: Any) -> None:
    b = sub.add_parser("bench", help="measure standard vs streaming against the COPY limit")
    b.add_argument(
        "--rows",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10_000, 100_000, 500_000],
        help="comma-separated row counts",
    )
    b.add_argument("--rounds", type=int, default=5)
    b.add_argument("--warmup", type=int, default=1)
    b.add_argument("--big", action="store_true", help="add 5,000,000 rows (seeds them)")
    b.add_argument("--quick", action="store_true", help="tiny run (used by the test suite)")
    b.add_argument("--url", help="measure a running server instead of starting one")
    b.add_argument("--token", help="bearer token for --url")
    b.add_argument("--pid", type=int, help="server pid for --url, to measure its memory")
    b.add_argument("--out", default="bench-results", help="directory for JSON, Markdown, PNG")
    b.add_argument("--quiet", action="store_true", help="no progress display")
    b.add_argument(
        "--instances",
        type=int,
        default=1,
        help="with --concurrent: also spread the streams over this many servers; with "
        "--parallel: spread the parts over this many servers (each part's link sent to the "
        "next in turn)",
    )
    b.add_argument(
        "--pooled-url",
        help="with --concurrent: also run through this DATABASE_URL "
        "(a PgBouncer in transaction mode, DATABASE_POOLER=transaction)",
    )
    b.add_argument(
        "--pgbouncer",
        type=_pgbouncer_specs,
        action="extend",
        default=[],
        metavar="[unix:]PKT_BUF,...",
        help="with --concurrent: also run through a PgBouncer the bench starts "
        "(transaction mode), once per pkt_buf given, over TCP or with unix: its Unix "
        f"socket (recommended: {pooler.PKT_BUF}; PgBouncer's default: {pooler.DEFAULT_PKT_BUF})",
    )
    b.add_argument(
        "--concurrent",
        type=int,
        default=0,
        metavar="N",
        help="instead: N full-table streams at once (largest --rows; with --big "
        "also 5,000,000): aggregate rows/s and peak server memory",
    )
    b.add_argument(
        "--no-formats",
        dest="formats",
        action="store_false",
        help="only the standard/streaming/text comparison, no other formats",
    )
    b.add_argument(
        "--datasets",
        action="store_true",
        help="instead: the dataset path (fresh server per round) against plain COPY "
        "(bench/dataset_path.py); with --big: 5,000,000 rows",
    )
    b.add_argument(
        "--parallel",
        action="store_true",
        help="instead: one export in 1, 2 and 4 parts of one snapshot against one stream, "
        "each format, curl as the client (bench/parallel.py); --wide: the 20-column table",
    )
    b.add_argument(
        "--consistency",
        type=int,
        default=0,
        metavar="N",
        help="instead: N partitioned reads (4 parts) by ConnectorX and by rowstream while a "
        "writer moves amounts; how many were not one moment (bench/consistency.py)",
    )
    b.add_argument(
        "--parallel-parts",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 2, 4],
        help="with --parallel: part counts, the first the reference (default 1,2,4)",
    )
    b.add_argument(
        "--parallel-formats",
        type=lambda s: s.split(","),
        default=["ndjson", "csv", "arrow", "parquet"],
        help="with --parallel: formats (default ndjson,csv,arrow,parquet)",
    )
    b.add_argument(
        "--parallel-sink",
        choices=("shm", "null"),
        default="shm",
        help="with --parallel: bodies to /dev/shm, counted (default), or to /dev/null",
    )
    b.add_argument(
        "--parallel-cutoff",
        type=float,
        metavar="SECONDS",
        help="with --parallel: also fetch --parallel 4 from a server with this "
        "STREAM_MAX_SECONDS and check every id once, in order",
    )
    b.add_argument(
        "--datasets-rows", type=int, default=500_000, help="with --datasets or --parallel"
    )
    b.add_argument("--wide", action="store_true", help="with --datasets: add a 20-column table")
    b.add_argument(
        "--database-url", help="with --datasets or --parallel: any PostgreSQL (default: embedded)"
    )
    b.add_argument(
        "--client",
        choices=("curl", "httpx"),
        default="curl",
        help="with --datasets: who reads the streams (curl: the server's figure, not a "
        "Python client's CPU)",
    )
    b.add_argument(
        "--rendering",
        action="store_true",
        help="with --datasets: also NDJSON and CSV rendered by PostgreSQL "
        "(TEXT_RENDERING=database), in the same rounds; with --parallel: the servers "
        "run TEXT_RENDERING=database",
    )
    b.add_argument(
        "--first-bytes",
        action="store_true",
        help="with --datasets: each format as the first request of a fresh process, and "
        "that process's idle RSS",
    )
    b.add_argument(
        "--hostile",
        action="store_true",
        help="what hostile and slow clients cost: the standard route's memory, idle "
        "connections, a huge header (bench/hostile.py); compare with --baseline",
    )
    b.add_argument(
        "--hostile-cases",
        type=lambda text: text.split(","),
        default=["memory", "connections", "slow-bodies"],
        help="with --hostile: which cases, comma-separated (memory,connections,slow-bodies)",
    )
    b.add_argument(
        "--clients",
        action="store_true",
        help="instead: the largest --rows into pandas and polars DataFrames, through "
        "rowstream and straight from PostgreSQL (read_sql, ADBC, ConnectorX): "
        "bench/clients.py",
    )
    b.add_argument(
        "--baseline",
        metavar="DIR",
        help="with --datasets, --concurrent or --hostile: also measure the server of the "
        "checkout in DIR "
        "(on messages; --concurrent: every configuration, ratios to it)",
    )
    b.set_defaults(func=run)
