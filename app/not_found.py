"""What a data path that names no dataset, or no format, answers: a 404 problem that helps.

``/datasets/flihgts`` names the datasets the caller may read, closest first ("did you mean
'flights'?"); ``/datasets/flights.arrow`` names the suffixes there are ("did you mean
.arrows?"). Only a caller with a valid credential is told any dataset's name, and only the
names of those it may read (as ``GET /datasets`` lists them); a request without one gets
the plain 404. It is the router's default: it answers only where no route does.
"""

from __future__ import annotations

import difflib

from starlette.requests import Request
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from app import access, auth
from app.deps import current_principal, get_catalog
from app.errors import NotFound, Unauthorized
from app.formats import SUFFIXES

PREFIX = "/datasets/"


def install(router: Router) -> None:
    """Answer the paths under ``/datasets/`` that no route matches (routes, and the
    trailing-slash redirect installed after this, come first)."""
    fallback = router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]  # uvicorn's --root-path prefixes it
        if scope["type"] != "http" or not path.startswith(PREFIX):
            await fallback(scope, receive, send)
            return
        raise await _problem(Request(scope, receive), path.removeprefix(PREFIX))

    router.default = default


async def _problem(request: Request, rest: str) -> NotFound:
    catalog = await get_catalog(request)
    segment = rest.split("/", 1)[0]
    name, dot, suffix = segment.partition(".")
    if dot and name in catalog.config.datasets and suffix not in SUFFIXES:
        close = difflib.get_close_matches(suffix.lower(), list(SUFFIXES), n=1, cutoff=0.5)
        hint = f"did you mean .{close[0]}? " if close else ""
        return NotFound(
            f"no format suffix .{suffix[:20]!s} here; {hint}the suffixes: "
            + ", ".join(f".{s}" for s in SUFFIXES),
            suffixes=[f".{s}" for s in SUFFIXES],
        )
    principal = await _caller(request)
    if principal is None:
        return NotFound(f"no dataset {name[:80]!r}; GET /datasets lists them")
    readable = [
        n
        for n, declared in catalog.config.datasets.items()
        if access.has_role(tuple(declared.roles or ()), principal)
    ]
    close = difflib.get_close_matches(name, readable, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return NotFound(
        f"no dataset {name[:80]!r}{hint} (GET /datasets lists them)",
        datasets=[*close, *sorted(n for n in readable if n not in close)],
    )


async def _caller(request: Request) -> auth.Principal | None:
    """Who asks, if the request carries a valid credential; None otherwise."""
    try:
        return await current_principal(request)
    except Unauthorized:
        return None
