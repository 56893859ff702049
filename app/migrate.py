"""Alembic, driven from code: ``rowstream migrate``, ``serve`` and the tests use this."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

#: ``migrations/`` beside the ``app`` package (the repository root, or /srv in the image).
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(config(url), revision)


def head() -> str:
    revision = ScriptDirectory.from_config(config("")).get_current_head()
    assert revision is not None
    return revision
