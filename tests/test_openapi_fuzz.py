"""Fuzz the API from its own OpenAPI document with schemathesis (its CLI, a bounded number
of examples, a fixed seed): no 5xx, responses conform to the document (status codes,
content types, headers, JSON schemas), and auth is never ignored (schemathesis' own
``ignored_auth`` check replays requests without the token)."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import Server, running

#: A valid request with the fuzzer's token is never a 401, nor (but for ``POST /links``) a
#: 404: every path in the document exists.
#: A request whose head is over ``MAX_HEADER_BYTES`` is refused with 431 (documented) before
#: its parameters are read, valid or not: a rejection for the checks that look for one; so
#: is a body over ``MAX_BODY_BYTES`` with 413 (documented on ``POST /links``).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, 431, "5xx"]
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", 403, 409, 429, 431, "5xx"]

# POST /links: a schema-valid path that names no data route is a 404 (documented); the
# schema cannot list which paths are routes
[[operations]]
include-path = "/links"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", 403, 404, 409, 429, 431, "5xx"]

# DELETE /partitions/{partition}: an id that no partitioned export holds (any more) is a 404
# (documented); the schema cannot list the ids held
[[operations]]
include-path = "/partitions/{partition}"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", 404, 409, 429, 431, "5xx"]
"""


@pytest.fixture
def fuzzed(db_url: str) -> Iterator[Server]:
    """A server of the fuzzer's own: what its requests leave (partitioned exports it
    planned hold snapshots until they expire) ends with it, not in the session's server."""
    with running(db_url) as server:
        yield server


def test_api_conforms_to_its_openapi_document(fuzzed: Server, tmp_path: Path) -> None:
    server = fuzzed
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(config),
            "run",
            f"{server.base_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {server.token('fuzzer')}",
            "--checks",
            "all",
            "--max-examples",
            "30",
            "--seed",
            "20261126",
            "--workers",
            "1",
            "--request-timeout",
            "60",
            "--max-time",
            "240",
            "--report-dir",
            str(tmp_path),
        ],
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    # a failing case's curl line can be 100 kB: cut each line, so the report stays readable
    report = "\n".join(line[:400] for line in done.stdout.splitlines())
    assert done.returncode == 0, report[-12000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout.lower()


def test_no_data_operation_answers_without_a_token(server: Server) -> None:
    spec = httpx.get(f"{server.base_url}/openapi.json").json()
    public = {"/healthz", "/readyz", "/metrics"}
    for path, operations in spec["paths"].items():
        for method in operations:
            r = httpx.request(method.upper(), f"{server.base_url}{path}", timeout=30)
            if path in public:
                assert r.status_code == 200, path
            else:
                assert r.status_code == 401, (path, r.status_code)
