import json

from app import encoders


def test_ndjson_joins_rows_one_per_line_and_ends_with_newline() -> None:
    out = encoders.ndjson(['{"id":1}', '{"id":2}'])
    assert out == b'{"id":1}\n{"id":2}\n'
    assert [json.loads(line) for line in out.splitlines()] == [{"id": 1}, {"id": 2}]


def test_ndjson_batches_concatenate_into_one_document() -> None:
    joined = encoders.ndjson(['{"a":1}']) + encoders.ndjson(['{"a":2}', '{"a":3}'])
    assert [json.loads(x)["a"] for x in joined.splitlines()] == [1, 2, 3]


def test_ndjson_of_empty_batch_is_empty() -> None:
    assert encoders.ndjson([]) == b""


def test_json_array_from_lines_is_valid_json_also_when_empty_and_keeps_unicode() -> None:
    assert json.loads(encoders.json_array_from_lines([])) == []
    assert json.loads(encoders.json_array_from_lines([b""])) == []
    lines = ['{"s":"é✓"}\n'.encode(), b'{"s":"\\n"}\n{"s"', b':"a,b"}\n']
    assert json.loads(encoders.json_array_from_lines(lines)) == [
        {"s": "é✓"},
        {"s": "\n"},
        {"s": "a,b"},
    ]


def test_json_array_from_lines_consumes_its_input() -> None:
    chunks = [b'{"a":1}\n', b'{"a":2}\n']
    assert json.loads(encoders.json_array_from_lines(chunks)) == [{"a": 1}, {"a": 2}]
    assert chunks == []
