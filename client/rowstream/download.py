"""Writing an export to a file as the server sends it, byte for byte, checked and resumed
(``Client.download``, and through it ``rowstream fetch``).

NDJSON, CSV and the demo's text lines are counted as they arrive and compared with
``X-Total-Count``. When the connection drops, the file is cut back to its last whole
record, the key of that record is read from it, and the export is asked for again with
``after=`` (the CSV header not written twice): a bounded number of times, with a growing
pause, in this process; or later, by ``resume=True`` on the file left behind. The joined
file equals an uninterrupted download byte for byte (rows come in key order; the resumed
part is read in a new snapshot, so rows changed in between show their new state). JSON and
Arrow are written as they come, checked only for a clean end: they cannot be joined.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx

from rowstream.errors import RETRYABLE, ClientError, IncompleteExport, cannot_connect
from rowstream.media import ARROW, CSV, JSON, NDJSON, PARQUET, TEXT
from rowstream.records import csv_records, first_record_end, last_records_in

if TYPE_CHECKING:  # the client calls this module; it is only named here
    from rowstream.client import Client

MEDIA_TYPES = {
    "ndjson": NDJSON,
    "jsonl": NDJSON,
    "json": JSON,
    "csv": CSV,
    "text": TEXT,
    "arrow": ARROW,
    "arrows": ARROW,
    "parquet": PARQUET,
}
#: How much of a file is read at a time to find its last whole record.
BLOCK_BYTES = 1 << 20
#: Formats with a row per line, whose rows are counted on the way.
LINE_FORMATS = (NDJSON, CSV, TEXT)
#: Formats that can be resumed: a row per line, its key readable from the line.
RESUMABLE = (NDJSON, CSV)

#: ``progress(done, total)``: rows (``total`` the expected rows, once known) for line
#: formats, bytes (``total`` None) for the others.
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Download:
    """A complete file: its rows (None for JSON, Arrow and Parquet, not counted) and bytes."""

    rows: int | None
    bytes: int


def media_type(fmt: str) -> str:

    media = MEDIA_TYPES.get(fmt.lower(), fmt.lower())
    if media not in MEDIA_TYPES.values():
        raise ClientError(f"unknown format {fmt!r}")
    return media


def resume_point(
    path: Path, media: str, key: list[str]
) -> tuple[list[Any] | None, int, bytes | None]:
    """Cut ``path`` after its last whole record; return (that record's key, the rows kept,
    the CSV header line)."""

    with path.open("r+b") as f:
        blocks = iter(lambda: f.read(BLOCK_BYTES), b"")
        start, end, records = last_records_in(blocks, csv=media == CSV)
        f.truncate(end)
        f.seek(0)
        header = f.readline()
        f.seek(start)
        last = f.read(end - start)
    if not records:
        return None, 0, None
    wanted = ", ".join(key)
    if media == NDJSON:
        row = json.loads(last, parse_float=str)  # a decimal key stays exact in after=
        if not isinstance(row, dict) or any(k not in row for k in key):
            raise ClientError(f"cannot resume: the rows lack the key ({wanted}); add it to fields=")
        return [row[k] for k in key], records, None
    names = next(csv.reader(io.StringIO(header.decode())))
    if any(k not in names for k in key):
        raise ClientError(f"cannot resume: the CSV lacks the key ({wanted}); add it to fields=")
    if records == 1:  # only the header
        return None, 0, header
    row = next(csv.reader(io.StringIO(last.decode())))
    return [row[names.index(k)] for k in key], records - 1, header


def write(
    client: Client,
    name: str,
    path: Path,
    *,
    media: str,
    route: str,
    params: dict[str, str],
    resume: bool,
    progress: Progress | None,
) -> Download:
    """``Client.download``: see the module's docstring."""
    counted = media in LINE_FORMATS
    limit = _int_or_none(params.get("limit"))
    appending = resume and path.exists()
    created = not path.exists()  # this download makes the file: a failed start removes it
    state: tuple[list[Any] | None, int, bytes | None] | None = None
    tally = _Tally()
    failures = 0
    opened = False  # whether a response has been written to the file

    def open_file() -> BinaryIO:
        """Called once the response is the export asked for: the file is this download's."""
        nonlocal opened
        opened = True
        return path.open("ab") if appending else path.open("wb")

    while True:
        try:
            if state is None:  # where the file stands: read again after each drop
                state = _resume_state(client, name, path, media) if appending else (None, 0, None)
            after, kept, header = state
            if appending and limit is not None and 0 < limit <= kept:
                return Download(rows=kept, bytes=path.stat().st_size)  # complete already
            query = dict(params)
            if after is not None:
                query["after"] = json.dumps(after, ensure_ascii=False)
            if limit is not None and kept:
                query["limit"] = str(limit - kept)
            tally = _Tally(kept=kept)
            _response(client, route, query, media, open_file, header, tally, progress)
            return Download(rows=tally.received(counted), bytes=path.stat().st_size)
        except RETRYABLE as exc:
            failures += 1
            # bytes this download owns: a file it appends to, or one it has opened (a file
            # it has not reached yet holds somebody else's bytes, not a partial export)
            owned = appending or opened
            received = owned and path.exists() and path.stat().st_size > 0
            if isinstance(exc, httpx.ConnectError) and failures == 1 and not received:
                # refused before any byte: nothing dropped, nothing to resume
                if created and path.is_file():
                    path.unlink(missing_ok=True)
                raise cannot_connect(client.url, exc) from exc
            what = f"{name}: the connection dropped ({type(exc).__name__})"
            if failures > client.retries or (received and media not in RESUMABLE):
                hint = (
                    "; download again with resume=True (rowstream fetch --resume) to continue"
                    if media in RESUMABLE
                    else ""
                )
                rows = tally.received(counted)
                raise IncompleteExport(
                    f"{what} after {rows:,} rows; {path} keeps them{hint}"
                    if rows is not None
                    else f"{what}; {path} keeps what was received{hint}",
                    received=rows,
                    total=tally.total,
                ) from exc
            time.sleep(client.backoff_seconds * 2 ** (failures - 1))
            appending, state = received, None
        except ClientError as cannot:
            if failures == 0:
                raise
            raise IncompleteExport(
                f"{name}: the connection dropped, and resuming failed: {cannot}",
                received=tally.received(counted),
                total=tally.total,
            ) from cannot


def write_parallel(
    client: Client,
    name: str,
    path: Path,
    *,
    media: str,
    params: dict[str, str],
    parallel: int,
    progress: Progress | None,
) -> Download:
    """``Client.download(parallel=K)``: the parts of one snapshot (``Client.partitions``),
    each downloaded at once to a file of its own beside ``path`` (and resumed on its own,
    as ``write`` resumes), then joined in key order, the CSV header kept once, into
    ``path`` in one step (``os.replace``). A failed part stops the others; the parts'
    files are removed; a failure leaves ``path`` as it was."""
    if media not in RESUMABLE:
        raise ClientError("a parallel download writes NDJSON or CSV (their parts join exactly)")
    client.resume_key(name)  # known before the parts' threads may need it
    planned = client.partitions(name, parallel, **params)
    urls = [part["url"] for part in planned["parts"]]
    stop = threading.Event()
    done = [0] * len(urls)
    expected: list[int | None] = [None] * len(urls)
    files: list[Path] = []

    def report(index: int) -> Progress:
        def seen(rows: int, total: int | None) -> None:
            if stop.is_set():
                raise ClientError("stopped: another part failed")
            done[index], expected[index] = rows, total
            if progress is not None:
                known = None if None in expected else sum(t or 0 for t in expected)
                progress(sum(done), known)

        return seen

    def part(index: int) -> Download:
        route, file = urls[index], files[index]
        return write(
            client,
            name,
            file,
            media=media,
            route=route,
            params={},
            resume=False,
            progress=report(index),
        )

    try:
        umask = os.umask(0)
        os.umask(umask)
        for _ in urls:
            handle, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            os.close(handle)
            os.chmod(scratch, 0o666 & ~umask)  # as a file opened for writing would be
            files.append(Path(scratch))
        with ThreadPoolExecutor(max_workers=len(urls)) as pool:
            futures = [pool.submit(part, i) for i in range(len(urls))]
            try:
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for failed in finished:
                    if (error := failed.exception()) is not None:
                        raise error
                results = [f.result() for f in futures]
            finally:
                stop.set()  # on a failure, the others stop at their next chunk
        joined = files[0]
        with joined.open("ab") as out:
            header = _header(joined) if media == CSV else b""
            for file in files[1:]:
                with file.open("rb") as f:
                    if header and f.read(len(header)) != header:
                        raise ClientError("the parts' CSV headers differ")
                    while block := f.read(BLOCK_BYTES):
                        out.write(block)
                file.unlink()  # at most one part's bytes twice on disk
        os.replace(joined, path)
    finally:
        client.release(planned)
        for file in files:
            file.unlink(missing_ok=True)
    return Download(rows=sum(r.rows or 0 for r in results), bytes=path.stat().st_size)


def _header(path: Path) -> bytes:
    """The CSV file's header record, as bytes (its names may hold quoted newlines)."""
    with path.open("rb") as f:
        head = f.read(BLOCK_BYTES)
    end = first_record_end(head)
    if end < 0:
        raise ClientError("a part's CSV header is not complete")
    return head[:end]


@dataclass
class _Tally:
    """What a download has: rows kept from before this request, rows written by it, and
    the rows expected in all (``X-Total-Count``, once known)."""

    kept: int = 0
    rows: int = 0
    total: int | None = None

    def received(self, counted: bool) -> int | None:
        """The rows the file holds; None where rows are not counted (JSON, Arrow…)."""
        return self.kept + self.rows if counted else None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None  # sent as it is: the server's 422 says what is wrong


def _resume_state(
    client: Client, name: str, path: Path, media: str
) -> tuple[list[Any] | None, int, bytes | None]:

    if path.stat().st_size == 0:
        return None, 0, None  # nothing to keep: start again
    if media not in RESUMABLE:
        raise ClientError(f"resuming works for NDJSON and CSV, not {media}")
    return resume_point(path, media, client.resume_key(name))


def _response(
    client: Client,
    route: str,
    query: dict[str, str],
    media: str,
    open_out: Callable[[], BinaryIO],
    header: bytes | None,
    tally: _Tally,
    progress: Progress | None,
) -> None:
    """One request: its body written to the file ``open_out`` opens (the CSV header
    skipped when ``header`` is already there), its rows counted in ``tally`` and checked
    against its ``X-Total-Count``. The file is opened only once the response is known to
    be the export asked for: a refusal leaves an existing file as it was."""

    with client.stream(route, query, media) as r:
        sent = r.headers.get("content-type", "").split(";")[0].strip()
        if sent != media:
            raise ClientError(f"the server sent {sent or 'no type'}, not {media}: ask for it")
        count = r.headers.get("x-total-count")
        expected = int(count) if count is not None and media in LINE_FORMATS else None
        if expected is not None:
            tally.total = tally.kept + expected
        skipping = media == CSV and header is not None
        header_lines = 1 if media == CSV and header is None else 0
        pending = b""
        ended, written, in_quotes = 0, 0, False
        with open_out() as out:
            for chunk in r.iter_bytes():
                if skipping:
                    pending += chunk
                    head, newline, chunk = pending.partition(b"\n")
                    if not newline:
                        continue
                    if head + newline != header:
                        raise ClientError("cannot resume: the CSV columns differ from the file's")
                    skipping = False
                out.write(chunk)
                written += len(chunk)
                if media == CSV:
                    n, in_quotes = csv_records(chunk, in_quotes)
                    ended += n
                elif media in LINE_FORMATS:
                    ended += chunk.count(b"\n")
                tally.rows = max(ended - header_lines, 0)
                if progress is not None:
                    if media in LINE_FORMATS:
                        progress(tally.kept + tally.rows, tally.total)
                    else:
                        progress(written, None)
    if expected is not None and tally.rows != expected:
        raise IncompleteExport(
            f"received {tally.kept + tally.rows:,} of {tally.total:,} rows",
            received=tally.kept + tally.rows,
            total=tally.total,
        )
