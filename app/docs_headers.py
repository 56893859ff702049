"""Security headers for the API documentation pages (``/docs``, ``/redoc``, their
oauth2 redirect and their offline assets), as the web page (``ui.py``) has its own.

Swagger UI starts from one inline ``<script>`` that FastAPI writes (its text depends on
the app's URLs and ``root_path``), so the policy allows exactly that script by its SHA-256
hash, computed from each page as it goes out, rather than ``'unsafe-inline'``. Both pages
load everything else from this origin (``fastapi_offline``); ReDoc runs its search in a
worker made from a ``blob:`` and both set inline styles, so those are allowed; nothing
may frame the pages, nor be loaded from elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The pages: the policy is completed with the hashes of each one's inline scripts.
PAGES = ("/docs", "/docs/oauth2-redirect", "/redoc")
#: Where ``fastapi_offline`` serves Swagger UI's and ReDoc's files.
ASSETS = "/static-offline-docs/"
POLICY = (
    "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def policy_for(page: bytes) -> str:
    """The page's ``Content-Security-Policy``: its inline scripts, by hash, and no other."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return POLICY.format(hashes=hashes)


class DocsHeaders:
    """Adds the headers to the documentation's responses; every other passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]  # uvicorn's --root-path prefixes it
        if path in PAGES:
            await self.app(scope, receive, _PageSender(send))
        elif path.startswith(ASSETS):
            await self.app(scope, receive, _with_headers(send, HEADERS))
        else:
            await self.app(scope, receive, send)


def _with_headers(send: Send, headers: dict[str, str]) -> Send:
    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", []),
                *((k.encode(), v.encode()) for k, v in headers.items()),
            ]
        await send(message)

    return sender


class _PageSender:
    """Holds a page's response head until its body is known (one small HTML message),
    then sends both with the policy for that body."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body", False):
            return
        headers = {**HEADERS, "content-security-policy": policy_for(self.body)}
        await _with_headers(self.send, headers)(self.start)
        self.start = None
        await self.send({"type": "http.response.body", "body": self.body})
