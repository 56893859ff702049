"""The trailing-slash redirect, with a path-only ``Location``.

Starlette's own redirect (``/datasets/`` → ``/datasets``) is an absolute URL built from the
``Host`` header, which the client chooses: ``Host: evil.example`` got ``Location:
http://evil.example/datasets``, and a cache in front may serve that answer to everyone.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import Receive, Scope, Send


def install(router: Router) -> None:
    """Keep the trailing-slash redirect (``/datasets/`` → 307 ``/datasets``), with a
    path-only ``Location``.

    Starlette's own redirect is an absolute URL built from the ``Host`` header, which the
    client chooses: ``Host: evil.example`` got ``Location: http://evil.example/datasets``,
    and a cache in front may serve that answer to everyone. A relative reference (RFC 9110
    §10.2.2) is resolved by the client against the URL it really requested, so it cannot
    leave the host. Routes are matched first, so this only runs where a 404 would.
    """
    router.redirect_slashes = False
    not_found = router.default

    async def default(scope: Scope, receive: Receive, send: Send) -> None:
        location = _slash_twin(router, scope)
        if location is None:
            await not_found(scope, receive, send)
        else:
            await RedirectResponse(location, status_code=307)(scope, receive, send)

    router.default = default


def _slash_twin(router: Router, scope: Scope) -> str | None:
    """The path-only URL of ``scope``'s path with its trailing slash added or removed, when
    a route answers there (its query string kept); else None."""
    path: str = scope["path"]
    if scope["type"] != "http" or path in ("", "/"):
        return None
    twin = path.rstrip("/") if path.endswith("/") else path + "/"
    twin_scope = {**scope, "path": twin}
    if not any(route.matches(twin_scope)[0] is not Match.NONE for route in router.routes):
        return None
    location = quote(twin, safe="/:@!$&'()*+,;=")
    if location.startswith("//"):  # a network-path reference: another host
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{location}?{query}" if query else location
