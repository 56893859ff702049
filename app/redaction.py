"""Credentials out of logged URLs: which query parameters are secret, and their redaction.

The access log records each request's path and query string (``observability``); a token
passed as ``?access_token=`` (or a signed link's signature) must not end up there, in
full, for anyone who can read the logs.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

REDACTED = "REDACTED"
#: A parameter is a credential when its name contains one of these (``access_token``,
#: ``X-Amz-Signature``, ``client_secret``, ``apiKey``)…
_SECRET_IN_NAME = ("token", "secret", "passw", "apikey", "api_key", "signature", "credential")
#: …or has one of these as a word (``sig`` of a SAS URL, ``key`` of many APIs, ``jwt``).
_SECRET_WORDS = frozenset({"sig", "key", "jwt", "pwd", "auth", "authorization", "session"})
_WORD = re.compile(r"[a-z0-9]+")
#: One ``name=value`` of a query string. ``;`` too: a proxy in front may split there.
_PAIR = re.compile(r"[^&;]+")
#: A JWT wherever it is, whatever it is called (a bare ``?eyJ…`` too): header.payload.sig
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def is_secret(name: str) -> bool:
    """Whether a query parameter called ``name`` (percent-decoded) carries a credential.
    Errs towards redacting: a filter on a column called ``key`` loses its value in the log,
    a leaked credential would be valid wherever the log is read."""
    lowered = name.lower()
    if any(part in lowered for part in _SECRET_IN_NAME):
        return True
    return not _SECRET_WORDS.isdisjoint(_WORD.findall(lowered))


def redact_query(query: str) -> str:
    """The query string as sent, with every credential's value replaced by ``REDACTED``.

    A token in the URL (``?access_token=``, a signed link) is a credential in the access
    log, and logs are read by more people, kept longer and shipped further than the
    service's secrets (docs/security.md). Names and the other values stay as sent.
    """
    return _PAIR.sub(_redact_pair, query)


def _redact_pair(match: re.Match[str]) -> str:
    name, equals, _ = match.group().partition("=")
    if equals and is_secret(unquote_plus(name)):
        return f"{name}={REDACTED}"
    return _JWT.sub(REDACTED, match.group())


def redact_path(path: str) -> str:
    """``path`` with anything shaped like a JWT in it replaced."""
    return _JWT.sub(REDACTED, path)
