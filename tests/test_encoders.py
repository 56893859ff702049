import json
from datetime import UTC, datetime

import anyio
import pyarrow as pa
import pytest

from app import encoders, pgtypes


def _rows(*texts: str) -> list[tuple[str]]:
    return [(t,) for t in texts]


def test_ndjson_joins_rows_one_per_line_and_ends_with_newline() -> None:
    out = encoders.ndjson(_rows('{"id":1}', '{"id":2}'))
    assert out == b'{"id":1}\n{"id":2}\n'


def test_ndjson_batches_concatenate_and_empty_batch_is_empty() -> None:
    e = encoders.NDJSONEncoder()
    joined = e.start() + e.batch(_rows('{"a":1}')) + e.batch(_rows('{"a":2}', '{"a":3}')) + e.end()
    assert [json.loads(x)["a"] for x in joined.splitlines()] == [1, 2, 3]
    assert e.batch([]) == b""


def test_json_array_encoder_makes_one_valid_array_and_only_when_complete() -> None:
    e = encoders.JSONArrayEncoder()
    parts = [e.start(), e.batch(_rows('{"a":1}', '{"a":2}')), e.batch(_rows('{"a":3}'))]
    truncated = b"".join(parts)
    complete = truncated + e.end()
    assert json.loads(complete) == [{"a": 1}, {"a": 2}, {"a": 3}]
    try:
        json.loads(truncated)
    except json.JSONDecodeError:
        pass
    else:
        raise AssertionError("a truncated array must not parse")
    empty = encoders.JSONArrayEncoder()
    assert json.loads(empty.start() + empty.end()) == []


def _type(name: str) -> pgtypes.PgType:
    kinds = {
        "id": ("int8", pgtypes.Kind.INTEGER),
        "channel": ("text", pgtypes.Kind.TEXT),
        "created_at": ("timestamptz", pgtypes.Kind.TIMESTAMPTZ),
        "is_read": ("bool", pgtypes.Kind.BOOLEAN),
    }
    typname, kind = kinds[name]
    return pgtypes.PgType(typname, typname, typname, kind)


def test_arrow_encoder_writes_a_stream_pyarrow_reads_back() -> None:
    e = encoders.ArrowEncoder(
        [(name, _type(name), False) for name in ("id", "channel", "created_at", "is_read")]
    )
    when = datetime(2024, 1, 1, 0, 0, 1, 250, tzinfo=UTC)
    micros = int(when.timestamp()) * 1_000_000 + 250  # as sql.as_arrow sends it
    data = (
        e.start()
        + e.batch([(1, "sms", micros, False), (2, "push", micros, True)])
        + e.batch([(3, "é✓", micros, False)])
        + e.end()
    )
    table = pa.ipc.open_stream(data).read_all()
    assert table.num_rows == 3
    assert table.column_names == ["id", "channel", "created_at", "is_read"]
    assert table.to_pylist()[2] == {"id": 3, "channel": "é✓", "created_at": when, "is_read": False}
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    empty = encoders.ArrowEncoder([("id", _type("id"), False)])
    assert pa.ipc.open_stream(empty.start() + empty.end()).read_all().num_rows == 0


def test_passthrough_returns_bytes() -> None:
    e = encoders.Passthrough()
    assert e.batch(bytearray(b"a,b\n")) == b"a,b\n"
    assert isinstance(e.batch(bytearray(b"x")), bytes)


def _build(json_array: bool, chunks: list[bytes], sizes: list[int] | None = None) -> bytes:
    builder = encoders.BufferedBody(json_array, on_size=(sizes or []).append)
    for chunk in chunks:
        anyio.run(builder.write, chunk)
    return bytes(builder.finish())


def test_buffered_json_is_valid_json_also_when_empty_and_keeps_unicode() -> None:
    assert json.loads(_build(True, [])) == []
    assert json.loads(_build(True, [b""])) == []
    lines = ['{"s":"é✓"}\n'.encode(), b'{"s":"\\n"}\n{"s"', b':"a,b"}\n']
    assert json.loads(_build(True, lines)) == [{"s": "é✓"}, {"s": "\n"}, {"s": "a,b"}]


def test_buffered_body_reports_its_size_before_each_chunk_and_counts_json_rows() -> None:
    sizes: list[int] = []
    builder = encoders.BufferedBody(True, on_size=sizes.append)
    for chunk in (b'{"a":1}\n', b'{"a":2}\n'):
        anyio.run(builder.write, chunk)
    assert sizes == [9, 17] and builder.rows == 2
    assert _build(False, [b"a,b\n", b"1,2\n"]) == b"a,b\n1,2\n"


def test_a_refused_size_stops_the_body_before_the_chunk_is_kept() -> None:
    def refuse(size: int) -> None:
        if size > 10:
            raise MemoryError(size)

    builder = encoders.BufferedBody(False, on_size=refuse)
    anyio.run(builder.write, b"12345")
    with pytest.raises(MemoryError):
        anyio.run(builder.write, b"678901")
    assert builder.finish() == b"12345"


def test_no_memory_under_a_null_reaches_the_wire() -> None:
    """Arrow leaves a NULL's value slot undefined: what the builder's memory held before."""
    import struct

    import pyarrow as pa

    from app.encoders import zero_under_nulls

    garbage = struct.pack("<3f", 1.5, 123.25, 2.0)  # the middle value is under a NULL
    validity = pa.py_buffer(bytes([0b101]))
    column = pa.Array.from_buffers(pa.float32(), 3, [validity, pa.py_buffer(garbage)], 1)
    cleared = zero_under_nulls(column)
    assert cleared.to_pylist() == [1.5, None, 2.0]
    assert bytes(cleared.buffers()[1])[:12] == struct.pack("<3f", 1.5, 0.0, 2.0)
    sliced = zero_under_nulls(column.slice(1))
    assert sliced.to_pylist() == [None, 2.0]
    assert bytes(sliced.buffers()[1])[:8] == struct.pack("<2f", 0.0, 2.0)
    text = pa.array(["a", None])
    assert zero_under_nulls(text) is text
