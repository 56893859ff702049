"""Declaring datasets: the file's format, its one-line errors, and what the catalog says."""

from __future__ import annotations

import datetime
from pathlib import Path

import asyncpg
import httpx
import pyarrow as pa
import pytest

from app import datasets, demo, introspection, pgtypes
from app.datasets import ConfigError
from tests.support import run, serving


def _load(tmp_path: Path, text: str) -> datasets.DatasetsFile:
    path = tmp_path / "datasets.toml"
    path.write_text(text)
    return datasets.load(path)


def test_no_file_declares_the_demo() -> None:
    assert demo.declared(None) is demo.DECLARATION
    assert list(demo.DECLARATION.datasets) == ["messages"]


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        """
[datasets.messages]
table = "messages"
schema = "public"

[datasets.daily_totals]
query = "SELECT day, count(*) AS n FROM t WHERE day >= :since GROUP BY 1"
key = ["day"]
params = { since = "date" }
""",
    )
    assert config.datasets["daily_totals"].params == {"since": "date"}
    assert config.datasets["messages"].schema_ == "public"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[datasets.x]\ntable = 'a'\nquery = 'SELECT 1'\n", "dataset 'x': give exactly one of"),
        ("[datasets.x]\n", "dataset 'x': give exactly one of"),
        ("[datasets.x]\ntable = 'a'\ncolums = ['a']\n", "dataset 'x', key 'colums': Extra inputs"),
        ("[datasets.x]\ntable = 'a'\nkey = []\n", "dataset 'x': 'key' names at least one"),
        ("[datasets.x]\ntable = 'a'\nparams = { a = 'int' }\n", "'params' belong to a 'query'"),
        ("[datasets.'a.b']\ntable = 'a'\n", "dataset 'a.b': a dataset name may hold only"),
        ("[datasets.x]\ntable = 1\n", "dataset 'x', key 'table': Input should be a valid string"),
        ("[datasets.x\n", "not valid TOML"),
        ("[other]\n", "key 'datasets': Field required"),
        ("datasets = 1\n", "key 'datasets': Input should be a valid dictionary"),
    ],
)
def test_a_bad_file_is_one_line_naming_dataset_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "datasets.toml"))


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        datasets.load(tmp_path / "nope.toml")


def test_placeholders_are_bound_but_not_inside_strings_comments_or_casts() -> None:
    sql = introspection.bind_placeholders(
        "SELECT ':a', \"x:a\", $$ :a $$, b::date /* :a */ FROM t WHERE c = :a -- :a\n AND d = :b",
        {"a": "date", "b": "text"},
    )
    assert sql == (
        "SELECT ':a', \"x:a\", $$ :a $$, b::date /* :a */ FROM t WHERE c = ($1::text::date) -- :a\n"
        " AND d = ($2::text::text)"
    )
    with pytest.raises(ConfigError, match="'c' not in 'params'"):
        introspection.bind_placeholders("SELECT :c", {})


async def _describe(url: str, config: dict[str, object]) -> dict[str, datasets.Dataset]:
    conn = await asyncpg.connect(url)
    try:
        declared = datasets.DatasetsFile.model_validate({"datasets": {"d": config}})
        return await introspection.describe_all(conn, declared)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"table": "nope"}, "dataset 'd': no table or view 'public.nope' in the database"),
        ({"table": "zoo", "schema": "other"}, "no table or view 'other.zoo'"),
        (
            {"table": "zoo", "columns": ["id", "nope"]},
            "dataset 'd', key 'columns': no column 'nope'",
        ),
        ({"table": "zoo", "exclude": ["nope"]}, "key 'exclude': no column 'nope'"),
        ({"table": "zoo", "filters": ["nope"]}, "key 'filters': no column 'nope'"),
        ({"table": "zoo", "key": ["i4"]}, "key ['i4'] is not unique"),
        ({"table": "zoo", "exclude": ["id"]}, "key 'key': no column 'id'"),
        ({"table": "events_view"}, "a view needs 'key'"),
        ({"table": "events"}, None),
        ({"query": "SELECT nope FROM zoo"}, "key 'query': column \"nope\" does not exist"),
        ({"query": "SELECT 1 AS a, 2 AS a"}, "returns ['a'] more than once"),
        ({"query": "SELECT :x AS a", "params": {"x": "nosuchtype"}}, "key 'query'"),
        ({"query": "SELECT 1 AS a", "types": {"b": "int8"}}, "key 'types': no column 'b'"),
        ({"query": "SELECT 1 AS a", "types": {"a": "nosuchtype"}}, "no type 'nosuchtype'"),
        ({"query": "SELECT 1 AS a", "types": {"a": "int8; DROP TABLE zoo"}}, "is not a type"),
        ({"query": "SELECT 1 AS a", "types": {"a": "text(4)"}}, "only numeric takes"),
        ({"query": "SELECT 1 AS a", "types": {"a": "numeric(4,5)"}}, "scale <= precision"),
        ({"query": "SELECT now()::date AS a", "types": {"a": "numeric(6,2)"}}, "key 'types': "),
    ],
)
def test_the_catalog_contradicting_a_declaration_is_one_line(
    zoo_url: str, config: dict[str, object], message: str | None
) -> None:
    if message is None:  # events has a unique index on n, not a primary key
        with pytest.raises(ConfigError, match="has no primary key; declare 'key'"):
            run(_describe(zoo_url, config))
        assert run(_describe(zoo_url, {**config, "key": ["n"]}))["d"].key == ("n",)
        return
    with pytest.raises(ConfigError) as caught:
        run(_describe(zoo_url, config))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_columns_exclude_and_filters_shape_what_is_exposed(zoo_url: str) -> None:
    d = run(
        _describe(
            zoo_url,
            {"table": "zoo", "columns": ["t", "id", "b", "i4"], "exclude": ["b"], "filters": ["t"]},
        )
    )["d"]
    assert d.column_names == ("t", "id", "i4")
    assert d.filters == ("t",)
    assert d.key == ("id",)
    assert d.by_name["id"].nullable is False and d.by_name["t"].nullable is True


def test_a_saved_querys_declared_types_are_cast_and_described(zoo_url: str) -> None:
    config = {
        "query": "SELECT n, n::numeric / 7 AS ratio, day FROM events WHERE n <= 3",
        "types": {"ratio": "numeric(8, 3)", "day": "timestamptz"},
    }
    d = run(_describe(zoo_url, config))["d"]
    ratio = d.by_name["ratio"].type
    assert (ratio.display, ratio.precision, ratio.scale) == ("numeric(8,3)", 8, 3)
    assert d.by_name["day"].type.display == "timestamp with time zone"
    assert pgtypes.arrow_text_reason(ratio) is None
    undeclared = run(_describe(zoo_url, {"query": config["query"]}))["d"].by_name["ratio"].type
    assert "without a precision" in (pgtypes.arrow_text_reason(undeclared) or "")

    async def rows() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(zoo_url)
        try:
            got = await conn.fetch(f"SELECT ratio, day FROM {d.source} AS _t ORDER BY n")
            return [tuple(r) for r in got]
        finally:
            await conn.close()

    got = run(rows())
    assert [str(r[0]) for r in got] == ["0.143", "0.286", "0.429"]
    assert all(isinstance(r[1], datetime.datetime) and r[1].tzinfo for r in got)


def test_types_belong_to_saved_queries(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'types' belong to a 'query' dataset"):
        _load(tmp_path, '[datasets.t]\ntable = "t"\ntypes = { a = "int8" }\n')


RATIOS = """
[datasets.ratios]
query = "SELECT n, n::numeric / 7 AS ratio FROM events WHERE n <= 3"
key = ["n"]
types = { ratio = "numeric(8,3)" }

[datasets.raw_ratios]
query = "SELECT n, n::numeric / 7 AS ratio FROM events WHERE n <= 3"
key = ["n"]
"""


def test_declared_types_reach_arrow_and_datasets_says_what_travels_as_text(
    zoo_url: str, tmp_path: Path
) -> None:
    with serving(zoo_url, RATIOS, tmp_path) as server:
        listing = httpx.get(f"{server.base_url}/datasets", headers=server.headers()).json()
        columns = {
            d["name"]: {c["name"]: c["arrow_as_text"] for c in d["columns"]}
            for d in listing["datasets"]
        }
        assert columns["ratios"] == {"n": None, "ratio": None}
        assert "without a precision" in columns["raw_ratios"]["ratio"]
        body = httpx.get(f"{server.base_url}/datasets/ratios.arrows", headers=server.headers())
        table = pa.ipc.open_stream(body.content).read_all()
        assert table.schema.field("ratio").type == pa.decimal128(8, 3)
        assert [str(v) for v in table.column("ratio").to_pylist()] == ["0.143", "0.286", "0.429"]
        ndjson = httpx.get(f"{server.base_url}/datasets/ratios.ndjson", headers=server.headers())
        assert [line.split('"ratio":')[1] for line in ndjson.text.splitlines()] == [
            "0.143}",
            "0.286}",
            "0.429}",
        ]
