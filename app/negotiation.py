"""Content negotiation: which of the formats a route serves answers a request.

A small hand-written ``Accept`` parser (RFC 9110 §12.5.1: media ranges with ``q`` weights;
ties keep the client's order). ``?format=`` and a URL suffix override the header, so a
browser or a tool that picks the format from the name gets one too. Anything we cannot
serve is a 406 listing what we can. The names come from the registry (``formats.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.errors import NotAcceptable
from app.formats import ALIASES


def weighted(header: str) -> list[tuple[str, float]]:
    """``a;q=0.5, b`` → ``[("a", 0.5), ("b", 1.0)]``: the items of an ``Accept``-style
    header, lower-cased, in the client's order, with their ``q`` weights (default 1)."""
    out: list[tuple[str, float]] = []
    for part in header.split(","):
        item, *params = (p.strip() for p in part.split(";"))
        if not item:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        out.append((item.lower(), q))
    return out


def _ranges(accept: str) -> list[tuple[str, float]]:
    return [(ALIASES.get(media, media), q) for media, q in weighted(accept)]


def _matches(media_range: str, media: str) -> bool:
    if media_range in ("*/*", media):
        return True
    kind, _, sub = media_range.partition("/")
    return sub == "*" and media.startswith(kind + "/")


def names(supported: Sequence[str]) -> list[str]:
    """Every ``?format=`` value that selects one of ``supported``."""
    return sorted({*supported, *(a for a, m in ALIASES.items() if m in supported)})


def negotiate(accept: str | None, format: str | None, supported: Sequence[str]) -> str:
    """The media type to answer with; ``supported[0]`` is the default."""
    if format:
        wanted = ALIASES.get(format.lower(), format.lower())
        if wanted in supported:
            return wanted
        raise NotAcceptable(
            f"format {format!r} is not available here; use one of: {', '.join(supported)}",
            supported=list(supported),
        )
    if not accept or not accept.strip():
        return supported[0]
    ranges = sorted(((q, -i, r) for i, (r, q) in enumerate(_ranges(accept)) if q > 0), reverse=True)
    for _, _, media_range in ranges:
        # the most specific match for this range: our default first when it is a wildcard
        for media in supported:
            if _matches(media_range, media):
                return media
    raise NotAcceptable(
        f"none of the requested media types is available; use one of: {', '.join(supported)}",
        supported=list(supported),
    )
