"""Each dataset's operations in the OpenAPI document: its real parameters and row schema.

The data routes read their query strings by hand (``params.py``), so FastAPI cannot see
their parameters; and the columns are known only once the catalog has been read. So the
routes carry a marker (``x-rowstream-dataset``), and the document is completed from the
catalog when it is first asked for: typed filter parameters, the row schema, an example
of every format built from the column types, and real problem examples.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from starlette.responses import JSONResponse

from app import access, formats, negotiation, pgtypes
from app.auth import Principal
from app.datasets import Dataset
from app.deps import current_principal
from app.errors import Unauthorized
from app.limits import INT8, MAX_VALUE_LENGTH
from app.operators import operators_for
from app.params import DOWNLOAD_VALUES
from app.settings import default

MARKER = "x-rowstream-dataset"

_SAMPLES: dict[pgtypes.Kind, Any] = {
    pgtypes.Kind.INTEGER: 1,
    pgtypes.Kind.FLOAT: 1.5,
    pgtypes.Kind.NUMERIC: 12.5,
    pgtypes.Kind.BOOLEAN: False,
    pgtypes.Kind.UUID: "0b3b8c9e-3c4a-4f7e-9a57-0d5c2d1d6f00",
    pgtypes.Kind.DATE: "2024-01-01",
    pgtypes.Kind.TIME: "12:00:00",
    pgtypes.Kind.TIMESTAMP: "2024-01-01T00:00:01",
    pgtypes.Kind.TIMESTAMPTZ: "2024-01-01T00:00:01+00:00",
    pgtypes.Kind.BYTEA: "\\x0102",
    pgtypes.Kind.JSON: {"a": 1},
    pgtypes.Kind.JSONB: {"a": 1},
    pgtypes.Kind.ARRAY: [],
}


def example_row(dataset: Dataset) -> dict[str, Any]:
    return {c.name: _SAMPLES.get(c.type.kind, "text") for c in dataset.columns}


def _problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {
        "application/problem+json": {
            "schema": {"type": "object"},
            "example": {"type": "about:blank", "title": title, "status": status, "detail": detail},
        }
    }


def responses(dataset: Dataset, media_types: tuple[str, ...]) -> dict[str, Any]:
    """The ``responses`` of one of the dataset's data routes."""
    row = example_row(dataset)
    row_schema = {
        "type": "object",
        "properties": {c.name: pgtypes.json_schema(c.type, c.nullable) for c in dataset.columns},
    }
    order = f"in key order ({', '.join(dataset.key)})" if dataset.key else "in the query's order"
    return {
        "200": {
            "description": f"The rows, {order}. Headers: `X-Total-Count` (with "
            "`Prefer: count=exact`) or `X-Total-Count-Estimate`.",
            "content": {m: formats.FORMATS[m].openapi(row, row_schema) for m in media_types},
        },
        "400": {
            "description": "Malformed request (e.g. a request line too long for the server), "
            "or `after=` on a dataset without a key",
            "content": {
                **_problem(400, "Bad Request", "after: dataset 'x' has no key…"),
                # what uvicorn answers for a request it cannot parse
                "text/plain": {"schema": {"type": "string"}},
            },
        },
        "401": {
            "description": "Missing, invalid or expired token",
            "content": _problem(401, "Unauthorized", "missing bearer token"),
        },
        "404": {
            "description": "No such dataset",
            "content": _problem(404, "Not Found", "no dataset 'x'; GET /datasets lists them"),
        },
        "406": {
            "description": "None of the accepted formats is served",
            "content": _problem(406, "Not Acceptable", "none of the requested media types…"),
        },
        "422": {
            "description": "Invalid or unknown parameter",
            "content": _problem(
                422, "Unprocessable Content", f"limit: must be between 1 and {INT8}"
            ),
        },
        "431": {
            "description": "The request's head (request line and headers) is over "
            f"`MAX_HEADER_BYTES` (by default {default('max_header_bytes'):,} bytes)",
            "content": _problem(
                431,
                "Request Header Fields Too Large",
                f"the request's headers exceed {default('max_header_bytes'):,} bytes",
            ),
        },
        "503": {
            "description": "Database unavailable or at capacity (see `Retry-After`)",
            "content": _problem(503, "Service Unavailable", "database unavailable: timed out"),
        },
    }


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description, **extra}


def parameters(
    dataset: Dataset, media_types: tuple[str, ...], aliases: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every query parameter the dataset's route takes, typed; ``aliases``: other names the
    route takes for filters (the demo's historical ones)."""
    out = [
        _query(
            "fields",
            {"type": "string", "pattern": _fields_pattern(dataset)},
            f"Comma-separated columns, in the order wanted. Default: all "
            f"({', '.join(dataset.column_names)}).",
            example=",".join(dataset.column_names[:3]),
        ),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": INT8},
            "At most this many rows. Default: all.",
            example=100,
        ),
        _query(
            "format",
            {"type": "string", "enum": negotiation.names(media_types)},
            "Overrides `Accept`.",
        ),
        _query(
            "download",
            {"type": "string", "enum": list(DOWNLOAD_VALUES)},
            "`1`: a file to save, named after the dataset (`Content-Disposition: "
            "attachment`). Parquet always is.",
        ),
        _query(
            "csv_safe",
            {"type": "string", "enum": list(DOWNLOAD_VALUES)},
            "CSV only. `1`: text cells and column names a spreadsheet would run as formulas "
            "(`=`, `+`, `-`, `@`, tab, CR, `'` first) get a `'` before them; `0`: exact. "
            "Default: the `CSV_SAFE` setting.",
        ),
    ]
    if dataset.key:
        out.append(
            _query(
                "after",
                _after_schema(dataset),
                f"Resume after the last row received: its key ({', '.join(dataset.key)}) as "
                "a JSON array.",
            )
        )
    for param in dataset.params:
        out.append(
            _query(
                param.name,
                pgtypes.parameter_schema(param.type),
                f"The saved query's parameter ({param.type.display}).",
                required=True,
            )
        )
    for name in dataset.filters:
        pgtype = dataset.by_name[name].type
        for op in operators_for(name, pgtype):
            if op.suffix == "isnull":
                schema: dict[str, Any] = {"type": "boolean"}
            elif op.suffix == "in":
                schema = pgtypes.list_schema(pgtype)
            elif op.suffix == "prefix":
                schema = {"type": "string", "pattern": r"^[^\x00]*$", "maxLength": MAX_VALUE_LENGTH}
            else:
                schema = pgtypes.parameter_schema(pgtype)
            label = name if op.suffix == "eq" else f"{name}__{op.suffix}"
            out.append(_query(label, schema, f"`{name}` {op.template.format(c='', v='v')}"))
    for name, meaning in (aliases or {}).items():
        column = meaning.rpartition("__")[0]
        if column in dataset.by_name:
            schema = pgtypes.parameter_schema(dataset.by_name[column].type)
            out.append(_query(name, schema, f"Historical name of `{meaning}`."))
    return out


def _fields_pattern(dataset: Dataset) -> str:
    name = "|".join(re.escape(n) for n in dataset.column_names)
    return rf"^\s*({name})\s*(,\s*({name})\s*)*$"


def _after_schema(dataset: Dataset) -> dict[str, Any]:
    """A JSON array of the key's values; typed where every key column's values are."""
    items = []
    for name in dataset.key:
        pgtype = dataset.by_name[name].type
        pattern = pgtypes.value_pattern(pgtype)
        if pattern is None or pgtype.kind in (pgtypes.Kind.TEXT, pgtypes.Kind.ENUM):
            return {"type": "string", "pattern": r"^\[.*\]$"}
        quoted = pgtype.kind not in (pgtypes.Kind.INTEGER, pgtypes.Kind.BOOLEAN)
        items.append(f'"{pattern}"' if quoted else pattern)
    separator = r",\s?"
    return {"type": "string", "pattern": "^\\[" + separator.join(items) + "\\]$"}


#: Operations on any dataset by name (not one of a dataset's own routes).
BY_NAME = ("/datasets/{name}/partitions",)


def _name_the_datasets(
    document: dict[str, Any], names: list[str], max_parts: int | None = None
) -> dict[str, Any]:
    """The ``name`` of each ``BY_NAME`` operation is one of ``names``: a schema-valid name is
    a dataset the caller may read; ``max_parts``: the most ``parts`` it takes, as set."""
    for path in BY_NAME:
        for operation in document.get("paths", {}).get(path, {}).values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "name" and parameter.get("in") == "path":
                    parameter["schema"] = {"type": "string", "enum": names}
                if parameter.get("name") == "parts" and max_parts is not None:
                    parameter["schema"]["maximum"] = max_parts
    return document


def install(
    app: FastAPI,
    datasets: Callable[[], dict[str, Dataset]],
    roles: dict[str, tuple[str, ...]],
    max_parts: int | None = None,
) -> None:
    """Complete the dataset operations of ``app``'s document from ``datasets()``, and serve
    it at ``/openapi.json`` with only the datasets the caller may read (no token, or an
    invalid one: only those that need no role)."""
    owners: dict[str, str] = {}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        loaded = datasets()
        for path, item in document.get("paths", {}).items():
            for operation in item.values():
                marker = operation.pop(MARKER, None)
                if marker is None:
                    continue
                owners[path] = marker["dataset"]
                if marker["dataset"] not in loaded:
                    continue
                dataset = loaded[marker["dataset"]]
                media = tuple(marker["formats"])
                operation["parameters"] = [
                    *operation.get("parameters", []),
                    *parameters(dataset, media, marker["aliases"]),
                ]
                operation["responses"] = responses(dataset, media)
        _name_the_datasets(document, sorted(loaded), max_parts)
        if loaded:
            app.openapi_schema = document  # complete: keep it
        return document

    async def openapi_json(request: Request) -> JSONResponse:
        document = openapi()
        try:
            principal: Principal | None = await current_principal(request)
        except Unauthorized:
            principal = None
        # from the declarations, not the catalog: right even while the database is down
        hidden = {name for name, needed in roles.items() if not access.has_role(needed, principal)}
        if hidden:
            paths = {
                p: item for p, item in document["paths"].items() if owners.get(p) not in hidden
            }
            document = {**document, "paths": paths}
            shown = [n for n in datasets() if n not in hidden]
            document = _name_the_datasets(copy.deepcopy(document), sorted(shown))
        return JSONResponse(document)

    app.openapi = openapi  # type: ignore[method-assign]
    url = str(app.openapi_url)
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != url]
    app.add_route(url, openapi_json, include_in_schema=False)
