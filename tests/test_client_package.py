"""The client as a data person installs it: ``rowstream-client`` alone, in a fresh virtual
environment, without the service. Its one dependency is httpx: no FastAPI, no asyncpg, no
pyarrow unless an extra asks; it reads a real server's export."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

from tests.support import Server

CLIENT = Path(__file__).resolve().parent.parent / "client"


def test_the_client_installs_alone_and_reads_an_export(server: Server, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(CLIENT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    script = f"""
import importlib.util, sys
from rowstream.client import Client
absent = [m for m in ("fastapi", "asyncpg", "uvicorn", "pyarrow", "app")
          if importlib.util.find_spec(m) is not None]
assert not absent, absent
with Client({server.base_url!r}, {server.token()!r}) as client:
    rows = list(client.iter_rows("messages", limit=7, channel="sms"))
assert len(rows) == 7 and all(r["channel"] == "sms" for r in rows), rows
print("ok")
"""
    done = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
