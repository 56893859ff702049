"""A data route's query string, validated against its dataset into a ``sql.Selection``.

The parameters are read by hand rather than declared in the route's signature because
they depend on the dataset: ``fields``, ``limit``, ``after``, ``format``, a saved query's
parameters, and ``column__op`` for each filterable column (``operators.OPERATORS``). Every
value is parsed by its column's type (``values.parse_value``); anything unknown,
malformed or repeated is a 422 naming the parameter and what is allowed, never silently
ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app import values
from app.datasets import Dataset
from app.errors import BadRequest, UnprocessableContent
from app.limits import INT8, MAX_IN_VALUES, MAX_LIST_CHARS, MAX_VALUE_LENGTH
from app.operators import OPERATORS
from app.sql import Condition, Selection

#: Parameters every data route takes besides filters and a saved query's parameters.
COMMON = ("fields", "limit", "after", "format", "download", "csv_safe")
#: ``download=``'s and ``csv_safe=``'s values.
DOWNLOAD_VALUES = {"1": True, "true": True, "0": False, "false": False}


@dataclass(frozen=True)
class Presentation:
    """How the rows are to be delivered, as opposed to which: ``format=``, ``download=``."""

    format: str | None = None
    #: ``Content-Disposition: attachment`` with the dataset's name, for every format.
    download: bool = False
    #: ``csv_safe=``: spreadsheet-safe CSV, or exact; None: as ``CSV_SAFE`` says.
    csv_safe: bool | None = None


def _invalid(name: str, message: str) -> UnprocessableContent:
    return UnprocessableContent(f"{name}: {message}", field=name)


def parse_fields(dataset: Dataset, raw: str) -> tuple[str, ...]:
    """``"id,channel"`` → ``("id", "channel")``, checked against the exposed columns."""
    names = [name.strip() for name in raw.split(",")]
    unknown = [name for name in names if name not in dataset.by_name]
    if unknown or not names:
        shown = ", ".join(repr(n[:40]) for n in unknown) or "nothing"
        raise _invalid(
            "fields", f"unknown field(s) {shown}; choose from: {', '.join(dataset.column_names)}"
        )
    return tuple(dict.fromkeys(names))  # a column named twice is sent once


def parse_limit(raw: str) -> int:
    if len(raw) > 20 or not values.is_integer_text(raw):  # int() refuses 4,301 digits
        raise _invalid("limit", "not an integer (ASCII digits)")
    limit = int(raw)
    if not 0 < limit <= INT8:
        raise _invalid("limit", f"must be between 1 and {INT8}")
    return limit


def parse_after(dataset: Dataset, raw: str) -> tuple[str, ...]:
    """``after=[500]`` or ``after=["2024-01-02","sms"]``: the key of the last row received."""
    if not dataset.key:
        raise BadRequest(
            f"after: dataset {dataset.name!r} has no key, so its rows have no order to resume "
            "in (declare 'key' for it)",
            field="after",
        )
    key_values = None
    # A key is at most len(key) values of MAX_VALUE_LENGTH, each at most 12 bytes a
    # character once JSON-escaped (a surrogate pair): anything longer is refused before
    # parsing; nesting deep enough to exhaust the parser's recursion is refused by it.
    if len(raw) <= len(dataset.key) * (MAX_VALUE_LENGTH * 12 + 8) + 2:
        try:
            key_values = json.loads(raw)
        except (ValueError, RecursionError):
            key_values = None
    if not isinstance(key_values, list) or len(key_values) != len(dataset.key):
        raise _invalid(
            "after",
            f"a JSON array of the last row's key ({', '.join(dataset.key)}), "
            f"e.g. after=[{', '.join('…' for _ in dataset.key)}]",
        )
    out = []
    for name, value in zip(dataset.key, key_values, strict=True):
        if value is None or isinstance(value, dict | list):
            raise _invalid("after", f"{name}: a key value is a string or a number")
        text = value if isinstance(value, str) else json.dumps(value)
        if isinstance(value, bool):
            text = "true" if value else "false"
        out.append(_value(dataset, name, text, "after"))
    return tuple(out)


def _value(
    dataset: Dataset, column: str, raw: str, parameter: str, limit: int = MAX_VALUE_LENGTH
) -> str:
    if len(raw) > limit:
        raise _invalid(parameter, f"longer than {limit} characters")
    try:
        return values.parse_value(dataset.by_name[column].type, raw)
    except values.InvalidValue as exc:
        raise _invalid(parameter, str(exc)) from None


def _filter(dataset: Dataset, name: str) -> tuple[str, str] | None:
    """``col__op`` (or ``col``, meaning ``col__eq``) as (column, operator), or None when
    ``name`` is not a filter of the dataset."""
    column, _, suffix = name.rpartition("__")
    if suffix in OPERATORS and column in dataset.filters:
        return column, suffix
    return (name, "eq") if name in dataset.filters else None


def _condition(dataset: Dataset, name: str, raw: str) -> Condition | None:
    """``col__op=value`` as a condition, or None when ``name`` is not a filter."""
    found = _filter(dataset, name)
    if found is None:
        return None
    column, suffix = found
    op = OPERATORS[suffix]
    pgtype = dataset.by_name[column].type
    if suffix == "isnull":
        lowered = raw.strip().lower()
        if lowered not in ("true", "false"):
            raise _invalid(name, "true or false")
        return Condition(column, suffix, lowered == "true")
    refusal = op.refusal(column, pgtype)
    if refusal is not None:
        raise _invalid(name, refusal)
    if suffix == "in":
        if len(raw) > MAX_LIST_CHARS:
            raise _invalid(name, f"longer than {MAX_LIST_CHARS} characters")
        items = raw.split(",")
        if len(items) > MAX_IN_VALUES:
            raise _invalid(name, f"at most {MAX_IN_VALUES} values")
        # the list as a whole is bounded (MAX_LIST_CHARS), as the OpenAPI schema says
        parsed = tuple(_value(dataset, column, v, name, MAX_LIST_CHARS) for v in items)
        return Condition(column, suffix, parsed)
    if suffix == "prefix":
        if "\x00" in raw or len(raw) > MAX_VALUE_LENGTH:
            raise _invalid(name, "not a valid prefix")
        return Condition(column, suffix, raw)
    return Condition(column, suffix, _value(dataset, column, raw, name))


def _known(dataset: Dataset, aliases: Mapping[str, str]) -> str:
    parts = [*COMMON, *(p.name for p in dataset.params), *aliases]
    ops = "|".join(s for s in OPERATORS if s != "eq")
    return (
        f"this route takes {', '.join(parts)}, and filters on "
        f"{', '.join(dataset.filters) or 'no column'} (as col=value or col__[{ops}]=value)"
    )


def _check_once(seen: set[str], raw_name: str) -> None:
    """Refuse a parameter given twice. Every parameter takes one value (lists are comma
    separated: ``fields``, ``__in``), and a repeat is where a proxy, a quota or a cache
    key that reads the first value and a server that reads the last disagree
    (``limit=1&limit=1000000``). Two spellings of one filter (``i4`` and ``i4__eq``, a
    historical name and the filter it stands for) are two conditions, both applied:
    no value is dropped, so nothing is bypassed."""
    if raw_name in seen:
        raise _invalid(raw_name, "given more than once; give each parameter once")
    seen.add(raw_name)


def parse(
    dataset: Dataset, items: Iterable[tuple[str, str]], *, aliases: Mapping[str, str] | None = None
) -> tuple[Selection, Presentation]:
    """The selection a query string asks for, and how it is to be delivered; ``aliases``:
    other names of filters this route takes (the demo's historical ones)."""
    aliases = aliases or {}
    fields = dataset.column_names
    conditions: list[Condition] = []
    after: tuple[str, ...] | None = None
    limit: int | None = None
    fmt: str | None = None
    download = False
    csv_safe: bool | None = None
    params: dict[str, str] = {}
    seen: set[str] = set()
    declared = {p.name: p for p in dataset.params}
    for raw_name, raw in items:
        name = aliases.get(raw_name, raw_name)
        _check_once(seen, raw_name)
        if name == "fields":
            fields = parse_fields(dataset, raw)
        elif name == "limit":
            limit = parse_limit(raw)
        elif name == "after":
            after = parse_after(dataset, raw)
        elif name == "format":
            fmt = raw
        elif name == "download":
            if raw not in DOWNLOAD_VALUES:
                raise _invalid(name, "1 or 0 (true or false)")
            download = DOWNLOAD_VALUES[raw]
        elif name == "csv_safe":
            if raw not in DOWNLOAD_VALUES:
                raise _invalid(name, "1 or 0 (true or false)")
            csv_safe = DOWNLOAD_VALUES[raw]
        elif name in declared:
            param = declared[name]
            try:
                params[name] = values.parse_value(param.type, raw)
            except values.InvalidValue as exc:
                raise _invalid(name, str(exc)) from None
        else:
            try:
                condition = _condition(dataset, name, raw)
            except UnprocessableContent as exc:
                if raw_name != name:  # name the parameter the client sent
                    raise _invalid(raw_name, exc.detail.partition(": ")[2]) from None
                raise
            if condition is None:
                raise _invalid(raw_name, f"unknown parameter; {_known(dataset, aliases)}")
            conditions.append(condition)
    missing = [p.name for p in dataset.params if p.name not in params]
    if missing:
        raise _invalid(missing[0], f"required parameter of dataset {dataset.name!r} is missing")
    selection = Selection(
        fields=fields,
        conditions=tuple(conditions),
        after=after,
        limit=limit,
        params=tuple(params[p.name] for p in dataset.params),
    )
    return selection, Presentation(fmt, download, csv_safe)
