"""/metrics and the one-line-per-request JSON log, from a real server's output."""

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, metric, running, start_server, stop_server


@pytest.fixture(scope="module")
def logged(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    log = tmp_path_factory.mktemp("obs") / "server.log"
    s = start_server(db_url, log=log)
    try:
        yield s, log
    finally:
        stop_server(s)


def _access_lines(log: Path) -> list[dict[str, object]]:
    lines = []
    for raw in log.read_text().splitlines():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if "request_id" in entry:
            lines.append(entry)
    return lines


def _access_line(log: Path, request_id: str, within: float = 5.0) -> dict[str, object]:
    """The access line of ``request_id``, once the server has written it (after the body)."""
    deadline = time.monotonic() + within
    while True:
        found = [line for line in _access_lines(log) if line["request_id"] == request_id]
        if found or time.monotonic() > deadline:
            assert found, log.read_text()[-2000:]
            return found[0]
        time.sleep(0.05)


def test_credentials_in_the_url_are_redacted_and_headers_never_logged(
    logged: tuple[Server, Path],
) -> None:
    """docs/security.md: tokens are never logged. A token in the URL is one too."""
    server, log = logged
    in_url = server.token("in-url")
    in_header = server.token("in-header")
    secrets = {
        "access_token": in_url,
        "Token": "tok-value-1",
        "sig": "sas-value-2",
        "api_key": "key-value-3",
        "password": "pw-value-4",
        "X-Amz-Signature": "amz-value-5",
        "client_secret": "cs-value-6",
    }
    query = "&".join(f"{k}={v}" for k, v in secrets.items())
    query += f"&limit=5&bare={server.token('bare')}&jwt;note=kept"
    r = httpx.get(
        f"{server.base_url}/datasets?{query}",
        headers={"Authorization": f"Bearer {in_header}", "X-Request-ID": "req-redact"},
    )
    assert r.status_code == 200
    line = _access_line(log, "req-redact")
    redacted = "&".join(f"{k}=REDACTED" for k in secrets)
    assert line["query"] == f"{redacted}&limit=5&bare=REDACTED&jwt;note=kept"
    assert line["subject"] == "in-header"
    text = log.read_text()
    for value in [in_header, *secrets.values()]:
        assert value not in text
    assert in_header.split(".")[2] not in text  # not even the signature alone


def test_each_request_is_one_json_line_with_what_happened(logged: tuple[Server, Path]) -> None:
    server, log = logged
    r = httpx.get(
        f"{server.base_url}/chunked",
        params={"limit": 250, "format": "csv"},
        headers={
            **server.headers("auditor"),
            "X-Request-ID": "req-42",
            "Accept-Encoding": "identity",
        },
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-42"
    bad = httpx.get(f"{server.base_url}/chunked", headers={"X-Request-ID": "bad id;drop"})
    assert bad.status_code == 401 and bad.headers["x-request-id"] != "bad id;drop"
    mine = _access_line(log, "req-42")  # the module's server keeps running
    lines = _access_lines(log)
    assert mine["route"] == "/chunked" and mine["status"] == 200
    assert mine["subject"] == "auditor" and mine["format"] == "text/csv"
    assert mine["dataset"] == "messages"
    assert mine["rows"] == 250 and mine["outcome"] == "complete"
    assert int(str(mine["bytes"])) == len(r.content)
    assert float(str(mine["duration_ms"])) > 0 and "first_byte_ms" in mine
    refused = next(line for line in lines if line.get("status") == 401)
    assert refused["outcome"] == "complete" and "subject" not in refused


def test_metrics_count_requests_rows_and_streams(server: Server) -> None:
    labels = {"format": "application/x-ndjson", "dataset": "messages"}
    before = metric(server, "rowstream_rows_sent_total", **labels)
    httpx.get(f"{server.base_url}/chunked", params={"limit": 123}, headers=server.headers())
    assert metric(server, "rowstream_rows_sent_total", **labels) == before + 123
    assert metric(server, "rowstream_requests_total", route="/chunked", status="200") >= 1
    assert metric(server, "rowstream_streams_ended_total", outcome="complete") >= 1
    assert metric(server, "rowstream_time_to_first_byte_seconds_count", route="/chunked") >= 1
    assert metric(server, "rowstream_streams_active") == 0
    assert metric(server, "rowstream_pool_connections_in_use") == 0
    text = httpx.get(f"{server.base_url}/metrics").text
    for name in ("rowstream_stream_duration_seconds", "rowstream_rejected", "rowstream_bytes_sent"):
        assert name in text


def test_expected_aborts_drop_only_marked_exceptions() -> None:
    import logging
    import sys

    from app.delivery import StalledClient
    from app.observability import ExpectedAborts

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException:
            info = sys.exc_info()
        return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "x", None, info)

    keep = ExpectedAborts()
    assert keep.filter(record(StalledClient("timeout", "slow"))) is False
    assert keep.filter(record(RuntimeError("database gone"))) is True
    plain = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "x", None, None)
    assert keep.filter(plain) is True


def test_metrics_need_their_token_and_are_off_in_production_without_one(db_url: str) -> None:
    scraper = secrets.token_urlsafe(32)  # production refuses a patterned one
    with running(db_url, METRICS_TOKEN=scraper, ENVIRONMENT="production") as server:
        url = f"{server.base_url}/metrics"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers=server.headers()).status_code == 401  # a user's JWT: no
        wrong = httpx.get(url, headers={"Authorization": "Bearer " + "x" * 46})
        assert (
            wrong.status_code == 401 and wrong.headers["content-type"] == "application/problem+json"
        )
        ok = httpx.get(url, headers={"Authorization": f"Bearer {scraper}"})
        assert ok.status_code == 200 and "rowstream_requests_total" in ok.text
    with running(db_url, ENVIRONMENT="production") as server:
        closed = httpx.get(f"{server.base_url}/metrics")
        assert closed.status_code == 404 and "METRICS_TOKEN" in closed.json()["detail"]
