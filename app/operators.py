"""The filter operators, declared once (Datasette's declarative filter table): the
query-string parser (``params.py``), the SQL builder (``sql.py``), the dataset list and the
OpenAPI document all read this table."""

from __future__ import annotations

from dataclasses import dataclass

from app import pgtypes


@dataclass(frozen=True)
class Operator:
    """A filter operator: ``col__<suffix>=value`` in a query string."""

    suffix: str
    #: SQL with ``{c}`` for the column and ``{v}`` for the bound, cast value.
    template: str
    ordered_only: bool = False
    text_only: bool = False

    def refusal(self, column: str, pgtype: pgtypes.PgType) -> str | None:
        """Why this operator does not apply to ``column`` of ``pgtype``; None if it does.
        (The query-string parser says it, the OpenAPI document leaves such parameters out.)"""
        if self.suffix == "isnull":
            return None
        if not pgtype.comparable:
            return f"{pgtype.display} values cannot be compared; use {column}__isnull"
        if self.ordered_only and not pgtype.ordered:
            return f"{pgtype.display} has no order; use =, __ne or __in"
        if self.text_only and pgtype.kind is not pgtypes.Kind.TEXT:
            return f"__{self.suffix} applies to text columns only"
        return None


def operators_for(column: str, pgtype: pgtypes.PgType) -> list[Operator]:
    """The operators that apply to ``column`` of ``pgtype`` (the dataset list and the
    OpenAPI document show these; the parser refuses the others)."""
    return [op for op in OPERATORS.values() if op.refusal(column, pgtype) is None]


#: The filter operators, declared once: the parser, the SQL and the docs read this table.
OPERATORS: dict[str, Operator] = {
    op.suffix: op
    for op in (
        Operator("eq", "{c} = {v}"),
        Operator("ne", "{c} <> {v}"),
        Operator("gt", "{c} > {v}", ordered_only=True),
        Operator("gte", "{c} >= {v}", ordered_only=True),
        Operator("lt", "{c} < {v}", ordered_only=True),
        Operator("lte", "{c} <= {v}", ordered_only=True),
        Operator("in", "{c} = ANY({v})"),
        Operator("isnull", "{c} IS {v}"),
        Operator("prefix", "{c} LIKE {v} ESCAPE '\\'", text_only=True),
    )
}
