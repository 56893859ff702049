import pytest

from app import formats
from app.formats import ARROW, CSV, JSON, NDJSON, TEXT

ALL = (NDJSON, JSON, CSV, TEXT, ARROW)


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
    assert formats.negotiate(accept, None, ALL) == expected


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("csv", CSV), ("JSON", JSON), ("arrow", ARROW), ("jsonl", NDJSON), ("text/plain", TEXT)],
)
def test_format_parameter_overrides_accept(fmt: str, expected: str) -> None:
    assert formats.negotiate("application/json", fmt, ALL) == expected


@pytest.mark.parametrize(
    ("accept", "fmt"), [("image/png", None), ("text/csv;q=0", None), (None, "xml")]
)
def test_unservable_requests_are_406_listing_what_is_served(
    accept: str | None, fmt: str | None
) -> None:
    with pytest.raises(formats.NotAcceptable) as caught:
        formats.negotiate(accept, fmt, (JSON, CSV))
    assert caught.value.status == 406
    assert caught.value.extensions["supported"] == [JSON, CSV]
    assert "application/json" in caught.value.detail


def test_format_parameter_names_match_what_each_route_serves() -> None:
    from typing import get_args

    from app import export, params

    def names(media_types: tuple[str, ...]) -> set[str]:
        aliases = {a for a, m in formats.ALIASES.items() if m in media_types}
        return aliases | set(media_types)

    assert set(get_args(params.StreamFormatName)) == names(export.STREAM_FORMATS)
    assert set(get_args(params.StandardFormatName)) == names(export.STANDARD_FORMATS)
