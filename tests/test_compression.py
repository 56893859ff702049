import gzip
import zlib

import pytest
import zstandard

from app import compression


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("identity", None),
        ("gzip", "gzip"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("zstd;q=0.5, gzip", "gzip"),
        ("*", "zstd"),
        ("*;q=0, gzip", "gzip"),
        ("gzip;q=0", None),
        ("br", None),
    ],
)
def test_negotiate(header: str | None, expected: str | None) -> None:
    assert compression.negotiate(header) == expected


async def _source(chunks: list[bytes]):  # type: ignore[no-untyped-def]
    for chunk in chunks:
        yield chunk


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
async def test_every_chunk_is_decodable_as_soon_as_it_arrives(encoding: str) -> None:
    chunks = [b'{"id":%d}\n' % i * 50 for i in range(5)]
    out = [c async for c in compression.compress(_source(list(chunks)), encoding)]
    if encoding == "gzip":
        decoder = zlib.decompressobj(31)
        for sent, wire in zip(chunks, out, strict=False):
            assert decoder.decompress(wire) == sent  # flushed: nothing held back
        assert gzip.decompress(b"".join(out)) == b"".join(chunks)
    else:
        reader = zstandard.ZstdDecompressor().decompressobj()
        for sent, wire in zip(chunks, out, strict=False):
            assert reader.decompress(wire) == sent
        whole = zstandard.ZstdDecompressor().decompressobj().decompress(b"".join(out))
        assert whole == b"".join(chunks)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
