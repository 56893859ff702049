"""``rowstream bench``'s reporting: the figures of a run summarised (medians, ratios to the
reference of the same round), as a Markdown table, JSON-ready dicts and PNG plots.

The measuring lives in ``bench.py`` (and ``bench_datasets.py``); this module only reads
``Sample``s, so what is reported can be checked without running anything.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 1_000_000
MiB = 1024 * 1024


@dataclass
class Sample:
    headers_s: float
    first_byte_s: float
    total_s: float
    bytes: int
    rows: int
    peak_mib: float | None = None
    idle_mib: float | None = None
    cpu_s: float | None = None
    timeline: list[tuple[float, int]] = field(default_factory=list)


#: The scenarios drawn in the bytes-over-time picture (the original comparison).
PICTURED = ("standard", "streaming")
REFERENCE_NAMES = {"copy": "COPY csv", "csv": "COPY of the csv format"}


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(name: str, samples: list[Sample], refs: list[Sample]) -> dict[str, Any]:
    total = [s.total_s for s in samples]
    out: dict[str, Any] = {
        "scenario": name,
        "rounds": len(samples),
        "headers_s": stats([s.headers_s for s in samples]),
        "first_byte_s": stats([s.first_byte_s for s in samples]),
        "total_s": stats(total),
        "bytes": samples[-1].bytes,
        "rows": samples[-1].rows,
        "rows_per_s": statistics.median(s.rows / s.total_s for s in samples),
        "mb_per_s": statistics.median(s.bytes / MB / s.total_s for s in samples),
        "ratio_to_copy": stats([s.total_s / r.total_s for s, r in zip(samples, refs, strict=True)]),
    }
    if samples[0].peak_mib is not None:
        out["peak_mib"] = stats([s.peak_mib or 0.0 for s in samples])
        out["idle_mib"] = statistics.median(s.idle_mib or 0.0 for s in samples)
        out["cpu_s"] = stats([s.cpu_s or 0.0 for s in samples])
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | headers ms | first byte ms | total s (min-max) | x COPY | MB | rows/s "
        "| MB/s | peak MiB above idle (idle) | server CPU s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in results:
        t = r["total_s"]
        peak = f"{r['peak_mib']['median']:.1f} ({r['idle_mib']:.0f})" if "peak_mib" in r else "n/a"
        cpu = f"{r['cpu_s']['median']:.2f}" if "cpu_s" in r else "n/a"
        ratio = r.get("ratio_to_copy", {}).get("median")
        lines.append(
            f"| {r['scenario']} | {r['headers_s']['median'] * 1000:.1f} "
            f"| {r['first_byte_s']['median'] * 1000:.1f} "
            f"| {t['median']:.3f} ({t['min']:.3f}-{t['max']:.3f}) "
            f"| {ratio:.2f} | {r['bytes'] / MB:.1f} | {r['rows_per_s']:,.0f} "
            f"| {r['mb_per_s']:.0f} | {peak} | {cpu} |"
        )
    return head + "\n".join(lines) + "\n"


def _figure(
    out: Path, name: str, title: str, xlabel: str, ylabel: str, draw: Callable[[Any], None]
) -> Path:
    """One PNG: a titled, labelled, gridded plot whose lines ``draw(axes)`` adds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    draw(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plots(results: list[dict[str, Any]], timelines: dict[str, Sample], out: Path) -> list[Path]:
    written = []
    if timelines:

        def bytes_over_time(ax: Any) -> None:
            for label, sample in timelines.items():
                xs = [0.0] + [t for t, _ in sample.timeline]
                ys = [0.0] + [b / MB for _, b in sample.timeline]
                ax.step(xs, ys, where="post", label=label)

        written.append(
            _figure(
                out,
                "bytes_over_time.png",
                "Bytes received over time",
                "seconds since the request was sent",
                "MB received",
                bytes_over_time,
            )
        )
    with_mem = [r for r in results if "peak_mib" in r]
    if with_mem:

        def memory_vs_rows(ax: Any) -> None:
            for name in sorted({r["scenario"].rsplit(" ", 1)[0] for r in with_mem}):
                pts = sorted(
                    (r["rows"], r["peak_mib"]["median"])
                    for r in with_mem
                    if r["scenario"].rsplit(" ", 1)[0] == name
                )
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax.set_xscale("log")

        written.append(
            _figure(
                out,
                "memory_vs_rows.png",
                "Server memory vs rows",
                "rows",
                "server peak RSS above idle (MiB)",
                memory_vs_rows,
            )
        )
    return written


def machine() -> dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "processor": platform.processor() or platform.machine(),
    }
