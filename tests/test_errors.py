"""``errors.refused``: a value Arrow cannot hold is recognised by its SQLSTATE and the
guard's own words, in any language the server writes its messages in.

The embedded PostgreSQL is built without translations (``SET lc_messages`` to any other
locale is refused there), so the translated errors are built here as asyncpg builds them
from a server whose ``lc_messages`` is German or French: the server's words around ours."""

from __future__ import annotations

import asyncpg
import pytest

from app import errors, pgtypes

TRANSLATED = {
    "en": 'invalid input syntax for type integer: "{}"',
    "de": "ungültige Eingabesyntax für Typ integer: »{}«",
    "fr": "syntaxe en entrée invalide pour le type integer : « {} »",
}


@pytest.mark.parametrize("language", sorted(TRANSLATED))
@pytest.mark.parametrize("refusal", pgtypes.ARROW_REFUSALS)
def test_a_guard_refusal_is_a_422_naming_the_value_in_any_language(
    language: str, refusal: str
) -> None:
    exc = asyncpg.exceptions.InvalidTextRepresentationError(TRANSLATED[language].format(refusal))
    found = errors.refused(exc)
    assert found is not None and found.status == 422
    assert refusal in found.detail
    # the ADBC driver's stream error: an OSError holding PostgreSQL's text, no SQLSTATE
    assert errors.refused(OSError(f"[libpq] {TRANSLATED[language].format(refusal)}")) is not None


def test_other_errors_are_not_refusals() -> None:
    text = TRANSLATED["en"].format("nope")
    assert errors.refused(asyncpg.exceptions.InvalidTextRepresentationError(text)) is None
    # the guard's words under another SQLSTATE (a saved query's own error) are not ours
    other = asyncpg.exceptions.DivisionByZeroError(pgtypes.ARROW_REFUSALS[0])
    assert errors.refused(other) is None
