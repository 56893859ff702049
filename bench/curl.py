"""One timed request with curl as the client.

On two shared cores a Python client spends a core of its own reading and counting a
100 MB body, and the server's figure then includes the client's CPU. curl writes the body
to a file in memory (``/dev/shm``) and times itself; the rows are counted afterwards, off
the clock (decompressed, or parsed for Arrow and Parquet).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from bench.measure import Scenario, ServerProbe, decoder, file_rows
from bench.report import Sample

SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def _rows(body: bytes, scenario: Scenario) -> int:
    body = decoder(scenario.encoding)(body)
    if scenario.count:
        return body.count(scenario.count) - scenario.extra_lines
    return file_rows(body)


def fetch(base: str, token: str, probe: ServerProbe, scenario: Scenario) -> Sample:
    """``scenario`` fetched once by curl; ``first_byte_s`` is curl's time to the first
    response byte (the server sends its headers with the first batch)."""
    out = SCRATCH / f"rowstream-bench-{os.getpid()}"
    command = [
        *("curl", "-sS", "--fail", "-o", str(out)),
        *("-w", "%{time_starttransfer} %{time_total} %{size_download}"),
        *("-H", f"Authorization: Bearer {token}"),
    ]
    for name, value in scenario.headers:
        command += ["-H", f"{name}: {value}"]
    command.append(f"{base}{scenario.path}?limit={scenario.rows}")
    extra: dict[str, float | None] = {}
    try:
        with probe.measure(extra):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{scenario.name}: curl: {done.stderr.strip()}")
        first, total, size = done.stdout.split()
        rows = _rows(out.read_bytes(), scenario)
    finally:
        out.unlink(missing_ok=True)
    return Sample(
        float(first),
        float(first),
        float(total),
        int(size),
        rows,
        peak_mib=extra.get("peak_mib"),
        idle_mib=extra.get("idle_mib"),
        cpu_s=extra.get("cpu_s"),
    )
