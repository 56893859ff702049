"""The web page: ``/`` and ``/ui/…`` serve one HTML page, ``/ui/static/…`` its script and
style, all from ``app/static/`` (written plainly: no framework, no build step, nothing from
another origin, so the page works offline like ``/docs``).

The page reads the same API as everyone else, with the token the user pastes (kept in
``sessionStorage``); downloads go through signed links. Every response here carries a
strict ``Content-Security-Policy`` (no inline script or style, nothing from elsewhere),
``nosniff`` and ``Referrer-Policy: no-referrer``, so a signed link in the page's URL or in a
request never leaks through ``Referer``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from app.errors import NotFound

STATIC = Path(__file__).parent / "static"
#: The page's files, by name, and their media types: nothing else is served from there.
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: What every page and file answers with: revalidated, so a new release shows at once.
HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _page() -> Response:
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS
    )


@router.get("/")
async def home() -> Response:
    return _page()


@router.get("/ui")
@router.get("/ui/datasets/{name}")
async def page(name: str | None = None) -> Response:
    """The page routes itself from its path (``/ui/datasets/orders``)."""
    return _page()


@router.get("/ui/static/{name}")
async def static(name: str) -> Response:
    if name not in FILES:
        raise NotFound(f"no file {name[:40]!r} here")
    return FileResponse(STATIC / name, media_type=FILES[name], headers=HEADERS)
