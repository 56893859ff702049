"""What a dataset is: its declaration (``datasets.toml``) and its description, read from
the catalog when the service starts.

A dataset is a table, a view or a saved query of the user's own database. Its
declaration says which; the catalog says its columns, their types and nullability, and
the primary key. The result, a ``Dataset``, is all the SQL builder (``sql.py``), the
type map (``pgtypes.py``) and the routes need: nothing else in the service names a
column. Every identifier from the file is taken literally and quoted where it reaches
SQL; saved queries' ``:name`` parameters are bound, never spliced.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from app import pgtypes
from app.operators import operators_for
from app.pgtypes import PgType

#: A dataset's name is a URL path segment: letters, digits, ``_`` and ``-`` (no ``.``,
#: which starts a format suffix such as ``/datasets/orders.csv``).
NAME_PATTERN = r"^[\w-]{1,63}$"
DatasetName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=63)]


class DatasetConfig(BaseModel):
    """One ``[datasets.NAME]`` table of the file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    table: Identifier | None = None
    schema_: Identifier = Field(default="public", alias="schema")
    query: str | None = None
    key: list[Identifier] | None = None
    columns: list[Identifier] | None = None
    exclude: list[Identifier] = []
    filters: list[Identifier] | None = None
    description: str | None = None
    #: A saved query's named parameters and their PostgreSQL types.
    params: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_]\w*$")], str] = {}
    #: A saved query's columns cast to these types (``{ temp = "numeric(6,2)" }``): what
    #: PostgreSQL cannot tell of an expression (a numeric's precision, which Arrow needs).
    types: dict[Identifier, str] = {}
    #: A caller's token must carry one of these roles (``JWT_ROLES_CLAIM``); default: any.
    roles: list[Annotated[str, StringConstraints(min_length=1)]] | None = None
    #: ``{ column = "claim:NAME" }``: every export adds ``column = <the claim's value>``.
    row_filter: dict[Identifier, Annotated[str, StringConstraints(pattern=r"^claim:.+$")]] = {}

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.params and self.query is None:
            raise ValueError("'params' belong to a 'query' dataset")
        if self.types and self.query is None:
            raise ValueError("'types' belong to a 'query' dataset (a table's are its own)")
        if self.key is not None and not self.key:
            raise ValueError("'key' names at least one column")
        if self.roles is not None and not self.roles:
            raise ValueError("'roles' names at least one role (leave it out: any caller)")
        return self


class DatasetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    datasets: dict[DatasetName, DatasetConfig]


class ConfigError(ValueError):
    """A dataset declaration that cannot be served, in one line naming what is wrong."""


def load(path: Path) -> DatasetsFile:
    """The declarations in ``path`` (with none, the demo's: ``demo.declared``)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return DatasetsFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"]]
        where = ""
        if len(loc) >= 2 and loc[0] == "datasets":
            where = f"dataset {loc[1]!r}"
            if loc[2:] == ["[key]"]:
                raise ConfigError(
                    f"{path}: {where}: a dataset name may hold only letters, digits, '_' and "
                    "'-' (it is a URL path segment)"
                ) from None
            if len(loc) > 2:
                where += f", key {loc[2]!r}"
            where += ": "
        elif loc:
            where = f"key {loc[0]!r}: "
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}{message}") from None


@dataclass(frozen=True)
class Column:
    name: str
    type: PgType
    nullable: bool


@dataclass(frozen=True)
class Param:
    name: str
    type: PgType


@dataclass(frozen=True)
class RowFilter:
    """``column = $n``, bound with the value of a claim of the caller's token."""

    column: str
    type: PgType
    claim: str


@dataclass(frozen=True)
class Dataset:
    """A servable dataset: where its rows come from and what they look like."""

    name: str
    #: ``table``, ``view`` (also materialized and foreign tables) or ``query``.
    kind: Literal["table", "view", "query"]
    #: The FROM item: a quoted relation, or the saved query with ``$1…`` placeholders.
    source: str
    #: The exposed columns, in the order rows carry them.
    columns: tuple[Column, ...]
    #: The columns rows are ordered by and resumed after; empty: no order, no resume.
    key: tuple[str, ...]
    filters: tuple[str, ...]
    params: tuple[Param, ...] = ()
    description: str | None = None
    #: Roles of which a caller needs one (empty: any authenticated caller).
    roles: tuple[str, ...] = ()
    row_filter: tuple[RowFilter, ...] = ()
    by_name: Mapping[str, Column] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {c.name: c for c in self.columns})

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def summary(dataset: Dataset) -> dict[str, Any]:
    """The dataset as ``GET /datasets`` lists it (without the routes and estimate)."""
    return {
        "name": dataset.name,
        "kind": dataset.kind,
        "description": dataset.description,
        "columns": [
            {
                "name": c.name,
                "type": c.type.display,
                "kind": c.type.kind.value,
                "nullable": c.nullable,
                #: Why Arrow and Parquet carry the column as text, or None: typed.
                "arrow_as_text": pgtypes.arrow_text_reason(c.type),
            }
            for c in dataset.columns
        ],
        "key": list(dataset.key),
        "filters": list(dataset.filters),
        #: Which ``col__op`` each filter takes (``eq`` is ``col=v``), as the parser decides.
        "operators": {
            name: [op.suffix for op in operators_for(name, dataset.by_name[name].type)]
            for name in dataset.filters
        },
        "params": [{"name": p.name, "type": p.type.display} for p in dataset.params],
        "roles": list(dataset.roles),
    }
