"""The data routes: the dataset list, and for every dataset a standard (buffered) route, a
streaming route, suffix URLs and ``HEAD``.

Routes stay thin: the query string becomes a ``Selection`` (``params.py``), the format
is negotiated (``formats.py``) and ``export.Export`` does the rest. Each dataset gets
routes of its own (``/datasets/orders``, ``/datasets/orders/stream``), so the OpenAPI
document shows one pair of operations per dataset, with its real parameters
(``openapi.py``). Which formats each route serves, and the suffixes, come from the
registry (``formats.py``). Other paths to a dataset's endpoints (the demo's, ``demo.py``)
are added with ``add_operation`` and found by ``dataset_at`` like the dataset's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from app import access, datasets, errors, export, formats, links, negotiation, params
from app.auth import Principal
from app.deps import (
    AppSettings,
    Budget,
    CurrentUser,
    Datasets,
    ExportSources,
    Limiter,
    ReadDb,
    Sources,
)
from app.export import Export
from app.openapi import MARKER
from app.partitions import Part
from app.responses import PrebuiltJSONResponse, StreamingResponse
from app.settings import Settings
from app.sql import Selection

AcceptHeader = Annotated[str | None, Header(include_in_schema=False)]
AcceptEncodingHeader = Annotated[str | None, Header(include_in_schema=False)]
PreferHeader = Annotated[
    str | None,
    Header(
        description="`count=exact`: send `X-Total-Count`, the exact number of rows this "
        "response carries, counted in the same snapshot. Otherwise (`count=estimated`, "
        "the default) `X-Total-Count-Estimate` from the query planner."
    ),
]

router = APIRouter()


@router.get(
    "/datasets",
    tags=["datasets"],
    summary="The datasets this service serves",
    responses={
        401: {"description": "Missing, invalid or expired token"},
        503: {"description": "Database unavailable, or a dataset misconfigured"},
    },
)
async def list_datasets(
    request: Request, catalog: Datasets, db: ReadDb, settings: AppSettings, user: CurrentUser
) -> dict[str, Any]:
    """Only the datasets the caller may read, each estimated as the caller would read it
    (its row filter bound, as its database role)."""
    loaded = await catalog.all(db)
    readable = {n: d for n, d in loaded.items() if access.may_read(d, user)}
    row_filters = {n: access.row_filter_values_or_none(d, user) for n, d in readable.items()}
    estimates = await catalog.estimates(db, row_filters, access.db_identity(settings, user))
    listing = []
    served = {"standard": list(formats.standard()), "stream": list(formats.streamed())}
    routed = paths_by_dataset(request.app.router)
    for name, dataset in readable.items():
        entry = datasets.summary(dataset)
        entry["formats"] = served
        entry["estimated_rows"] = estimates.get(name)
        links_of = {
            "standard": f"/datasets/{name}",
            "stream": f"/datasets/{name}/stream",
            **{suffix: f"/datasets/{name}.{suffix}" for suffix in formats.SUFFIXES},
        }
        also = [p for p in routed.get(name, []) if p not in links_of.values()]
        entry["links"] = {**links_of, **({"also": also} if also else {})}
        listing.append(entry)
    return {"datasets": listing}


def check_format(requested: str, supported: tuple[str, ...]) -> None:
    """A 422 unless ``format=requested`` names one of ``supported``."""
    media = formats.ALIASES.get(requested.lower(), requested.lower())
    if media not in supported:
        raise errors.UnprocessableContent(
            f"format: {requested[:40]!r} is not served here; use one of: "
            f"{', '.join(negotiation.names(supported))}",
            field="format",
        )


def _format(
    requested: str | None, accept: str | None, supported: tuple[str, ...]
) -> formats.Format:
    if requested is not None:
        check_format(requested, supported)
    return formats.FORMATS[negotiation.negotiate(accept, requested, supported)]


Endpoint = Callable[..., Awaitable[Response]]


def selection_of(
    request: Request,
    dataset: datasets.Dataset,
    user: Principal,
    settings: Settings,
    aliases: Mapping[str, str],
    *,
    ignored: tuple[str, ...] = (),
) -> tuple[Selection, params.Presentation]:
    """The selection a data route's query asks for, with the caller's row filter and
    ``csv_safe`` applied (``ignored``: parameters of the route's own, not the export's)."""
    query = links.without_link_parameters(request.scope["query_string"].decode("latin-1"))
    query = [(k, v) for k, v in query if k not in ignored]
    selection, requested = params.parse(dataset, query, aliases=aliases)
    csv_safe = settings.csv_safe if requested.csv_safe is None else requested.csv_safe
    row_filter = access.row_filter_values(dataset, user)
    return replace(selection, row_filter=row_filter, csv_safe=csv_safe), requested


def _part(request: Request) -> Part | None:
    """The part of a partitioned export a signed link carries (``partitions.py``)."""
    query = request.scope["query_string"].decode("latin-1")
    if getattr(request.state, "signed_link", False):
        encoded = links.signed_part(query)
        return None if encoded is None else Part.decode(encoded)  # signed: well formed
    if f"{links.PART}=" in query:
        raise errors.UnprocessableContent(
            f"{links.PART}: only a signed link carries a part (POST /datasets/{{name}}/partitions)",
            field=links.PART,
        )
    return None


async def _export(
    request: Request,
    name: str,
    sources: Sources,
    user: Principal,
    *,
    aliases: Mapping[str, str],
    supported: tuple[str, ...],
    fixed_format: str | None,
    accept: str | None,
    prefer: str | None,
) -> Export:
    """What both routes do first: the dataset, who may read what of it, its selection, the
    format, the export."""
    db = sources.db
    dataset = await sources.catalog.get(db, name)
    selection, requested = selection_of(request, dataset, user, sources.settings, aliases)
    part = _part(request)
    if part is not None:
        selection = replace(selection, range_after=part.after, range_until=part.until)
    fmt = _format(requested.format or fixed_format, accept, supported)
    return Export(
        db,
        sources.settings,
        sources.lag,
        dataset,
        selection,
        fmt,
        prefer,
        download=requested.download,
        identity=access.db_identity(sources.settings, user),
        drivers=sources.drivers,
        imported=part.imported() if part is not None else None,
        on_complete=(lambda: sources.holds.part_read(part)) if part is not None else None,
    )


def standard_endpoint(name: str, aliases: Mapping[str, str]) -> Endpoint:
    """The standard route's endpoint for dataset ``name``; ``aliases``: other names of its
    parameters (the demo's historical ones)."""
    supported = formats.standard()  # what the route was built with, as its OpenAPI says

    async def standard(
        request: Request,
        sources: ExportSources,
        budget: Budget,
        user: CurrentUser,
        accept: AcceptHeader = None,
        prefer: PreferHeader = None,
    ) -> Response:
        job = await _export(
            request,
            name,
            sources,
            user,
            aliases=aliases,
            supported=supported,
            fixed_format=None,
            accept=accept,
            prefer=prefer,
        )
        request.state.export = job.stats
        if request.method == "HEAD":
            return await job.head("Accept, Prefer")
        return await job.buffered(budget)

    return standard


def stream_endpoint(
    name: str, aliases: Mapping[str, str], supported: tuple[str, ...], suffix: str | None
) -> Endpoint:
    """The stream route's endpoint for ``name``, serving ``supported`` (``suffix``: the
    format a suffix URL fixes)."""

    async def stream(
        request: Request,
        sources: ExportSources,
        limiter: Limiter,
        user: CurrentUser,
        accept: AcceptHeader = None,
        prefer: PreferHeader = None,
        accept_encoding: AcceptEncodingHeader = None,
    ) -> Response:
        job = await _export(
            request,
            name,
            sources,
            user,
            aliases=aliases,
            supported=supported,
            fixed_format=suffix,
            accept=accept,
            prefer=prefer,
        )
        if request.method == "HEAD":
            # HTTP/1.0 has no chunked encoding (nor a stream: its GET is a 505)
            chunked = request.scope.get("http_version") != "1.0"
            return await job.head("Accept, Accept-Encoding, Prefer", streamed=chunked)
        if ranges_unservable_to(request):
            return range_fallback()
        response = await job.streamed(
            request.scope.get("http_version", "1.1"), limiter, user.subject, accept_encoding
        )
        request.state.export = job.stats  # a stream from here on (refusals are not streams)
        return response

    return stream


def ranges_unservable_to(request: Request) -> bool:
    """Whether this is DuckDB 1.4 asking a stream for a byte range.

    A stream has no byte ranges (``Accept-Ranges: none``); HTTP lets a server answer a
    ``Range`` request with the whole body (200), which every client takes, but DuckDB 1.4's
    http reader, having learnt a size from an earlier full read, asks for 16 MiB ranges and
    treats a longer answer as an error, then asks again: the export ran over and over
    (measured: 86,800 rows a try, never done). An answer whose ``Content-Length`` differs
    from the range asked is what makes it fall back to the full read it already has (one
    GET in all, measured). Only that client gets it: any other gets the whole stream."""
    agent = request.headers.get("user-agent", "")
    return "range" in request.headers and agent.startswith("duckdb/v1.4.")


def range_fallback() -> Response:
    """The answer that sends DuckDB 1.4 back to its full read (see ``ranges_unservable_to``)."""
    return Response(
        status_code=200,
        headers={"Accept-Ranges": "none", "Content-Length": "0", "Cache-Control": "no-store"},
    )


def add_dataset(router: APIRouter, name: str, description: str | None) -> None:
    """``/datasets/{name}``, ``/datasets/{name}/stream`` and ``/datasets/{name}.{suffix}``."""
    tag = f"dataset: {name}"
    detail = f"\n\n{description}" if description else ""
    streamed, standard = formats.streamed(), formats.standard()
    pairs: list[tuple[str, Endpoint, str, tuple[str, ...], type[Response]]] = [
        (
            f"/datasets/{name}",
            standard_endpoint(name, {}),
            f"{name}: loaded, then sent in one response (standard)",
            standard,
            PrebuiltJSONResponse,
        ),
        (
            f"/datasets/{name}/stream",
            stream_endpoint(name, {}, streamed, None),
            f"{name}: streamed while the query runs",
            streamed,
            StreamingResponse,
        ),
    ]
    for path, endpoint, summary, media, response_class in pairs:
        add_operation(
            router, path, endpoint, summary + detail, tag, name, media, {}, response_class
        )
    for suffix, media_type in formats.SUFFIXES.items():
        path = f"/datasets/{name}.{suffix}"
        endpoint = stream_endpoint(name, {}, streamed, media_type)
        router.add_api_route(
            path,
            endpoint,
            methods=["GET", "HEAD"],
            include_in_schema=False,
            openapi_extra={MARKER: {"dataset": name}},
        )


def add_operation(
    router: APIRouter,
    path: str,
    endpoint: Endpoint,
    summary: str,
    tag: str,
    name: str,
    media: tuple[str, ...],
    aliases: Mapping[str, str],
    response_class: type[Response],
) -> None:
    """A documented data route of dataset ``name`` at ``path`` (GET and HEAD); the marker
    tells ``openapi.py`` what to complete and ``dataset_at`` whose route it is."""
    marker = {"dataset": name, "formats": list(media), "aliases": dict(aliases)}
    router.add_api_route(
        path,
        endpoint,
        methods=["GET"],
        summary=summary,
        tags=[tag],
        response_class=response_class,
        openapi_extra={MARKER: marker},
        operation_id=f"{name}_{path.strip('/').replace('/', '_').replace('.', '_')}",
    )
    router.add_api_route(
        path, endpoint, methods=["HEAD"], include_in_schema=False, openapi_extra={MARKER: marker}
    )


def paths_by_dataset(router: Any) -> dict[str, list[str]]:
    """Every data route's path, by dataset, in the order they were added."""
    out: dict[str, list[str]] = {}
    for route in router.routes:
        if isinstance(route, APIRoute) and route.openapi_extra:
            marker = route.openapi_extra.get(MARKER)
            paths = out.setdefault(marker["dataset"], []) if marker else None
            if paths is not None and route.path not in paths:
                paths.append(route.path)
    return out


def dataset_at(router: Any, path: str) -> str | None:
    """The dataset whose data route is at ``path``, or None when no data route is there."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path == path and route.openapi_extra:
            marker = route.openapi_extra.get(MARKER)
            if marker:
                return str(marker["dataset"])
    return None


__all__ = ["add_dataset", "add_operation", "dataset_at", "export", "paths_by_dataset", "router"]
