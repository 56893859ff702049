"""``rowstream fetch`` against real servers: complete downloads, truncation, resume after
the server is killed mid-download."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import SEED_ROWS, Server, metric, start_server, stop_server


def rowstream_fetch(*args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "fetch", "--quiet", *args],
        env={**os.environ, "ROWSTREAM_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "json", "arrow", "text"])
def test_fetch_writes_exactly_what_the_server_sends(
    server: Server, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"m.{fmt}"
    url = f"{server.base_url}/messages/stream?limit=2500&channel=sms"
    done = rowstream_fetch(url, "-o", str(out), "--format", fmt, token=server.token())
    assert done.returncode == 0, done.stderr
    if fmt in ("json", "arrow"):
        assert f"{out.stat().st_size:,} bytes, complete" in done.stderr
    else:
        assert "2,500 rows, complete" in done.stderr
    direct = httpx.get(url + f"&format={fmt}", headers=server.headers(), timeout=30)
    assert out.read_bytes() == direct.content


def test_fetch_reports_http_errors_in_one_line(server: Server, tmp_path: Path) -> None:
    done = rowstream_fetch(
        f"{server.base_url}/messages/stream", "-o", str(tmp_path / "x"), token="not-a-token"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("rowstream fetch: HTTP 401")


def test_a_refused_fetch_leaves_an_existing_file_as_it_was(server: Server, tmp_path: Path) -> None:
    kept = tmp_path / "yesterday.csv"
    kept.write_bytes(b"id\n1\n")
    for token in ("not-a-token", None):
        url = f"{server.base_url}/datasets/messages.csv?limit=nope"  # 422 with a token
        done = rowstream_fetch(url, "-o", str(kept), token=token or server.token())
        assert done.returncode == 1
        assert kept.read_bytes() == b"id\n1\n"


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_resume_after_the_server_is_killed_mid_download(
    db_url: str, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"export.{fmt}"
    # Small batches make the export take seconds, so it can be cut in the middle.
    slow = start_server(db_url, STREAM_BATCH_SIZE="20")
    try:
        url = f"{slow.base_url}/messages/stream"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "fetch",
                "--quiet",
                url,
                "-o",
                str(out),
                "--format",
                fmt,
                "--retries",
                "0",
            ],
            env={**os.environ, "ROWSTREAM_TOKEN": slow.token()},
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while (not out.exists() or out.stat().st_size < 1_000_000) and time.monotonic() < deadline:
            assert proc.poll() is None, "the download finished before it could be cut"
            time.sleep(0.005)
        slow.process.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop_server(slow)
    assert proc.returncode == 1, stderr
    assert "the connection dropped" in stderr and "--resume" in stderr
    partial = out.stat().st_size
    assert partial >= 1_000_000

    fresh = start_server(db_url)
    try:
        url = f"{fresh.base_url}/messages/stream"
        done = rowstream_fetch(
            url, "-o", str(out), "--format", fmt, "--resume", token=fresh.token()
        )
        assert done.returncode == 0, done.stderr
        assert f"{SEED_ROWS:,} rows, complete" in done.stderr
        whole = httpx.get(url, params={"format": fmt}, headers=fresh.headers(), timeout=60)
    finally:
        stop_server(fresh)
    assert out.read_bytes() == whole.content


def test_resume_of_a_complete_file_with_limit_fetches_nothing_more(
    server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "done.ndjson"
    url = f"{server.base_url}/messages/stream?limit=300"
    assert rowstream_fetch(url, "-o", str(out), token=server.token()).returncode == 0
    before = out.read_bytes()
    exports = metric(server, "rowstream_requests_total", route="/messages/stream", status="200")
    again = rowstream_fetch(url, "-o", str(out), "--resume", token=server.token())
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == before
    # not one more request reached the export route (the tests run one at a time)
    assert (
        metric(server, "rowstream_requests_total", route="/messages/stream", status="200")
        == exports
    )


def test_resume_needs_the_key_and_drops_a_partial_last_record(tmp_path: Path) -> None:
    from rowstream.client import ClientError
    from rowstream.download import resume_point

    no_id = tmp_path / "x.ndjson"
    no_id.write_bytes(b'{"channel":"sms"}\n{"chan')
    with pytest.raises(ClientError, match=r"lack the key \(id\)"):
        resume_point(no_id, "application/x-ndjson", ["id"])
    quoted = tmp_path / "x.csv"
    quoted.write_bytes(b'id,body\n7,"multi\nline"\n8,"cut')
    assert resume_point(quoted, "text/csv", ["id"]) == (["7"], 1, b"id,body\n")
    assert quoted.read_bytes() == b'id,body\n7,"multi\nline"\n'


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_resume_of_any_dataset_uses_its_key_from_the_dataset_list(
    zoo_server: Server, tmp_path: Path, fmt: str
) -> None:
    """A composite key with odd names: the resumed file equals a whole download."""
    url = f"{zoo_server.base_url}/datasets/order_items/stream"
    whole = httpx.get(url, params={"format": fmt}, headers=zoo_server.headers(), timeout=30)
    out = tmp_path / f"items.{fmt}"
    out.write_bytes(whole.content[: len(whole.content) * 2 // 3])  # cut mid-record
    done = rowstream_fetch(
        url, "-o", str(out), "--format", fmt, "--resume", token=zoo_server.token()
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == whole.content


def test_fetch_from_a_closed_port_says_so_at_once_and_leaves_no_file(tmp_path: Path) -> None:
    from tests.support import free_port

    out = tmp_path / "never.ndjson"
    started = time.monotonic()
    done = rowstream_fetch(
        f"http://127.0.0.1:{free_port()}/datasets/messages.ndjson", "-o", str(out), token="t"
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "resume" not in done.stderr
    assert time.monotonic() - started < 10  # no retries through the back-off
    assert not out.exists()


@pytest.mark.parametrize("route", ["/datasets/messages.ndjson", "/messages/stream"])
def test_a_closed_port_leaves_an_existing_file_and_resumes_nothing(
    tmp_path: Path, route: str
) -> None:
    """The old file is not this download's: not a partial export to continue."""
    from tests.support import free_port

    out = tmp_path / "yesterday.ndjson"
    out.write_bytes(b'{"id": 7}\n')
    done = rowstream_fetch(f"http://127.0.0.1:{free_port()}{route}", "-o", str(out), token="t")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], done.stderr
    assert "resume" not in done.stderr
    assert out.read_bytes() == b'{"id": 7}\n'
