"""Who may export what: a dataset's ``roles``, its ``row_filter`` bound from claims, and
the database role an export runs as (``DB_ROLE_CLAIM``, PostgREST's model).

Checked once per request, before anything is read; what a refusal says names the rule
(a missing role, a missing claim), never a row, a column value or SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app import auth
from app.auth import Principal
from app.datasets import Dataset
from app.errors import Forbidden
from app.settings import Settings
from app.transaction import DbIdentity


def has_role(needed: Sequence[str], principal: Principal | None) -> bool:
    """Whether ``principal`` (None: no token) carries one of ``needed`` (none needed: yes)."""
    return not needed or (principal is not None and not principal.roles.isdisjoint(needed))


def may_read(dataset: Dataset, principal: Principal) -> bool:
    return has_role(dataset.roles, principal)


def check_may_read(dataset: Dataset, principal: Principal) -> None:
    """403 when the dataset needs a role the caller lacks (which, it does not say)."""
    if not may_read(dataset, principal):
        raise Forbidden(f"dataset {dataset.name!r} needs a role this token does not carry")


def row_filter_values(dataset: Dataset, principal: Principal) -> tuple[str, ...]:
    """The claim values the dataset's row filter binds; 403 when the dataset is not the
    caller's to read or a claim is missing."""
    check_may_read(dataset, principal)
    values = []
    for rule in dataset.row_filter:
        value = _claim(principal.claims, rule.claim)
        if value is None:
            raise Forbidden(
                f"dataset {dataset.name!r} filters rows by the claim {rule.claim!r}, "
                "which this token does not carry as a string or number"
            )
        values.append(value)
    return tuple(values)


def row_filter_values_or_none(dataset: Dataset, principal: Principal) -> tuple[str, ...] | None:
    try:
        return row_filter_values(dataset, principal)
    except Forbidden:
        return None


def _claim(claims: dict[str, Any], name: str) -> str | None:
    """A claim bound as a value: a string or a number (not a bool, list or object)."""
    value = auth.claim_at(claims, name)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)


def db_identity(settings: Settings, principal: Principal) -> DbIdentity | None:
    """The database role to run as, when ``DB_ROLE_CLAIM`` is set; 403 for a role that
    is missing or not in ``DB_ROLES``."""
    if not settings.db_role_claim:
        return None
    role = _claim(principal.claims, settings.db_role_claim)
    if role is None or role not in settings.db_roles:
        raise Forbidden(
            f"the token's {settings.db_role_claim!r} claim names no database role this "
            "service may use"
        )
    return DbIdentity(role, auth.claims_json(principal))
