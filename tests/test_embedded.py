"""The embedded server's handles: held for a block, and a holder that was killed forgotten."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import embedded


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # not pytest's tmp_path: see serve_embedded in tests/test_cli.py
    data = Path(tempfile.mkdtemp(prefix="rowstream-held-"))
    yield data
    shutil.rmtree(data, ignore_errors=True)


def _holders(data: Path) -> list[int]:
    return list(json.loads((data / "pg" / embedded.HANDLES).read_text()))


def test_a_dead_holder_is_forgotten_and_a_running_one_kept(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "pg" / embedded.HANDLES).write_text(json.dumps([gone.pid, os.getpid()]))
    assert embedded.forget_dead_holders(tmp_path / "pg") == [gone.pid]
    assert _holders(tmp_path) == [os.getpid()]
    assert embedded.forget_dead_holders(tmp_path / "pg") == []


def test_nested_blocks_share_a_handle_and_the_last_one_out_stops_the_server(
    data_dir: Path,
) -> None:
    postmaster = data_dir / "pg" / "postmaster.pid"
    with embedded.held(data_dir) as outer:
        with embedded.held(data_dir) as inner:
            assert inner is outer
        assert _holders(data_dir) == [os.getpid()]
        assert postmaster.exists()
    assert _holders(data_dir) == []
    assert not postmaster.exists()  # stopped: pg_ctl -w waits for this file to go
    with embedded.held(data_dir) as again:  # a new handle, not the spent one
        assert again is not outer
        assert _holders(data_dir) == [os.getpid()]
    assert _holders(data_dir) == []
    assert not postmaster.exists()
