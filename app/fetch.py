"""``rowstream fetch``: download an export to a file with ``rowstream.client``, checked
and resumed (``Client.download``, ``rowstream/download.py``), with a progress bar.

The URL is any data route of a server (``/datasets/{name}/stream``, a suffix URL such as
``/datasets/{name}.csv``, the demo's ``/messages/stream``), its query the export's filters.
A connection that drops is resumed in this process, ``--retries`` times; after that the
file keeps what was received, and ``--resume`` continues it later. Like the client, it
imports nothing of the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from rowstream.client import Client, ClientError
from rowstream.download import LINE_FORMATS, Download, media_type
from rowstream.errors import cannot_connect


class FetchError(Exception):
    """Reported in one line; the process exits with status 1."""


def dataset_of(client: Client, path: str) -> str:
    """The dataset a data route exports (its key, from ``GET /datasets``, is what a
    resumed download continues after): read from the path, or for another of its routes
    (the demo's ``/messages/stream``) found among the links ``GET /datasets`` gives."""
    if path.startswith("/datasets/"):
        return path.removeprefix("/datasets/").split("/")[0].split(".")[0]
    try:
        name = client.dataset_at(path)
    except httpx.TransportError as exc:
        raise cannot_connect(client.url, exc) from None
    if name is None:
        raise FetchError(f"{path} is not a dataset's route")
    return name


def fetch(
    url: str,
    output: Path,
    *,
    fmt: str | None = None,
    token: str | None = None,
    resume: bool = False,
    retries: int = 5,
    quiet: bool = False,
    parallel: int = 1,
) -> Download:
    """Download ``url`` to ``output``, complete or a ``ClientError``; ``parallel``: in that
    many parts of one snapshot at once (``Client.download(parallel=…)``)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    suffix = parts.path.rpartition(".")[2] if "." in parts.path.rpartition("/")[2] else None
    requested = params.pop("format", None)  # the Accept header says it
    media = media_type(fmt or requested or suffix or "ndjson")
    counted = media in LINE_FORMATS
    if parallel > 1 and resume:
        raise FetchError(
            "--resume continues one stream's file; a parallel download resumes each part "
            "while it runs (its snapshot ends with it)"
        )
    if parallel > 1 and not parts.path.startswith("/datasets/"):
        raise FetchError("--parallel needs a /datasets/{name} URL")
    base = urlunsplit(parts._replace(path="", query="", fragment=""))
    columns = [BarColumn(), MofNCompleteColumn() if counted else DownloadColumn()]
    with (
        Client(base, token, retries=retries, timeout_seconds=300.0) as client,
        Progress(
            "{task.description}",
            *columns,
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            disable=quiet,
        ) as bar,
    ):
        task = bar.add_task(output.name, total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return client.download(
            dataset_of(client, parts.path),
            output,
            format=media,
            resume=resume,
            route=parts.path,
            progress=progress,
            params=params,
            parallel=parallel,
        )


def run(args: argparse.Namespace, settings: Any) -> None:
    token = args.token or os.environ.get("ROWSTREAM_TOKEN")
    try:
        done = fetch(
            args.url,
            Path(args.output),
            fmt=args.format,
            token=token,
            resume=args.resume,
            retries=args.retries,
            quiet=args.quiet,
            parallel=args.parallel,
        )
    except (FetchError, ClientError) as exc:
        print(f"rowstream fetch: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except httpx.HTTPError as exc:
        print(f"rowstream fetch: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    what = f"{done.rows:,} rows" if done.rows is not None else f"{done.bytes:,} bytes"
    print(f"{args.output}: {what}, complete", file=sys.stderr)


def add_parser(sub: Any) -> None:
    f = sub.add_parser("fetch", help="download an export to a file (resumable, checked)")
    f.add_argument("url", help="e.g. http://127.0.0.1:8000/datasets/messages/stream?channel=sms")
    f.add_argument("-o", "--output", required=True, help="file to write")
    f.add_argument("--format", help="ndjson (default), csv, json, text, arrow or parquet")
    f.add_argument("--token", help="bearer token (default: $ROWSTREAM_TOKEN)")
    f.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing NDJSON/CSV file after its last complete row",
    )
    f.add_argument(
        "--retries",
        type=int,
        default=5,
        help="times a dropped connection is resumed before giving up (NDJSON, CSV; default 5)",
    )
    f.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="K",
        help="fetch K parts of one snapshot at once and join them in key order (NDJSON, CSV)",
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=run)
