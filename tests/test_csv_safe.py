"""Spreadsheet-safe CSV (``CSV_SAFE``, ``csv_safe=``): text cells and column names that
a spreadsheet would run as formulas get a ``'`` before them, in CSV only; numbers, dates,
padding and every other format stay exact. Over real servers, on both routes and through
``rowstream fetch``."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, serving

SCHEMA = r"""
CREATE TYPE verdict AS ENUM ('=yes', 'no');
CREATE TABLE formulas (
    id integer PRIMARY KEY,
    "=cmd" text,
    note varchar(40),
    padded char(5),
    amount numeric,
    delta integer,
    day date,
    v verdict
);
INSERT INTO formulas VALUES
    (1, '=HYPERLINK("http://evil.example","x")', '+1+2', '-a', -12.5, -3, '2024-01-02', '=yes'),
    (2, '@SUM(A1)', E'\tlead tab', E'\rcr', 0, 0, '2024-01-03', 'no'),
    (3, '''quoted', 'plain', 'ok', 1, 1, NULL, NULL),
    (4, NULL, '', 'x', NULL, NULL, NULL, 'no');
"""
DATASETS = """
[datasets.formulas]
table = "formulas"
"""
HYPERLINK = '=HYPERLINK("http://evil.example","x")'
EXACT_HEADER = ["id", "=cmd", "note", "padded", "amount", "delta", "day", "v"]
#: The rows as exact CSV reads them back (``padded`` is char(5): blank-padded).
EXACT = [
    [
        "1",
        '=HYPERLINK("http://evil.example","x")',
        "+1+2",
        "-a   ",
        "-12.5",
        "-3",
        "2024-01-02",
        "=yes",
    ],
    ["2", "@SUM(A1)", "\tlead tab", "\rcr  ", "0", "0", "2024-01-03", "no"],
    ["3", "'quoted", "plain", "ok   ", "1", "1", "", ""],
    ["4", "", "", "x    ", "", "", "", "no"],
]
TEXT_COLUMNS = {"=cmd", "note", "padded", "v"}


def _safe(value: str) -> str:
    return "'" + value if value.startswith(("=", "+", "-", "@", "\t", "\r", "'")) else value


SAFE_HEADER = [_safe(name) for name in EXACT_HEADER]
SAFE = [
    [
        _safe(cell) if name in TEXT_COLUMNS else cell
        for name, cell in zip(EXACT_HEADER, row, strict=True)
    ]
    for row in EXACT
]


@pytest.fixture(scope="module")
def formulas_url(fresh_database: Callable[..., str]) -> str:
    return fresh_database("rowstream_formulas", SCHEMA)


@pytest.fixture(scope="module")
def exact_server(formulas_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(formulas_url, DATASETS, tmp_path_factory.mktemp("exact")) as server:
        yield server


@pytest.fixture(scope="module")
def safe_server(formulas_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("safe")
    with serving(formulas_url, DATASETS, directory, CSV_SAFE="true") as server:
        yield server


def _csv(server: Server, path: str, **params: str) -> list[list[str]]:
    r = httpx.get(server.base_url + path, params=params, headers=server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    # csv.reader as a spreadsheet's importer would see it; NULL is an empty cell
    return list(csv.reader(io.StringIO(r.text, newline="")))


ROUTES = [("/datasets/formulas.csv", {}), ("/datasets/formulas", {"format": "csv"})]


@pytest.mark.parametrize(("path", "params"), ROUTES)
def test_by_default_csv_is_exact_and_csv_safe_1_makes_it_safe(
    exact_server: Server, path: str, params: dict[str, str]
) -> None:
    exact = _csv(exact_server, path, **params)
    assert exact == [EXACT_HEADER, *EXACT]
    safe = _csv(exact_server, path, **params, csv_safe="1")
    assert safe == [SAFE_HEADER, *SAFE]


@pytest.mark.parametrize(("path", "params"), ROUTES)
def test_with_csv_safe_on_csv_is_safe_and_csv_safe_0_asks_for_exact(
    safe_server: Server, path: str, params: dict[str, str]
) -> None:
    assert _csv(safe_server, path, **params) == [SAFE_HEADER, *SAFE]
    assert _csv(safe_server, path, **params, csv_safe="0") == [EXACT_HEADER, *EXACT]


def test_other_formats_stay_exact_with_csv_safe_on(safe_server: Server) -> None:
    r = httpx.get(
        f"{safe_server.base_url}/datasets/formulas.ndjson",
        params={"csv_safe": "1"},
        headers=safe_server.headers(),
    )
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert rows[0]["=cmd"] == EXACT[0][1] and rows[0]["note"] == "+1+2"
    assert rows[0]["amount"] == -12.5 and rows[0]["delta"] == -3 and rows[2]["=cmd"] == "'quoted"


def test_a_bad_csv_safe_value_is_a_422_naming_it(exact_server: Server) -> None:
    r = httpx.get(
        f"{exact_server.base_url}/datasets/formulas.csv",
        params={"csv_safe": "maybe"},
        headers=exact_server.headers(),
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("csv_safe:")


def test_rowstream_fetch_writes_the_safe_csv(safe_server: Server, tmp_path: Path) -> None:
    out = tmp_path / "formulas.csv"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "app.cli", "fetch", "--quiet"),
            f"{safe_server.base_url}/datasets/formulas.csv",
            *("-o", str(out)),
        ],
        env={**os.environ, "ROWSTREAM_TOKEN": safe_server.token()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "4 rows, complete" in done.stderr
    assert list(csv.reader(io.StringIO(out.read_bytes().decode(), newline=""))) == [
        SAFE_HEADER,
        *SAFE,
    ]
