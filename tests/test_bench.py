"""``rowstream bench --quick`` runs end to end in the suite, so the command never rots.
No timing is asserted: numbers belong in docs/benchmarks.md, not in tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import clients as bench_clients
from bench import main as bench
from bench import report as bench_report


def _bench(db_url: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rowstream bench --quiet --out OUT ARGS`` against the test database; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--quiet", "--out", str(out), *args],
        env={**os.environ, "DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_quick_bench_writes_table_json_and_plots(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = _bench(db_url, out, "--quick")
    report = json.loads((out / "results.json").read_text())
    names = [r["scenario"] for r in report["results"]]
    assert names == [
        "COPY csv 1,000",
        "standard 1,000",
        "streaming 1,000",
        "chunked text/plain 1,000",
        "COPY csv 5,000",
        "standard 5,000",
        "streaming 5,000",
        "chunked text/plain 5,000",
        "streaming json array 5,000",
        "streaming arrow 5,000",
        "streaming parquet 5,000",
        "streaming ndjson gzip 5,000",
        "streaming ndjson zstd 5,000",
        "COPY of the csv format 5,000",
        "streaming csv 5,000",
        "standard csv 5,000",
    ]
    for r in report["results"]:
        assert r["rows"] == int(r["scenario"].rsplit(" ", 1)[1].replace(",", ""))
        assert r["bytes"] > 0 and r["ratio_to_copy"]["median"] > 0
        if not r["scenario"].startswith("COPY"):
            # every scenario's rows were counted from its own format (rows == limit)
            assert r["peak_mib"]["median"] >= 0 and r["cpu_s"]["median"] >= 0
    assert report["machine"]["cpus"] >= 1
    table = (out / "results.md").read_text()
    assert table.count("\n") == 2 + len(names)
    assert "| streaming 5,000 |" in table and table in done.stdout
    for png in ("bytes_over_time.png", "memory_vs_rows.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_ratios_pair_each_round_with_its_own_reference() -> None:
    samples = [bench_report.Sample(0.001, 0.002, t, 100, 10) for t in (1.0, 2.0, 3.0)]
    refs = [bench_report.Sample(0.0, 0.001, t, 50, 10) for t in (0.5, 0.5, 1.0)]
    summary = bench_report.summarise("x 10", samples, refs)
    assert summary["ratio_to_copy"] == {"median": 3.0, "min": 2.0, "max": 4.0}
    assert summary["total_s"]["median"] == 2.0
    assert "peak_mib" not in summary  # no server process measured


def test_concurrent_bench_spreads_over_instances_direct_and_through_its_pgbouncer(
    db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    _bench(
        db_url,
        out,
        # enough rows that each configuration's server CPU is several of psutil's 10 ms
        # ticks (with 2,000 rows a cheap round could read as 0.0 s)
        *("--concurrent", "3", "--instances", "2", "--rows", "20000", "--rounds", "1"),
        *("--pgbouncer", "4096,unix:65536"),
    )
    report = json.loads((out / "concurrent.json").read_text())
    assert [r["scenario"] for r in report["results"]] == [
        f"3 streams x 20,000 rows, {n}, {how}"
        for how in (
            "direct",
            "via PgBouncer, pkt_buf 4096, TCP",
            "via PgBouncer, pkt_buf 65536, Unix socket",
        )
        for n in ("1 instance", "2 instances")
    ]
    for r in report["results"]:
        # every stream was counted to its last row, or the bench would have failed
        assert r["rows_per_s"]["median"] > 0 and r["cpu_s"]["median"] > 0
        assert r["ratio_to_direct"]["median"] > 0
    assert [r["ratio_to_direct"]["median"] for r in report["results"][:2]] == [1.0, 1.0]


def test_pgbouncer_specs_parse_or_refuse_clearly() -> None:
    import argparse

    import pytest

    assert bench._pgbouncer_specs("4096,unix:65536") == [(False, 4096), (True, 65536)]
    for bad in ("12x", "unix:", "65536,tcp:4096", "1"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"\[unix:\]PKT_BUF"):
            bench._pgbouncer_specs(bad)


def test_clients_bench_loads_every_way_and_checks_the_rows(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ("--clients", "--rows", "1000", "--rounds", "1", "--warmup", "0")
    done = _bench(db_url, out, *args)
    report = json.loads((out / "clients.json").read_text())
    ways = {f"{tool} via {how}" for tool, how in bench_clients.METHODS}
    assert set(report["summary"]) == ways and len(ways) == 14
    for name, result in report["summary"].items():
        assert result["rows"] == 1000, name  # each load's own frame had every row
        assert result["seconds"] > 0 and result["x read_sql"] > 0
    assert "| pandas via ADBC |" in done.stdout
    assert (out / "clients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_parallel_bench_reads_every_row_in_parts_and_checks_a_cut_off_fetch(
    db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    args = ("--parallel", "--datasets-rows", "3000", "--rounds", "1")
    more = (
        "--parallel-formats",
        "ndjson,parquet",
        "--parallel-parts",
        "1,2",
        "--parallel-cutoff",
        "5",
    )
    _bench(db_url, out, *args, *more)
    report = json.loads((out / "parallel.json").read_text())
    assert report["rows"] == 3000 and report["dataset"] == "messages"
    measured = report["raw"][0]
    for key in ("ndjson x1", "ndjson x2", "parquet x1", "parquet x2"):
        assert measured[key]["rows"] == 3000, key  # counted from each part's own body
    assert measured["ndjson x2"]["parts"] == 2 and measured["ndjson x2"]["plan_s"] > 0
    assert report["figures"]["ndjson x1 speed-up"] == 1.0
    assert report["cut-off"]["rows"] == 3000  # every id once, in order


def test_consistency_bench_reads_in_parts_while_a_writer_moves_amounts(
    db_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    _bench(db_url, out, "--consistency", "2", "--datasets-rows", "5000")
    report = json.loads((out / "consistency.json").read_text())
    assert report["reads"] == 2 and report["moves"] > 0
    assert set(report["summary"]) == {"ConnectorX", "rowstream"}
    assert all(r["rows"] == 5000 for rs in report["raw"].values() for r in rs)
    # rowstream's parts are one snapshot: every read right, whatever ConnectorX's were
    assert report["summary"]["rowstream"]["wrong reads"] == 0
