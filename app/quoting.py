"""SQL text that is safe by construction: identifiers quoted, literals escaped.

Every identifier the service places in SQL goes through ``ident`` (any name, taken
literally); the few fixed texts placed as literals go through ``literal``. Values never do:
they are bound parameters (``sql.py``).
"""

from __future__ import annotations


def ident(name: str) -> str:
    """A quoted SQL identifier: any name, taken literally (``"Order Items"``)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A SQL string literal of ``text`` that means the same whatever
    ``standard_conforming_strings`` is (an ``E''`` string, backslashes doubled)."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
