"""The SQL builder, pure: quoting, the operator table, keyset resume, parameter numbering."""

from __future__ import annotations

from app import pgtypes, sql
from app.datasets import Column, Dataset, Param
from app.pgtypes import Kind, PgType

INT8 = PgType("int8", "bigint", "bigint", Kind.INTEGER)
TEXT = PgType("text", "text", "text", Kind.TEXT)
DATE = PgType("date", "date", "date", Kind.DATE)


def dataset(**overrides: object) -> Dataset:
    values: dict[str, object] = {
        "name": "odd",
        "kind": "table",
        "source": '"public"."Order Items"',
        "columns": (
            Column("Order", INT8, False),
            Column('a"b', TEXT, True),
            Column("select", DATE, False),
        ),
        "key": ("Order", "select"),
        "filters": ("Order", 'a"b', "select"),
    }
    values.update(overrides)
    return Dataset(**values)  # type: ignore[arg-type]


def test_identifiers_are_quoted_and_literals_escaped() -> None:
    assert sql.ident('a"b') == '"a""b"'
    assert sql.ident("Order Items") == '"Order Items"'
    assert sql.literal("it's \\ here") == "E'it''s \\\\ here'"


def test_rows_come_in_key_order_and_resume_with_a_row_value_comparison() -> None:
    d = dataset()
    selection = sql.Selection(fields=("Order",), after=("7", "2024-01-02"), limit=10)
    query = sql.as_columns(d, selection)
    assert query.sql == (
        'SELECT "Order" FROM "public"."Order Items" AS _t WHERE (_t."Order", _t."select") > '
        '($1::text::bigint, $2::text::date) ORDER BY _t."Order", _t."select" LIMIT $3'
    )
    assert query.args == ("7", "2024-01-02", 10)


def test_a_part_is_its_key_range_and_a_resume_inside_it_only_narrows_it() -> None:
    d = dataset()
    selection = sql.Selection(
        fields=("Order",),
        after=("9", "2024-01-05"),
        range_after=("7", "2024-01-02"),
        range_until=("20", "2024-02-01"),
    )
    query = sql.count(d, selection)
    assert query.sql == (
        'SELECT count(*) FROM "public"."Order Items" AS _t WHERE (_t."Order", _t."select") > '
        '($1::text::bigint, $2::text::date) AND (_t."Order", _t."select") > '
        '($3::text::bigint, $4::text::date) AND (_t."Order", _t."select") <= '
        "($5::text::bigint, $6::text::date)"
    )
    assert query.args == ("9", "2024-01-05", "7", "2024-01-02", "20", "2024-02-01")


def test_each_operator_compiles_from_the_table() -> None:
    d = dataset()
    conditions = (
        sql.Condition("Order", "gte", "5"),
        sql.Condition('a"b', "prefix", "50%_off\\"),
        sql.Condition("Order", "in", ("1", "2")),
        sql.Condition('a"b', "isnull", True),
        sql.Condition("select", "ne", "2024-01-01"),
    )
    query = sql.count(d, sql.Selection(fields=("Order",), conditions=conditions))
    assert query.sql == (
        'SELECT count(*) FROM "public"."Order Items" AS _t WHERE "Order" >= $1::text::bigint '
        'AND "a""b"::text LIKE $2::text::text ESCAPE \'\\\' '
        'AND "Order" = ANY($3::text[]::bigint[]) AND "a""b" IS NULL '
        'AND "select" <> $4::text::date'
    )
    assert query.args == ("5", "50\\%\\_off\\\\%", ["1", "2"], "2024-01-01")


def test_an_exact_count_stops_at_the_limit() -> None:
    condition = sql.Condition("Order", "gte", "5")
    query = sql.count(dataset(), sql.Selection(fields=("Order",), conditions=(condition,), limit=3))
    assert query.sql == (
        'SELECT count(*) FROM (SELECT 1 FROM "public"."Order Items" AS _t '
        'WHERE "Order" >= $1::text::bigint LIMIT $2) AS _c'
    )
    assert query.args == ("5", 3)


def test_a_saved_querys_parameters_come_first() -> None:
    d = dataset(
        kind="query",
        source='(SELECT 1 AS "Order" WHERE $1::text::date > now())',
        params=(Param("since", DATE),),
        key=(),
    )
    query = sql.as_columns(d, sql.Selection(fields=("Order",), params=("2024-01-01",)))
    assert query.sql.endswith("AS _t LIMIT $2")
    assert query.args == ("2024-01-01", None)
    assert "ORDER BY" not in query.sql


def test_json_object_sql_names_each_key_as_json_and_renders_nulls() -> None:
    expression = sql.json_object_sql(dataset(), ("Order", 'a"b'))
    assert expression == (
        'E\'{"Order":\' || "Order"::text || E\',"a\\\\"b":\' || '
        "coalesce(to_json(\"a\"\"b\")::text, 'null') || '}'"
    )


def test_csv_and_arrow_shapes_per_type() -> None:
    stamp = PgType("timestamptz", "timestamp with time zone", "timestamptz", Kind.TIMESTAMPTZ)
    assert pgtypes.csv_sql('"t"', stamp).startswith(
        "CASE WHEN \"t\" >= '0001-01-01 00:00:00+00' AND \"t\" < 'infinity' "
        "THEN replace(\"t\"::text, ' ', 'T') || ':00' ELSE to_json(\"t\") #>> '{}' END"
    )
    assert pgtypes.csv_sql('"x"', TEXT) == '"x"'
    # the epoch offsets, guarded: a value with no Arrow form fails the export
    stamp_sql = pgtypes.arrow_sql('"t"', stamp)
    assert stamp_sql.endswith('ELSE (extract(epoch FROM "t") * 1000000)::int8 END')
    assert "'a timestamp Arrow cannot hold (infinite, or after 294247-01-10)')::int" in stamp_sql
    date_sql = pgtypes.arrow_sql('"d"', DATE)
    assert date_sql.startswith('CASE WHEN NOT isfinite("d") THEN')
    assert date_sql.endswith("ELSE (\"d\" - DATE '1970-01-01') END")
