"""What every benchmark measures with: scenarios, the server probe (peak RSS above idle,
CPU seconds), one timed request, the plain ``COPY`` reference, the demo rows, and a
``rowstream serve`` of this checkout or another (``--baseline``) on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from app import demo, introspection, sql, transaction
from bench import pooler
from bench.report import MiB, Sample


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    rows: int
    headers: tuple[tuple[str, str], ...] = ()
    #: What to count in the (decompressed) body to count rows; b"" for Arrow (parsed).
    count: bytes = b'"id":'
    #: Lines that are not rows (the CSV header).
    extra_lines: int = 0
    encoding: str | None = None
    #: The limit reference it is compared with: "copy" (``COPY (SELECT *) csv``) or "csv"
    #: (the very ``COPY`` statement the CSV format runs).
    reference: str = "copy"

    @property
    def label(self) -> str:
        return f"{self.name} {self.rows:,}"


def scenarios(row_counts: list[int], formats: bool = True) -> list[Scenario]:
    """The comparison at every row count; every other format at the largest one."""
    out: list[Scenario] = []
    for n in row_counts:
        out.append(Scenario("standard", "/messages", n))
        out.append(Scenario("streaming", "/messages/stream", n))
        out.append(
            Scenario("chunked text/plain", "/chunked", n, (("Accept", "text/plain"),), b"\n")
        )
    if formats:
        n = max(row_counts)
        accept = "Accept"
        out += [
            Scenario(
                "streaming json array", "/messages/stream", n, ((accept, "application/json"),)
            ),
            Scenario(
                "streaming csv",
                "/messages/stream",
                n,
                ((accept, "text/csv"),),
                b"\n",
                extra_lines=1,
                reference="csv",
            ),
            Scenario(
                "streaming arrow",
                "/messages/stream",
                n,
                ((accept, "application/vnd.apache.arrow.stream"),),
                b"",
            ),
            Scenario(
                "streaming parquet",
                "/messages/stream",
                n,
                ((accept, "application/vnd.apache.parquet"),),
                b"",
            ),
            Scenario(
                "streaming ndjson gzip",
                "/messages/stream",
                n,
                (("Accept-Encoding", "gzip"),),
                encoding="gzip",
            ),
            Scenario(
                "streaming ndjson zstd",
                "/messages/stream",
                n,
                (("Accept-Encoding", "zstd"),),
                encoding="zstd",
            ),
            Scenario(
                "standard csv",
                "/messages",
                n,
                ((accept, "text/csv"),),
                b"\n",
                extra_lines=1,
                reference="csv",
            ),
        ]
    return out


def decoder(encoding: str | None) -> Callable[[bytes], bytes]:
    if encoding == "gzip":
        return zlib.decompressobj(31).decompress
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress
    return lambda data: data


def file_rows(body: bytes) -> int:
    """The rows of a whole Parquet file or Arrow IPC stream."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if body.startswith(b"PAR1"):
        return int(pq.ParquetFile(pa.BufferReader(body)).metadata.num_rows)
    return int(pa.ipc.open_stream(body).read_all().num_rows)


class ServerProbe:
    """Samples a server process's RSS in a thread while a request runs."""

    def __init__(self, pid: int | None) -> None:
        import psutil

        self.process = psutil.Process(pid) if pid else None

    @contextmanager
    def measure(self, sample: dict[str, float | None]) -> Iterator[None]:
        if self.process is None:
            yield
            return
        proc = self.process
        idle = proc.memory_info().rss
        cpu0 = sum(proc.cpu_times()[:2])
        peak = idle
        stop = threading.Event()

        def poll() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, proc.memory_info().rss)
                stop.wait(0.002)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            peak = max(peak, proc.memory_info().rss)
            sample["peak_mib"] = (peak - idle) / MiB
            sample["idle_mib"] = idle / MiB
            sample["cpu_s"] = sum(proc.cpu_times()[:2]) - cpu0


async def fetch(
    client: httpx.AsyncClient, probe: ServerProbe, scenario: Scenario, timeline: bool
) -> Sample:
    extra: dict[str, float | None] = {}
    points: list[tuple[float, int]] = []
    size = rows = 0
    tail = b""
    decode = decoder(scenario.encoding)
    kept: list[bytes] = []
    with probe.measure(extra):
        started = time.perf_counter()
        async with client.stream(
            "GET", scenario.path, params={"limit": scenario.rows}, headers=dict(scenario.headers)
        ) as response:
            headers_s = time.perf_counter() - started
            response.raise_for_status()
            first_byte_s = 0.0
            async for chunk in response.aiter_raw():
                now = time.perf_counter() - started
                if not size:
                    first_byte_s = now
                size += len(chunk)
                data = decode(chunk)
                if not scenario.count:
                    kept.append(data)
                    continue
                # count across chunk boundaries: keep the last few bytes
                joined = tail + data
                rows += joined.count(scenario.count) - tail.count(scenario.count)
                tail = joined[-8:]
                if timeline:
                    points.append((now, size))
        total_s = time.perf_counter() - started
    if not scenario.count:
        rows = file_rows(b"".join(kept))
    rows -= scenario.extra_lines
    return Sample(headers_s, first_byte_s, total_s, size, rows, timeline=points, **extra)


async def copy_reference(url: str, rows: int, kind: str = "copy") -> Sample:
    """The limit: PostgreSQL's own COPY of the same rows, drained to nowhere.

    ``copy``: ``COPY (SELECT * … LIMIT n) TO STDOUT (FORMAT csv)``; ``csv``: the exact
    statement the CSV format runs (RFC 3339 timestamps, header), in the same kind of
    read-only snapshot.
    """
    conn = await asyncpg.connect(url)
    try:
        size = 0
        first = 0.0
        started = time.perf_counter()

        async def sink(data: bytes) -> None:
            nonlocal size, first
            if not size:
                first = time.perf_counter() - started
            size += len(data)

        if kind == "csv":
            described = await introspection.describe_all(conn, demo.DECLARATION)
            dataset = described["messages"]
            query = sql.as_csv(dataset, sql.Selection(fields=dataset.column_names, limit=rows))
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute(transaction.TRANSACTION_SETTINGS)
                await conn.copy_from_query(query.sql, *query.args, output=sink, **sql.CSV_COPY)
        else:
            await conn.copy_from_query(
                "SELECT * FROM messages ORDER BY id LIMIT $1", rows, output=sink, format="csv"
            )
        total = time.perf_counter() - started
    finally:
        await conn.close()
    return Sample(0.0, first, total, size, rows)


async def ensure_rows(url: str, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        if await demo.count(conn) < rows:
            await demo.seed(conn, rows)
    finally:
        await conn.close()


async def database_beside(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextmanager
def serve(
    url: str,
    secret: str,
    *,
    cwd: Path | None = None,
    ready: str = "/readyz",
    extra_env: dict[str, str] | None = None,
) -> Iterator[tuple[str, int | None]]:
    """``rowstream serve`` on a free port, once ``ready`` answers 200; ``cwd``: the
    checkout to run it from (another build), else this one."""
    port = pooler.free_port()
    env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET": secret, **(extra_env or {})}
    if cwd is not None:
        env["PYTHONPATH"] = str(cwd)
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"),
            *("--port", str(port), "--log-level", "warning"),
        ],
        env=env,
        cwd=cwd,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError("the server exited during start-up")
            try:
                if httpx.get(f"{base}{ready}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready in 120 s")
            time.sleep(0.05)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
