"""The type map, pure: kinds from the catalog, numeric modifiers, filter value parsing."""

from __future__ import annotations

import pytest

from app import pgtypes, values
from app.pgtypes import Kind, PgType


def t(name: str, kind: Kind) -> PgType:
    return PgType(name, name, name, kind)


def test_kinds_from_catalog_fields() -> None:
    assert pgtypes.kind_of("int4", "b", "N") is Kind.INTEGER
    assert pgtypes.kind_of("_int4", "b", "A") is Kind.ARRAY
    assert pgtypes.kind_of("mood", "e", "E") is Kind.ENUM
    assert pgtypes.kind_of("inet", "b", "I") is Kind.OTHER


def test_numeric_modifier() -> None:
    assert pgtypes.numeric_modifier(-1) == (None, None)
    assert pgtypes.numeric_modifier((5 << 16 | 2) + 4) == (5, 2)


@pytest.mark.parametrize(
    ("pgtype", "raw", "bound"),
    [
        (t("int2", Kind.INTEGER), " -32768 ", "-32768"),
        (t("float8", Kind.FLOAT), "nan", "NaN"),
        (t("float8", Kind.FLOAT), "-inf", "-Infinity"),
        (t("numeric", Kind.NUMERIC), "1.50", "1.50"),
        (t("bool", Kind.BOOLEAN), "false", "false"),
        (
            t("uuid", Kind.UUID),
            "A0EEBC999C0B4EF8BB6D6BB9BD380A11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
        (t("date", Kind.DATE), "2024-02-29", "2024-02-29"),
        (
            t("timestamptz", Kind.TIMESTAMPTZ),
            "2024-01-01T02:00:00+02:00",
            "2024-01-01T00:00:00+00:00",
        ),
        (
            t("timestamptz", Kind.TIMESTAMPTZ),
            "2024-01-01 00:00:00.1234567",
            "2024-01-01T00:00:00.123456+00:00",
        ),
        (t("timestamp", Kind.TIMESTAMP), "2024-01-01T00:00:00", "2024-01-01T00:00:00"),
        (t("inet", Kind.OTHER), "10.0.0.1", "10.0.0.1"),
    ],
)
def test_values_are_checked_and_normalised(pgtype: PgType, raw: str, bound: str) -> None:
    assert values.parse_value(pgtype, raw) == bound


@pytest.mark.parametrize(
    ("pgtype", "raw"),
    [
        (t("int2", Kind.INTEGER), "32768"),
        (t("int8", Kind.INTEGER), "1.0"),
        (t("numeric", Kind.NUMERIC), "one"),
        (t("bool", Kind.BOOLEAN), "maybe"),
        (t("bool", Kind.BOOLEAN), "T"),  # the documented schema says true or false
        (t("bool", Kind.BOOLEAN), "0"),
        (t("uuid", Kind.UUID), "xyz"),
        (t("date", Kind.DATE), "2023-02-29"),
        (t("timestamptz", Kind.TIMESTAMPTZ), "1700000000"),
        (t("timestamptz", Kind.TIMESTAMPTZ), "9999-12-31T23:59:59-10:00"),
        (t("timestamp", Kind.TIMESTAMP), "2024-01-01T00:00:00Z"),
        (t("text", Kind.TEXT), "a\x00b"),
    ],
)
def test_bad_values_are_refused(pgtype: PgType, raw: str) -> None:
    with pytest.raises(values.InvalidValue):
        values.parse_value(pgtype, raw)


def test_value_patterns_never_admit_an_out_of_range_integer() -> None:
    import re

    pattern = pgtypes.value_pattern(t("int2", Kind.INTEGER))
    assert pattern is not None
    assert re.fullmatch(pattern, "9999") and not re.fullmatch(pattern, "99999")
