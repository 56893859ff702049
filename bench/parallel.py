"""``rowstream bench --parallel``: one export as 1, 2 and 4 parts of one snapshot
(``POST /datasets/{name}/partitions``), each format, against one stream, in the same rounds.

Each round starts a fresh server (``--instances N``: N of them, the parts sent to each in
turn). For K parts the clock runs from the ``POST`` (the plan: the snapshot held and the
ranges found) until the last of K curl processes has read its part; one stream is the
ordinary route read by one curl. curl is the client throughout, the ``POST`` included (a
Python client on two shared cores would measure its own CPU). Bodies go to ``/dev/shm`` and are
counted afterwards, off the clock; with ``--parallel-sink null`` (tables larger than
memory) they go to ``/dev/null`` and only their bytes are recorded. ``--parallel-cutoff S``
adds the check a cut-off needs: ``rowstream fetch --parallel 4`` of a server whose
``STREAM_MAX_SECONDS`` is S, every id then read back once, in order, none missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from app import auth, database, migrate
from app.settings import Settings
from bench import dataset_path
from bench import measure as bench
from bench.curl import SCRATCH
from bench.report import machine

FORMATS = ("ndjson", "csv", "arrow", "parquet")
SUFFIX = {"ndjson": "ndjson", "csv": "csv", "arrow": "arrows", "parquet": "parquet"}


def _curl(url: str, out: str, token: str | None) -> list[str]:
    command = ["curl", "-sS", "--fail", "-o", out, "-w", "%{size_download}"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    return [*command, url]


def _rows(path: Path, fmt: str) -> int:
    body = path.read_bytes()
    if fmt in ("arrow", "parquet"):
        return bench.file_rows(body)
    return body.count(b"\n") - (1 if fmt == "csv" else 0)


def _measure(
    bases: list[str],
    token: str,
    name: str,
    rows: int,
    fmt: str,
    parts: int,
    sink: str,
    probe: bench.ServerProbe,
) -> dict[str, Any]:
    """One export of ``name``'s first ``rows`` ids as ``fmt`` in ``parts`` parts (1: the
    ordinary stream), planned on the first of ``bases`` and its parts spread over them in
    turn (a load balancer's work). A filter, not ``limit=``: a partitioned export reads a
    selection whole."""
    base = bases[0]
    extra: dict[str, float | None] = {}
    outputs = [
        "/dev/null" if sink == "null" else str(SCRATCH / f"rowstream-par-{os.getpid()}-{i}")
        for i in range(parts)
    ]
    plan_s = 0.0
    with probe.measure(extra):
        started = time.perf_counter()
        if parts == 1:
            url = f"{base}/datasets/{name}.{SUFFIX[fmt]}?id__lte={rows}"
            commands = [_curl(url, outputs[0], token)]
            planned = None
        else:
            query = urlencode({"parts": parts, "format": fmt, "id__lte": rows})
            planning = subprocess.run(
                [
                    *("curl", "-sS", "--fail-with-body", "-X", "POST"),
                    *("-H", f"Authorization: Bearer {token}"),
                    f"{base}/datasets/{name}/partitions?{query}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if planning.returncode:
                raise RuntimeError(f"partitions: {planning.stdout or planning.stderr}")
            planned = json.loads(planning.stdout)
            plan_s = time.perf_counter() - started
            links = [  # each part to the next instance in turn, as a load balancer would
                p["url"].replace(base, bases[i % len(bases)], 1)
                for i, p in enumerate(planned["parts"])
            ]
            if len(bases) > 1 and not all(u.startswith(base) for u in links[:1]):
                raise RuntimeError(f"a part's link is not on {base}: {links[0][:60]}")
            commands = [_curl(u, out, None) for u, out in zip(links, outputs, strict=True)]
        running = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in commands]
        sizes = [int(p.communicate()[0] or 0) for p in running]
        total_s = time.perf_counter() - started
    if any(p.returncode for p in running):
        raise RuntimeError(f"{name} {fmt} in {parts}: curl failed")
    if planned is not None:
        httpx.delete(f"{base}{planned['release']}", headers={"Authorization": f"Bearer {token}"})
    counted: int | None = None
    if sink != "null":
        counted = sum(_rows(Path(o), fmt) for o in outputs)
        for o in outputs:
            Path(o).unlink(missing_ok=True)
    return {
        "total_s": total_s,
        "plan_s": plan_s,
        "bytes": sum(sizes),
        "rows": counted,
        "parts": len(commands),
        "peak_mib": extra.get("peak_mib"),
        "cpu_s": extra.get("cpu_s"),
    }


def _cutoff(
    url: str, secret: str, files: Path, name: str, seconds: float, rows: int
) -> dict[str, Any]:
    """``rowstream fetch --parallel 4`` (NDJSON, the ids) from a server that
    cuts every stream after ``seconds``; then every id read back: once each, in order."""
    token = auth.issue(secret, "bench", 24 * 3600)
    env = {"DATASETS_FILE": str(files), "STREAM_MAX_SECONDS": str(seconds)}
    out = (
        Path(os.environ.get("ROWSTREAM_BENCHSCRATCH", "/tmp"))
        / f"rowstream-cutoff-{os.getpid()}.ndjson"
    )
    with dataset_path.fresh_server(url, secret, None, **env) as (base, pid):
        probe = bench.ServerProbe(pid)
        extra: dict[str, float | None] = {}
        with probe.measure(extra):
            started = time.perf_counter()
            done = subprocess.run(
                [
                    *(sys.executable, "-m", "app.cli", "fetch", "--quiet", "--retries", "1000"),
                    f"{base}/datasets/{name}.ndjson?fields=id&id__lte={rows}",
                    *("--parallel", "4", "-o", str(out), "--token", token),
                ],
                capture_output=True,
                text=True,
            )
            total_s = time.perf_counter() - started
        cut = bench_metric(base, "rowstream_streams_ended_total", 'outcome="time limit"')
    try:
        if done.returncode:
            raise RuntimeError(f"fetch --parallel failed: {done.stderr.strip()}")
        expected, lines = 1, 0
        with out.open("rb") as f:
            for line in f:
                key = int(line[6:-2])  # {"id":N}
                if key != expected:
                    raise RuntimeError(f"line {lines + 1}: id {key}, expected {expected}")
                expected, lines = expected + 1, lines + 1
        if lines != rows:
            raise RuntimeError(f"{lines} rows, expected {rows}")
        size = out.stat().st_size
    finally:
        out.unlink(missing_ok=True)
    return {
        "total_s": total_s,
        "rows": lines,
        "bytes": size,
        "cut_offs": cut,
        "peak_mib": extra.get("peak_mib"),
        "stream_max_seconds": seconds,
    }


def bench_metric(base: str, name: str, labels: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"{name}{{") and labels in line
    )


def run(args: argparse.Namespace, settings: Settings) -> None:
    name = "wide" if args.wide else "messages"
    rows = args.datasets_rows
    parts_list = args.parallel_parts
    formats = args.parallel_formats
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = (out / "datasets.toml").resolve()
    files.write_text(f'[datasets.{name}]\ntable = "{dataset_path.TABLES[name]}"\n')
    secret = os.urandom(24).hex()
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    rounds: list[dict[str, dict[str, Any]]] = []
    report: dict[str, Any] = {}
    with database.database_url(settings) as url:
        if name == "messages":
            migrate.upgrade(url)  # the bench's own table: asked for by running the bench
        asyncio.run(dataset_path.prepare_one(url, name, rows))
        token = auth.issue(secret, "bench", 24 * 3600)
        for number in range(args.rounds + 1):
            measured: dict[str, dict[str, Any]] = {}
            env = {"DATASETS_FILE": str(files)}
            if args.rendering:  # PostgreSQL renders NDJSON and CSV, one core per backend
                env["TEXT_RENDERING"] = "database"
            with contextlib.ExitStack() as servers:
                started = [
                    servers.enter_context(dataset_path.fresh_server(url, secret, None, **env))
                    for _ in range(args.instances)
                ]
                bases = [base for base, _ in started]
                probe = bench.ServerProbe(started[0][1])
                for fmt in formats:
                    for parts in parts_list:
                        sample = _measure(
                            bases, token, name, rows, fmt, parts, args.parallel_sink, probe
                        )
                        if sample["rows"] is not None and sample["rows"] != rows:
                            raise RuntimeError(f"{fmt} x{parts}: {sample['rows']} rows of {rows}")
                        measured[f"{fmt} x{parts}"] = sample
            reference = asyncio.run(dataset_path.reference(url, name, rows, own=False))
            measured["plain COPY csv"] = {"total_s": reference.total_s}
            if number or args.rounds == 0:
                rounds.append(measured)
            if not args.quiet:
                shown = ", ".join(f"{k} {v['total_s']:.2f}s" for k, v in measured.items())
                print(f"round {number}: {shown}", flush=True)
        if args.parallel_cutoff:
            report["cut-off"] = _cutoff(url, secret, files, name, args.parallel_cutoff, rows)
            print(json.dumps(report["cut-off"]), flush=True)
    report.update(summarise(rounds, formats, parts_list))
    report.update(rows=rows, dataset=name, rounds=len(rounds), instances=args.instances)
    report.update(text_rendering="database" if args.rendering else "server", machine=machine())
    report["command"] = " ".join(["rowstream", *sys.argv[1:]])
    report["raw"] = rounds
    (out / "parallel.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "raw"}, indent=1))


def summarise(
    rounds: list[dict[str, dict[str, Any]]], formats: list[str], parts_list: list[int]
) -> dict[str, Any]:
    """Medians over rounds; each speed-up is taken within its round (K parts against one
    stream of the same format)."""

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    figures: dict[str, Any] = {
        "plain COPY csv s": median([r["plain COPY csv"]["total_s"] for r in rounds])
    }
    for fmt in formats:
        for parts in parts_list:
            key = f"{fmt} x{parts}"
            figures[f"{key} s"] = median([r[key]["total_s"] for r in rounds])
            figures[f"{key} plan s"] = median([r[key]["plan_s"] for r in rounds])
            figures[f"{key} speed-up"] = median(
                [r[f"{fmt} x{parts_list[0]}"]["total_s"] / r[key]["total_s"] for r in rounds]
            )
            figures[f"{key} peak MiB above idle"] = median(
                [r[key]["peak_mib"] or 0.0 for r in rounds]
            )
            figures[f"{key} server CPU s"] = median([r[key]["cpu_s"] or 0.0 for r in rounds])
    return {"figures": figures}
