"""``rowstream bench --hostile``: what hostile and slow clients cost the server.

Each scenario runs against a fresh server of this build and, with ``--baseline DIR``, of
another checkout in the same round (the build before the limits), on the demo table:

- the standard route's memory: one full request, six at once, six and thirty clients that
  never read (RSS above idle: peak, while they hold, and after the send timeout, which the
  bench sets to 5 s for both builds);
- connections: 500 silent and 500 half-sent-head connections (how many the server still
  holds after 15 s), a 16 MiB header sent in 64 KiB writes (what answers it, how long, and
  ``/healthz``'s latency meanwhile);
- slow bodies: 1,000 connections, each from its own loopback address (so the per-client
  cap cannot help), that send ``POST /links`` with ``Content-Length: 100`` and no token,
  then one byte: what answers them, how many the server still holds after the body
  deadline, ``/healthz``'s latency throughout, and the server's memory.

``--hostile-cases`` picks among ``memory``, ``connections`` and ``slow-bodies``.

Medians of ``--rounds``. Numbers, not assertions: the tests assert the behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import socket
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil

from app import auth, database, migrate
from app.settings import Settings
from bench import measure as bench
from bench.report import machine

MB = 1_000_000
#: The server settings both builds run with: a short send timeout, so the bench is short.
SERVER_ENV = {"STREAM_SEND_TIMEOUT_SECONDS": "5", "STREAM_SEND_TIMEOUT": "5"}


class PeakRSS:
    """Samples a process's RSS every 10 ms until ``stop``."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak: int = process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._done.wait(0.01):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


#: Each case's function, by the name ``--hostile-cases`` takes.
CASES = ("memory", "connections", "slow-bodies")
#: The body deadline both builds run with in the slow-bodies case (the default).
BODY_DEADLINE_SECONDS = 10


def _connect(base: str, rcvbuf: int | None = None, source: str | None = None) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        sock.bind((source, 0))
    sock.connect((host, int(port)))
    return sock


def _first_words(sock: socket.socket, timeout: float = 2.0) -> str:
    """The status line's start, "closed", "no answer" (within ``timeout``; 0: what has
    arrived already), or the error reading it."""
    sock.settimeout(timeout or None)
    if not timeout:
        sock.setblocking(False)
    try:
        return sock.recv(12).decode(errors="replace") or "closed"
    except (BlockingIOError, TimeoutError):
        return "no answer"
    except OSError as exc:
        return type(exc).__name__


def _memory(base: str, process: psutil.Process, token: str, rows: int) -> dict[str, Any]:
    path = f"/standard?limit={rows}"
    auth_header = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {}

    async def at_once(n: int) -> list[tuple[int, int]]:
        async with httpx.AsyncClient(timeout=600, headers=auth_header) as client:
            responses = await asyncio.gather(*(client.get(base + path) for _ in range(n)))
        return [(r.status_code, len(r.content)) for r in responses]

    for n in (1, 6):
        time.sleep(1)
        idle = process.memory_info().rss
        probe = PeakRSS(process)
        answers = asyncio.run(at_once(n))
        out[f"{n} reading: peak MB"] = (probe.stop() - idle) / MB
        out[f"{n} reading: answers"] = dict(Counter(status for status, _ in answers))
        out["body MB"] = max(size for _, size in answers) / MB
    for n in (6, 30):
        time.sleep(1)
        idle = process.memory_info().rss
        probe = PeakRSS(process)
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        held = []
        for _ in range(n):
            sock = _connect(base, rcvbuf=4096)
            sock.sendall(request.encode())
            held.append(sock)
        time.sleep(4)
        out[f"{n} not reading: MB at 4 s"] = (process.memory_info().rss - idle) / MB
        time.sleep(4)
        out[f"{n} not reading: MB at 8 s (send timeout 5 s)"] = (
            process.memory_info().rss - idle
        ) / MB
        out[f"{n} not reading: peak MB"] = (probe.stop() - idle) / MB
        out[f"{n} not reading: answers"] = dict(Counter(_first_words(s, 0) for s in held))
        for sock in held:
            sock.close()
    return out


def _healthz_ms(base: str) -> float:
    started = time.perf_counter()
    try:
        if httpx.get(f"{base}/healthz", timeout=10).status_code != 200:
            return float("inf")  # refused (503): it did not answer
    except httpx.HTTPError:
        return float("inf")
    return (time.perf_counter() - started) * 1000


def _connections(base: str, process: psutil.Process) -> dict[str, Any]:
    out: dict[str, Any] = {}
    silent = [_connect(base) for _ in range(500)]
    half = [_connect(base) for _ in range(500)]
    for sock in half:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    time.sleep(15)
    port = int(base.rsplit(":", 1)[1])
    open_now = [c for c in process.net_connections("tcp") if c.laddr.port == port and c.raddr]
    out["of 1,000 idle connections, held at 15 s"] = len(open_now)
    out["half-sent heads answered"] = dict(Counter(_first_words(s, 0) for s in half))
    for sock in silent + half:
        sock.close()
    time.sleep(1)

    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            latencies.append(_healthz_ms(base))
            stop.wait(0.05)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    sock = _connect(base)
    started = time.perf_counter()
    sent = 0
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        while sent < 16 << 20:
            sock.sendall(b"a" * 65536)
            sent += 65536
        sock.sendall(b"\r\n\r\n")
    except OSError:
        pass
    out["16 MiB header: answer"] = _first_words(sock, 30)
    out["16 MiB header: seconds to answer"] = time.perf_counter() - started
    out["16 MiB header: MiB the server read"] = sent / (1 << 20)
    sock.close()
    stop.set()
    thread.join()
    out["/healthz meanwhile: worst ms"] = max(latencies, default=0.0)
    return out


def _held(base: str, process: psutil.Process) -> int:
    port = int(base.rsplit(":", 1)[1])
    return len([c for c in process.net_connections("tcp") if c.laddr.port == port and c.raddr])


def _slow_bodies(base: str, process: psutil.Process) -> dict[str, Any]:
    """1,000 unauthenticated ``POST /links`` that announce 100 bytes and send one."""
    out: dict[str, Any] = {}
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:  # from 127.0.0.1, as a neighbour would
        while not stop.is_set():
            latencies.append(_healthz_ms(base))
            stop.wait(0.1)

    idle = process.memory_info().rss
    peak = PeakRSS(process)
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    head = (
        b"POST /links HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    attackers = []
    started = time.perf_counter()
    for n in range(1000):
        source = f"127.0.{2 + n // 250}.{1 + n % 250}"
        try:
            sock = _connect(base, source=source)
            sock.sendall(head)
        except OSError:
            continue
        attackers.append(sock)
    out["slow bodies: seconds to open 1,000"] = time.perf_counter() - started
    time.sleep(2)
    out["slow bodies: answers"] = dict(Counter(_first_words(s, 0) for s in attackers))
    out["slow bodies: held at 2 s"] = _held(base, process)
    time.sleep(BODY_DEADLINE_SECONDS)
    out[f"slow bodies: held at {BODY_DEADLINE_SECONDS + 2} s (body deadline + 2 s)"] = _held(
        base, process
    )
    stop.set()
    thread.join()
    out["slow bodies: /healthz worst ms"] = max(latencies, default=0.0)
    out["slow bodies: /healthz probes that failed"] = sum(x == float("inf") for x in latencies)
    out["slow bodies: server peak MB above idle"] = (peak.stop() - idle) / MB
    for sock in attackers:
        sock.close()
    return out


def _round(
    url: str, secret: str, rows: int, cwd: Path | None, cases: tuple[str, ...]
) -> dict[str, Any]:
    token = auth.issue(secret, "hostile", 3600)
    with bench.serve(url, secret, cwd=cwd, extra_env=SERVER_ENV) as (base, pid):
        assert pid is not None
        process = psutil.Process(pid)
        httpx.get(f"{base}/standard?limit=10", headers={"Authorization": f"Bearer {token}"})
        out: dict[str, Any] = {}
        if "memory" in cases:
            out |= _memory(base, process, token, rows)
        if "connections" in cases:
            out |= _connections(base, process)
        if "slow-bodies" in cases:
            out |= _slow_bodies(base, process)
        return out


def _median(values: list[Any]) -> Any:
    if all(isinstance(v, int | float) for v in values):
        return statistics.median(values)
    return values[len(values) // 2]  # answers: the middle round's


def run(args: argparse.Namespace, settings: Settings) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    builds: list[tuple[str, Path | None]] = [("this build", None)]
    if args.baseline:
        builds.append(("baseline build", Path(args.baseline).resolve()))
    rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in builds}
    rows = max(args.rows)
    with database.database_url(settings) as url:
        migrate.upgrade(url)  # a fresh embedded database has no table yet
        asyncio.run(bench.ensure_rows(url, rows))
        for number in range(args.rounds):
            for label, cwd in builds if number % 2 == 0 else builds[::-1]:
                rounds[label].append(_round(url, secret, rows, cwd, tuple(args.hostile_cases)))
    summary = {
        label: {key: _median([r[key] for r in results]) for key in results[0]}
        for label, results in rounds.items()
    }
    labels = list(summary)
    lines = [f"| {rows:,} rows, medians of {args.rounds} | " + " | ".join(labels) + " |"]
    lines.append("|---|" + "---:|" * len(labels))
    for key in summary[labels[0]]:
        cells = [_cell(summary[label].get(key)) for label in labels]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    report = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    report |= {"rounds": rounds, "summary": summary}
    (out / "hostile.json").write_text(json.dumps(report, indent=1))
    (out / "hostile.md").write_text(table)
    print(table)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in sorted(value.items()))
    if isinstance(value, int | float):
        return f"{value:,.1f}"
    return str(value)
