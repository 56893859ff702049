"""DuckDB's long-term-support line (1.4) and its current one (1.5), side by side, each
reading every format from a URL as a data person calls it (``read_json``, ``read_csv``,
``read_parquet``), on a table large enough for 1.4's 16 MiB range reads. Each read is
exact and runs the export once: the access log counts the GETs that carried rows.

DuckDB 1.4 lives in a virtual environment of its own (``tests/duckdb-lts.lock``, pinned
with hashes): one process cannot hold two DuckDBs."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, serving

LOCK = Path(__file__).resolve().parent / "duckdb-lts.lock"
#: Rows of the saved query read: its NDJSON is ~90 MB, far past 1.4's 16 MiB ranges (the
#: demo table's 19 MB was read in one piece, so it showed nothing).
ROWS = 350_000
DATASETS = f"""
[datasets.wide]
query = "SELECT i AS id, repeat('x', 220) AS pad FROM generate_series(1, {ROWS}) AS i"
key = ["id"]
"""
READERS = {"ndjson": "read_json", "csv": "read_csv", "parquet": "read_parquet"}
SCRIPT = r"""
import duckdb, pathlib, sys, json
import duckdb_extension_httpfs
folder = pathlib.Path(duckdb_extension_httpfs.__file__).parent
extension = next(folder.glob(f"extensions/v{duckdb.__version__}/httpfs.duckdb_extension"))
con = duckdb.connect()
con.execute(f"LOAD '{extension}'")
base, token = sys.argv[1], sys.argv[2]
headers = f"MAP {{'Authorization': 'Bearer {token}'}}"
con.execute(f"CREATE SECRET rs (TYPE http, EXTRA_HTTP_HEADERS {headers})")
out = {"version": duckdb.__version__}
for fmt, reader in json.loads(sys.argv[3]).items():
    url = f"{base}/datasets/wide.{fmt}"
    out[fmt] = con.execute(
        f"SELECT count(*), count(DISTINCT id), sum(id) FROM {reader}('{url}')"
    ).fetchone()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def lts_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("duckdb-lts")
    venv.EnvBuilder(with_pip=True).create(folder)
    python = folder / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--require-hashes", "-r", str(LOCK)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return python


@pytest.fixture(scope="module")
def logged(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("duckdb-lts-serve")
    log = folder / "server.log"
    with serving(db_url, DATASETS, folder, log=log) as server:
        yield server, log


def _exports(log: Path) -> list[dict[str, object]]:
    """The access lines of GETs that carried rows of the exports."""
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    return [
        x
        for x in lines
        if str(x.get("path", "")).startswith("/datasets/wide.")
        and x.get("method") == "GET"
        and x.get("rows")
    ]


@pytest.mark.parametrize("which", ["1.4", "1.5"])
def test_duckdb_reads_every_format_exactly_running_each_export_once(
    which: str, lts_python: Path, logged: tuple[Server, Path]
) -> None:
    server, log = logged
    python = str(lts_python) if which == "1.4" else sys.executable
    before = len(_exports(log))
    done = subprocess.run(
        [python, "-c", SCRIPT, server.base_url, server.token(), json.dumps(READERS)],
        capture_output=True,
        text=True,
        timeout=90,  # a read that restarts its export never ends: this ends it
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["version"].startswith(which)
    expected = [ROWS, ROWS, ROWS * (ROWS + 1) // 2]  # ids 1..ROWS, each once
    for fmt in READERS:
        assert result[fmt] == expected, (fmt, result[fmt])
    exports = _exports(log)[before:]
    paths = sorted(str(x["path"]) for x in exports)
    assert paths == sorted(f"/datasets/wide.{fmt}" for fmt in READERS), paths
    assert all(x["rows"] == ROWS for x in exports)
