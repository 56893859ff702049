"""A selection split into key ranges of about equal rows, inside a held snapshot (the
parts of a partitioned export, ``partitions.py``). Never ``OFFSET``: every bound is the key
of a real row of the snapshot, found through the key's index, read through the caller's
filters and row security.

The bounds come from the cheapest source that is good enough: the planner's histogram of
the first key column inside the selection's range of it (a few milliseconds); else the
quantiles of a sample of the table's pages (``TABLESAMPLE SYSTEM``); else (a view, a saved
query, a selection too small for either) exact positions, found by a count and one ordered
pass over the keys.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import asyncpg

from app import cursor, sql
from app.datasets import Dataset
from app.errors import BadRequest
from app.limits import MIN_SAMPLE_PER_PART, SAMPLE_ROWS
from app.sql import Condition, Selection

#: A part's key range and estimated rows: (after, until, rows), the bounds as text.
Range = tuple[tuple[str, ...] | None, tuple[str, ...] | None, int]


async def split(
    conn: asyncpg.Connection, dataset: Dataset, selection: Selection, parts: int
) -> list[Range]:
    """The selection's key ranges, (after, until, estimated rows) each, in key order: at
    most ``parts``, fewer when the selection has fewer rows (or, a view's, fewer distinct
    keys). A table's bounds come from the planner's histogram of its first key column
    inside the selection's range of it, else from a sample of its pages
    (``TABLESAMPLE``); a view's and a saved query's, from exact positions (a count and one
    ordered pass). Every bound is the key of a real row, read in the snapshot through the
    caller's filters and row security. A 400
    when a row of it has a NULL in its key (a key the catalog says may be NULL, as a
    view's): such a row would be in no range."""
    if any(dataset.by_name[k].nullable for k in dataset.key):
        query = sql.null_keys(dataset, selection)
        if await conn.fetchval(query.sql, *query.args):
            raise BadRequest(
                f"dataset {dataset.name!r}: a row of this selection has a NULL in its key "
                f"({', '.join(dataset.key)}), so it would be in no part; filter it out "
                f"({dataset.key[0]}__isnull=false) or export it in one stream",
                field="parts",
            )
    uppers: list[tuple[str, ...]] = []
    counts: list[float] | None = None
    if parts > 1 and dataset.kind == "table":
        if _spread_like_the_table(dataset, selection):
            uppers, counts = await _from_histogram(conn, dataset, selection, parts)
        if counts is None:
            uppers, counts = await _from_sample(conn, dataset, selection, parts)
    if parts > 1 and counts is None:
        # Not a table, or a sample too small to split this selection (a filter keeps a
        # sliver of a large table): exact positions, counted, then one ordered pass.
        total = await cursor.exact_count(conn, sql.count(dataset, selection))
        positions = sorted({total * i // parts for i in range(1, parts)} - {0})
        if positions:
            query = sql.keys_at(dataset, selection, positions)
            rows = await conn.fetch(query.sql, *query.args)
            uppers = list(dict.fromkeys(tuple(r[: len(dataset.key)]) for r in rows))
        counts = [float(n) for n in _between(positions, total)]
    estimate = await cursor.estimated_count(conn, sql.as_columns(dataset, selection))
    # each range's share of the rows, as the sample (or the count) saw them
    pieces = len(uppers) + 1
    shares = counts if counts and len(counts) == pieces else [1.0] * pieces
    ranges = []
    bounds: list[tuple[str, ...] | None] = [None, *uppers, None]
    for (after, until), share in zip(itertools.pairwise(bounds), shares, strict=False):
        ranges.append((after, until, round(estimate * share / max(sum(shares), 1))))
    return ranges


def _spread_like_the_table(dataset: Dataset, selection: Selection) -> bool:
    """Whether the selection's rows lie along the first key column as the table's do: it
    is cut only on that column (a filter on another, ``channel=sms``, may keep rows at
    its two ends only, which the histogram cannot see; a sample can)."""
    first = dataset.key[0]
    return not selection.row_filter and all(c.column == first for c in selection.conditions)


async def _from_histogram(
    conn: asyncpg.Connection, dataset: Dataset, selection: Selection, parts: int
) -> tuple[list[tuple[str, ...]], list[float] | None]:
    """Bounds at the planner's histogram of the first key column, inside the selection's
    range of it: the pieces between neighbouring bounds hold equal shares of the table's
    rows (the two at the ends, partial, as full as the planner estimates), and the
    selection's rows are taken to be spread like the table's (the planner's own
    assumption). A few milliseconds: one statistics row, two index probes, three plans,
    one probe a bound. None when fewer than two pieces a part lie inside the range."""
    query = sql.histogram_within(dataset, selection)
    inside = [r[0] for r in await conn.fetch(query.sql, *query.args)]
    if len(inside) + 1 < 2 * parts:
        return [], None
    # The pieces at the ends are partial: the planner says how full (it interpolates
    # inside a histogram bucket), against a whole piece.
    first = dataset.key[0]

    async def estimate(*conditions: Condition) -> float:
        within = replace(selection, conditions=(*selection.conditions, *conditions))
        return float(await cursor.estimated_count(conn, sql.as_columns(dataset, within)))

    unit = await estimate(Condition(first, "gte", inside[0]), Condition(first, "lt", inside[1]))
    head = await estimate(Condition(first, "lt", inside[0]))
    tail = await estimate(Condition(first, "gte", inside[-1]))
    weights = [head / max(unit, 1.0), *([1.0] * (len(inside) - 1)), tail / max(unit, 1.0)]
    total = sum(weights)
    cumulative = list(itertools.accumulate(weights))  # rows below inside[j] at cumulative[j]
    chosen = sorted(
        {
            1 + min(range(len(inside)), key=lambda j: abs(cumulative[j] - i * total / parts))
            for i in range(1, parts)
        }
    )
    uppers: list[tuple[str, ...]] = []
    cuts = []
    for j in chosen:  # rows below inside[j - 1] go to the parts before it
        query = sql.last_key_below(dataset, selection, inside[j - 1])
        row = await conn.fetchrow(query.sql, *query.args)
        if row is not None and tuple(row) not in uppers:
            uppers.append(tuple(row))
            cuts.append(j)
    edges = [0, *cuts, len(weights)]
    return uppers, [sum(weights[a:b]) for a, b in itertools.pairwise(edges)]


async def _from_sample(
    conn: asyncpg.Connection, dataset: Dataset, selection: Selection, parts: int
) -> tuple[list[tuple[str, ...]], list[float] | None]:
    """Bounds at the quantiles of the selection's rows on a random sample of the table's
    pages (``TABLESAMPLE SYSTEM``, about ``SAMPLE_ROWS`` rows of the table); None when
    fewer than ``MIN_SAMPLE_PER_PART`` rows a part of the selection were in it."""
    table = await cursor.estimated_count(conn, sql.Query(f"SELECT 1 FROM {dataset.source}"))
    percent = min(100.0, max(SAMPLE_ROWS * 100.0 / max(table, 1), 0.001))
    query = sql.sampled_keys(dataset, selection, percent)
    sample = [tuple(r) for r in await conn.fetch(query.sql, *query.args)]
    if len(sample) < MIN_SAMPLE_PER_PART * parts:
        return [], None
    cuts = [len(sample) * i // parts for i in range(1, parts)]
    uppers = list(dict.fromkeys(sample[c - 1] for c in cuts))
    return uppers, [float(n) for n in _between(cuts, len(sample))]


def _between(cuts: list[int], total: int) -> list[int]:
    """The sizes of the pieces ``cuts`` (positions in ``total``) make, empty ones left out
    as their duplicate bounds are."""
    edges = [0, *cuts, total]
    return [b - a for a, b in itertools.pairwise(edges) if b > a]
