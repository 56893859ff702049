"""``rowstream bench --clients``: a table into a pandas or polars DataFrame, every way.

Through rowstream (Arrow with the Python client, Parquet, CSV and NDJSON with each tool's
own reader) and straight from PostgreSQL, as people do when they hold credentials:
``pandas.read_sql`` (SQLAlchemy + psycopg), the ADBC PostgreSQL driver
(``fetch_arrow_table``) and ConnectorX. Each load runs in a fresh Python process, so its
wall time excludes imports and its peak memory (``ru_maxrss`` less the RSS after imports) is
the load's alone. Methods take turns within a round; medians of ``--rounds``; ratios to
``pandas.read_sql`` and to ADBC are taken within each round.

Numbers, not assertions: ``tests/test_dataframes.py`` asserts the values.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from app.settings import Settings

#: (tool, how) → the source of the load: a rowstream format, or a direct reader.
METHODS: list[tuple[str, str]] = [
    *(
        (tool, f"rowstream {fmt}")
        for tool in ("pandas", "polars")
        for fmt in ("arrow", "parquet", "csv", "ndjson")
    ),
    *((tool, how) for tool in ("pandas", "polars") for how in ("read_sql", "ADBC", "ConnectorX")),
]
REFERENCES = ("read_sql", "ADBC")


def _sql(rows: int) -> str:
    return f"SELECT * FROM messages ORDER BY id LIMIT {rows}"


def _rowstream(tool: str, fmt: str, base: str, token: str, rows: int) -> Callable[[], Any]:
    import httpx

    url = f"{base}/datasets/messages/stream?format={fmt}&limit={rows}"
    headers = {"Authorization": f"Bearer {token}"}

    def body() -> bytes:
        return httpx.get(url, headers=headers, timeout=600).raise_for_status().content

    if fmt == "arrow":
        from rowstream.client import Client

        client = Client(base, token)
        return lambda: getattr(client, f"to_{tool}")("messages", limit=rows)
    if tool == "pandas":
        import pandas as pd

        read = {"parquet": pd.read_parquet, "csv": pd.read_csv}
        if fmt in read:
            return lambda: read[fmt](url, storage_options=headers)
        return lambda: pd.read_json(url, lines=True, storage_options=headers)
    import io

    import polars as pl

    readers: dict[str, Callable[..., Any]] = {
        "parquet": pl.read_parquet,
        "csv": pl.read_csv,
        "ndjson": pl.read_ndjson,
    }
    return lambda: readers[fmt](io.BytesIO(body()))


def connectorx_url(url: str) -> str:
    """ConnectorX's URL parser wants a host even when ``host=`` names a Unix socket."""
    parts = urlsplit(url)
    if parts.hostname:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[0] + "@localhost"))


def _direct(tool: str, how: str, db_url: str, rows: int) -> Callable[[], Any]:
    query = _sql(rows)
    if how == "ADBC":
        import adbc_driver_postgresql.dbapi as adbc

        def arrow() -> Any:
            with adbc.connect(db_url) as conn, conn.cursor() as cur:
                cur.execute(query)
                return cur.fetch_arrow_table()

        if tool == "pandas":
            return lambda: arrow().to_pandas()
        import polars as pl

        return lambda: pl.from_arrow(arrow())
    if how == "ConnectorX":
        import connectorx as cx

        cx_url = connectorx_url(db_url)
        return lambda: cx.read_sql(cx_url, query, return_type=tool)
    import sqlalchemy

    engine = sqlalchemy.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    if tool == "pandas":
        import pandas as pd

        def pandas_read_sql() -> Any:
            with engine.connect() as conn:
                return pd.read_sql(query, conn)

        return pandas_read_sql
    import polars as pl

    def polars_read_database() -> Any:
        with engine.connect() as conn:
            return pl.read_database(query, conn)

    return polars_read_database


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def load(tool: str, how: str, base: str, token: str, db_url: str, rows: int) -> dict[str, Any]:
    """One load in this process: seconds, peak MiB above the RSS after imports, rows."""
    import importlib

    # What the readers import lazily is imported first: the load's time is the load's.
    for module in (tool, "pyarrow", "pyarrow.ipc", "pyarrow.parquet", "pyarrow.csv"):
        importlib.import_module(module)
    if how.startswith("rowstream "):
        run = _rowstream(tool, how.split()[1], base, token, rows)
    else:
        run = _direct(tool, how, db_url, rows)
    before = _rss_bytes()
    start = time.perf_counter()
    frame = run()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    height = frame.shape[0]
    return {"seconds": seconds, "peak_mib": (peak - before) / 2**20, "rows": height}


def _load_in_child(tool: str, how: str, base: str, token: str, url: str, rows: int) -> Any:
    argv = [sys.executable, "-m", "bench.clients", tool, how, base, token, url, str(rows)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode:
        raise RuntimeError(f"{tool} via {how} failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rows"] != rows:
        raise RuntimeError(f"{tool} via {how} read {result['rows']} rows, not {rows}")
    return result


def run(args: argparse.Namespace, settings: Settings) -> None:
    # The server's modules only here: each load's process imports just its reader.
    from app import auth, database, migrate
    from bench import measure as bench
    from bench.report import machine

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = max(args.rows)
    secret = secrets.token_urlsafe(48)
    token = auth.issue(secret, "bench", 24 * 3600)
    rounds: dict[str, list[dict[str, float]]] = {f"{t} via {h}": [] for t, h in METHODS}
    with database.database_url(settings) as url:
        migrate.upgrade(url)
        asyncio.run(bench.ensure_rows(url, rows))
        with bench.serve(url, secret) as (base, _pid):
            for number in range(args.warmup + args.rounds):
                order = METHODS if number % 2 == 0 else METHODS[::-1]
                measured = {
                    f"{t} via {h}": _load_in_child(t, h, base, token, url, rows) for t, h in order
                }
                if number < args.warmup:
                    continue
                for name, result in measured.items():
                    tool = name.split()[0]
                    for ref in REFERENCES:
                        result[f"x {ref}"] = (
                            result["seconds"] / measured[f"{tool} via {ref}"]["seconds"]
                        )
                    rounds[name].append(result)
                if not args.quiet:
                    print(f"round {number - args.warmup + 1} of {args.rounds} done", flush=True)
    summary = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for name, results in rounds.items()
    }
    table = markdown(summary, rows, args.rounds)
    report = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    report |= {"command": " ".join(["rowstream", *sys.argv[1:]]), "rounds": rounds}
    (out / "clients.json").write_text(json.dumps(report | {"summary": summary}, indent=1))
    (out / "clients.md").write_text(table)
    image = plot(summary, rows, out)
    print(table)
    print(f"wrote {out / 'clients.json'}, {out / 'clients.md'}, {image}")


def markdown(summary: dict[str, dict[str, float]], rows: int, rounds: int) -> str:
    lines = [
        f"| {rows:,} rows into a DataFrame, medians of {rounds} | seconds | x read_sql "
        "| x ADBC | client peak MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in summary.items():
        lines.append(
            f"| {name} | {r['seconds']:.2f} | {r['x read_sql']:.2f} | {r['x ADBC']:.2f} "
            f"| {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, dict[str, float]], rows: int, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.4 * len(names) + 1.5), sharey=True)
    left.barh(names, [summary[n]["seconds"] for n in names], color="tab:blue")
    left.set_xlabel("seconds (median)")
    right.barh(names, [summary[n]["peak_mib"] for n in names], color="tab:orange")
    right.set_xlabel("client peak MiB above imports (median)")
    left.invert_yaxis()
    fig.suptitle(f"{rows:,} messages rows into a DataFrame: through rowstream and direct")
    fig.tight_layout()
    path = out / "clients.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    tool, how, base, token, db_url, rows = sys.argv[1:7]
    print(json.dumps(load(tool, how, base, token, db_url, int(rows))))
