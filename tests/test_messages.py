"""Both endpoints over a real server: same rows, right values, clear errors."""

import json

import httpx
import pytest

from tests import expected
from tests.support import SEED_ROWS, Server


def _ndjson(text: str) -> list[dict[str, object]]:
    assert text.endswith("\n") or text == ""
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("limit", [1, 7, 100, 101, 250])
def test_standard_and_streaming_return_the_same_rows(
    client: httpx.Client, server: Server, limit: int
) -> None:
    standard = client.get("/messages", params={"limit": limit}, headers=server.headers())
    streaming = client.get("/messages/stream", params={"limit": limit}, headers=server.headers())
    assert standard.status_code == streaming.status_code == 200
    assert standard.headers["content-type"] == "application/json"
    assert streaming.headers["content-type"] == "application/x-ndjson"
    rows = standard.json()
    assert rows == _ndjson(streaming.text)
    assert rows == [expected.row(i) for i in range(1, limit + 1)]


def test_without_limit_every_row_comes_in_id_order(client: httpx.Client, server: Server) -> None:
    standard = client.get("/standard", headers=server.headers()).json()
    streaming = _ndjson(client.get("/chunked", headers=server.headers()).text)
    assert len(standard) == len(streaming) == SEED_ROWS
    assert [r["id"] for r in streaming] == list(range(1, SEED_ROWS + 1))
    assert standard == streaming
    assert streaming[-1] == expected.row(SEED_ROWS)


def test_aliases_answer_like_the_main_routes(client: httpx.Client, server: Server) -> None:
    h = server.headers()
    assert (
        client.get("/standard", params={"limit": 3}, headers=h).json()
        == client.get("/messages", params={"limit": 3}, headers=h).json()
    )
    assert (
        client.get("/chunked", params={"limit": 3}, headers=h).text
        == client.get("/messages/stream", params={"limit": 3}, headers=h).text
    )


def test_keys_and_timestamp_format_are_the_documented_ones(
    client: httpx.Client, server: Server
) -> None:
    line = client.get("/chunked", params={"limit": 1}, headers=server.headers()).text
    assert line == (
        '{"id":1,"sender_id":7919,"recipient_id":4729,"channel":"sms",'
        '"body":"c4ca4238a0b923820dcc509a6f75849bc4ca4238a",'
        '"created_at":"2024-01-01T00:00:01+00:00","is_read":false}\n'
    )


@pytest.mark.parametrize("path", ["/messages", "/messages/stream"])
@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5", "99999999999999999999999"])
def test_bad_limit_is_a_422_problem(
    client: httpx.Client, server: Server, path: str, limit: str
) -> None:
    response = client.get(path, params={"limit": limit}, headers=server.headers())
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422 and "limit" in body["detail"]


def test_unknown_route_is_a_404_problem(client: httpx.Client) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
