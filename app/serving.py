"""How ``rowstream serve`` runs uvicorn: with our connection limits (``connections.py``),
the open-file limit raised, one process or ``WORKERS``, and signals that unwind.

The command (``cli.py``) decides what to serve; this module decides how it is served.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from app import auth, observability
from app.client_limits import ConnectionLimits
from app.connections import ServerConfig
from app.limits import RESERVED_DESCRIPTORS
from app.settings import Settings

logger = logging.getLogger(__name__)


def serve(app: Any, settings: Settings, args: argparse.Namespace) -> None:
    """One server process, on this thread's own event loop, until it is told to stop."""
    config = ServerConfig(
        app,
        limits=connection_limits(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.graceful_timeout,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        # our own access line per request (app.observability), through our logging
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    # uvicorn's own loop choice (uvloop when installed), as `uvicorn.run` would make it.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(_serve(server, settings, args))


def serve_workers(settings: Settings, args: argparse.Namespace) -> None:
    """``WORKERS`` processes behind one socket (uvicorn's supervisor), for VM installs.

    Each worker builds its own app (and pools) from the environment. The embedded database
    belongs to one process, so this needs ``DATABASE_URL``.
    """
    config = ServerConfig(
        "app.main:create_app",
        limits=connection_limits(settings),
        factory=True,
        host=args.host,
        port=args.port,
        workers=settings.workers,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.graceful_timeout,
        timeout_keep_alive=settings.keep_alive_timeout_seconds,
        log_config=observability.logging_config(args.log_level, settings.log_format),
        access_log=False,
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()  # what uvicorn.run does


async def _serve(server: uvicorn.Server, settings: Settings, args: argparse.Namespace) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.05)
    if server.started and (where := _key_location(settings)):
        print(where, flush=True)
    if server.started and args.print_curl and (secret := settings.resolved_jwt_secret()):
        token = auth.issue(
            secret,
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


def _key_location(settings: Settings) -> str | None:
    """Where tokens' key is, and a command that mints one here, for a development server
    whose key was generated (a token minted in another folder has another key)."""
    secret_file = settings.generated_secret_file()
    if secret_file is None:
        return None
    return (
        f"tokens: signed with the development key in {secret_file}; mint one "
        f"with: DATA_DIR={secret_file.parent} rowstream token --sub you"
    )


class _Terminated(BaseException):
    """SIGTERM, raised where the process is. A ``BaseException``, as ``KeyboardInterrupt``
    is: no ``except Exception`` on the way out swallows it."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
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


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit.

    Each connection is a descriptor; the default soft limit (often 1,024) is what
    ``accept()`` runs into first, long before memory or CPU."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # pragma: no cover - some sandboxes forbid it
            pass
    elif hard == resource.RLIM_INFINITY and soft < 1 << 20:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, hard))
            soft = 1 << 20
        except (ValueError, OSError):  # pragma: no cover
            pass
    return soft


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The limits to serve with, after raising the open-file limit (both logged).

    ``max_connections`` is lowered when the descriptors cannot hold that many connections
    next to the pools: refusing with a 503 beats ``accept()`` failing for everyone."""
    max_connections = settings.max_connections
    pool_size = settings.pool_max_size
    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    descriptors = raise_open_file_limit()
    fits = max(descriptors - 2 * pool_size - RESERVED_DESCRIPTORS, 1)
    if fits < max_connections:
        logger.warning(
            "open files limited to %d: serving at most %d connections, not MAX_CONNECTIONS=%d",
            descriptors,
            fits,
            max_connections,
        )
    allowed = min(max_connections, fits)
    if settings.forwarded_allow_ips.strip() == "*":
        logger.info(
            "FORWARDED_ALLOW_IPS=* trusts every address as a proxy: MAX_CONNECTIONS_PER_CLIENT "
            "applies to none (keep the per-client limit on the proxy)"
        )
    logger.info(
        "open-file limit %d (was %d); at most %d connections (%d per client); "
        "request heads: %d bytes, %g s; bodies: %d bytes, %g s",
        descriptors,
        before,
        allowed,
        settings.max_connections_per_client,
        settings.max_header_bytes,
        settings.header_timeout_seconds,
        settings.max_body_bytes,
        settings.body_timeout_seconds,
    )
    return ConnectionLimits(
        header_timeout_seconds=settings.header_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
        max_body_bytes=settings.max_body_bytes,
        max_connections=allowed,
        max_connections_per_client=settings.max_connections_per_client,
        trusted_proxies=settings.forwarded_allow_ips,
    )
