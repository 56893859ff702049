import pytest

from app import demo, negotiation
from app.errors import NotAcceptable
from app.formats import ARROW, CSV, JSON, NDJSON, PARQUET

TEXT = demo.TEXT_FORMAT.media_type

ALL = (NDJSON, JSON, CSV, TEXT, ARROW, PARQUET)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, NDJSON),
        ("", NDJSON),
        ("*/*", NDJSON),
        ("text/csv", CSV),
        ("text/*", CSV),
        ("application/json", JSON),
        ("application/jsonl", NDJSON),
        ("text/plain, application/json", TEXT),
        ("application/json;q=0.5, text/csv", CSV),
        ("application/json;q=0.9, text/csv;q=0.9", JSON),
        ("image/png, */*;q=0.1", NDJSON),
        ("APPLICATION/VND.APACHE.ARROW.STREAM", ARROW),
    ],
)
def test_negotiate_picks_by_weight_then_client_order(accept: str | None, expected: str) -> None:
    assert negotiation.negotiate(accept, None, ALL) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("csv", CSV), ("JSON", JSON), ("arrow", ARROW), ("jsonl", NDJSON), ("text/plain", TEXT)],
)
def test_format_parameter_overrides_accept(fmt: str, expected: str) -> None:
    assert negotiation.negotiate("application/json", fmt, ALL) == expected


@pytest.mark.parametrize(
    ("accept", "fmt"), [("image/png", None), ("text/csv;q=0", None), (None, "xml")]
)
def test_unservable_requests_are_406_listing_what_is_served(
    accept: str | None, fmt: str | None
) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiation.negotiate(accept, fmt, (JSON, CSV))
    assert caught.value.status == 406
    assert caught.value.extensions["supported"] == [JSON, CSV]
    assert "application/json" in caught.value.detail


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("ndjson", NDJSON),
        ("jsonl", NDJSON),
        ("application/jsonlines", NDJSON),
        ("json", JSON),
        ("csv", CSV),
        ("text", TEXT),
        ("arrow", ARROW),
        ("arrows", ARROW),
        ("parquet", PARQUET),
        ("application/vnd.apache.parquet", PARQUET),
    ],
)
def test_each_name_and_alias_a_client_may_send_picks_its_format(asked: str, expected: str) -> None:
    assert negotiation.negotiate(None, asked, ALL) == expected
    assert negotiation.negotiate(None, asked.upper(), ALL) == expected


def test_the_names_a_route_lists_are_what_it_accepts() -> None:
    listed = negotiation.names((JSON, CSV))
    assert listed == ["application/json", "csv", "json", "text/csv"]
    for name in listed:
        assert negotiation.negotiate(None, name, (JSON, CSV)) in (JSON, CSV)
