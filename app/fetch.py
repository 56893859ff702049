"""``rowstream fetch``: download an export to a file, check it is complete, resume it.

The client asks for ``Prefer: count=exact`` and compares the rows it received with
``X-Total-Count``: a download that ends early, or a server that drops the connection
(truncated chunked body), is reported and exits non-zero, keeping what was received.
With ``--resume`` and an existing NDJSON or CSV file it drops a partial last line,
learns the dataset's key from ``GET /datasets``, reads the key of the last row and asks
for ``after=[…]``, so the joined file equals an uninterrupted download byte for byte
(rows come in key order; the resumed part is read in a new snapshot, so rows changed in
between show their new state).

The client is a separate program: it shares only ``records.py`` (pure functions) with
the server, not its web or database stack.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from app.records import csv_records, last_records

NDJSON = "application/x-ndjson"
JSON = "application/json"
CSV = "text/csv"
TEXT = "text/plain"
ARROW = "application/vnd.apache.arrow.stream"
ALIASES = {
    "ndjson": NDJSON,
    "jsonl": NDJSON,
    "json": JSON,
    "csv": CSV,
    "text": TEXT,
    "arrow": ARROW,
}

#: Formats whose files can be resumed: one row per line, the key readable from the line.
RESUMABLE = (NDJSON, CSV)


class FetchError(Exception):
    """Reported in one line; the process exits with status 1."""


def _media_type(fmt: str | None, url: str) -> str:
    query = dict(parse_qsl(urlsplit(url).query))
    wanted = fmt or query.get("format") or "ndjson"
    media = ALIASES.get(wanted.lower(), wanted.lower())
    if media not in (NDJSON, JSON, CSV, TEXT, ARROW):
        raise FetchError(f"unknown format {wanted!r}")
    return media


def _with_params(url: str, **params: Any) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.pop("format", None)  # the Accept header says it
    query.update({k: str(v) for k, v in params.items() if v is not None})
    return urlunsplit(parts._replace(query=urlencode(query)))


def _resume_point(
    path: Path, media: str, key: list[str]
) -> tuple[list[Any] | None, int, bytes | None]:
    """Truncate ``path`` after its last complete record; return (its key, rows, header)."""
    data = path.read_bytes()
    start, end, records = last_records(data, csv=media == CSV)
    with path.open("r+b") as f:
        f.truncate(end)
    if not records:
        return None, 0, None
    last = data[start:end]
    wanted = ", ".join(key)
    if media == NDJSON:
        row = json.loads(last)
        if not isinstance(row, dict) or any(k not in row for k in key):
            raise FetchError(f"cannot resume: the rows lack the key ({wanted}); add it to fields=")
        return [row[k] for k in key], records, None
    header_end = data.index(b"\n") + 1
    header = data[:header_end]
    names = next(csv.reader(io.StringIO(header.decode())))
    if any(k not in names for k in key):
        raise FetchError(f"cannot resume: the CSV lacks the key ({wanted}); add it to fields=")
    if records == 1:  # only the header
        return None, 0, header
    row = next(csv.reader(io.StringIO(last.decode())))
    return [row[names.index(k)] for k in key], records - 1, header


def dataset_key(url: str, headers: dict[str, str]) -> list[str]:
    """The key of the dataset ``url`` exports, from ``GET /datasets`` on the same server
    (the demo's historical routes export ``messages``)."""
    parts = urlsplit(url)
    path = parts.path
    if path in ("/messages", "/messages/stream", "/standard", "/chunked"):
        name = "messages"
    elif path.startswith("/datasets/"):
        name = path.removeprefix("/datasets/").split("/")[0].split(".")[0]
    else:
        raise FetchError(f"cannot resume: {path} is not a dataset's route")
    listing = urlunsplit(parts._replace(path="/datasets", query=""))
    try:
        response = httpx.get(listing, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot resume: GET /datasets failed ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise FetchError(_problem(response))
    for dataset in response.json().get("datasets", []):
        if dataset.get("name") == name:
            if not dataset.get("key"):
                raise FetchError(f"cannot resume: dataset {name!r} has no key")
            return list(dataset["key"])
    raise FetchError(f"cannot resume: the server lists no dataset {name!r}")


def fetch(
    url: str,
    output: Path,
    *,
    fmt: str | None = None,
    token: str | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> int:
    """Download ``url`` to ``output``; return the rows in the file (minus the bytes, for
    JSON and Arrow, whose rows are not counted on the way)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    media = _media_type(fmt, url)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    after: list[Any] | None = None
    kept_rows = 0
    header: bytes | None = None
    mode = "wb"
    if resume and output.exists():
        if media not in RESUMABLE:
            raise FetchError(f"--resume works for NDJSON and CSV, not {media}")
        after, kept_rows, header = _resume_point(output, media, dataset_key(url, auth))
        mode = "ab"
    limit = dict(parse_qsl(urlsplit(url).query)).get("limit")
    remaining = int(limit) - kept_rows if limit else None
    if remaining is not None and remaining <= 0:
        return kept_rows
    resume_from = json.dumps(after, ensure_ascii=False) if after is not None else None
    request_url = _with_params(url, after=resume_from, limit=remaining)
    headers = {"Accept": media, "Prefer": "count=exact", **auth}

    line_format = media in (NDJSON, CSV, TEXT)
    expected: int | None = None
    rows = 0
    received = 0
    with (
        httpx.Client(timeout=httpx.Timeout(30.0, read=300.0)) as client,
        output.open(mode) as out,
    ):
        try:
            with client.stream("GET", request_url, headers=headers) as response:
                if response.status_code != 200:
                    response.read()
                    raise FetchError(_problem(response))
                total = response.headers.get("x-total-count")
                expected = int(total) if total is not None else None
                skip_header = media == CSV and header is not None
                columns = [BarColumn(), MofNCompleteColumn() if line_format else DownloadColumn()]
                with Progress(
                    "{task.description}",
                    *columns,
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    disable=quiet,
                    transient=False,
                ) as progress:
                    task = progress.add_task(
                        f"{output.name}", total=expected if line_format else None
                    )
                    in_quotes = False
                    for chunk in response.iter_bytes():
                        if skip_header:
                            head, sep, chunk = chunk.partition(b"\n")
                            if not sep:
                                raise FetchError("unexpected response: no CSV header line")
                            if head + sep != header:
                                raise FetchError("cannot resume: the CSV columns differ")
                            skip_header = False
                        out.write(chunk)
                        received += len(chunk)
                        if media == CSV:
                            ended, in_quotes = csv_records(chunk, in_quotes)
                            rows += ended
                            progress.update(task, completed=rows - (header is None))
                        elif line_format:
                            rows += chunk.count(b"\n")
                            progress.update(task, completed=rows)
                        else:
                            progress.update(task, completed=received)
        except httpx.HTTPError as exc:
            out.flush()
            raise FetchError(
                f"transfer interrupted after {received:,} bytes ({type(exc).__name__}); "
                f"{output} keeps what was received"
                + ("; run again with --resume to continue" if media in RESUMABLE else "")
            ) from None
    if media == CSV and header is None:
        rows -= 1  # the header line
    if expected is not None and line_format and rows != expected:
        raise FetchError(
            f"incomplete: received {rows:,} of {expected:,} rows; {output} keeps them"
            + ("; run again with --resume to continue" if media in RESUMABLE else "")
        )
    if not line_format:
        return -received  # no rows to count: report the bytes
    return kept_rows + rows


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"HTTP {response.status_code}: {body.get('detail') or body.get('title')}"
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"


def run(args: argparse.Namespace, settings: Any) -> None:
    token = args.token or os.environ.get("ROWSTREAM_TOKEN")
    try:
        rows = fetch(
            args.url,
            Path(args.output),
            fmt=args.format,
            token=token,
            resume=args.resume,
            quiet=args.quiet,
        )
    except FetchError as exc:
        print(f"rowstream fetch: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    what = f"{rows:,} rows" if rows >= 0 else f"{-rows:,} bytes"
    print(f"{args.output}: {what}, complete", file=sys.stderr)


def add_parser(sub: Any) -> None:
    f = sub.add_parser("fetch", help="download an export to a file (resumable, checked)")
    f.add_argument("url", help="e.g. http://127.0.0.1:8000/messages/stream?channel=sms")
    f.add_argument("-o", "--output", required=True, help="file to write")
    f.add_argument("--format", help="ndjson (default), csv, json, text or arrow")
    f.add_argument("--token", help="bearer token (default: $ROWSTREAM_TOKEN)")
    f.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing NDJSON/CSV file after its last complete row",
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=run)
