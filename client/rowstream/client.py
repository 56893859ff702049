"""A Python client for a rowstream server: rows, Arrow batches, dataframes, resumed.

Needs only ``httpx`` (pyarrow, pandas and polars when their methods are used), none of the
server's dependencies::

    from rowstream.client import Client

    client = Client("http://127.0.0.1:8000", token)
    for row in client.iter_rows("orders", status="open"):
        ...
    frame = client.to_pandas("orders", fields="id,total")

Every export asks for ``Prefer: count=exact`` and is checked against ``X-Total-Count``.
When the connection drops mid-way (a truncated chunked body, a reset, a server that went
away), the client asks again with ``after=`` the key of the last row it has, a bounded
number of times with a growing pause, so every row is yielded once and in key order. It
never returns a partial result as complete: when it cannot finish, ``IncompleteExport``
says how many rows it has of how many.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx

from rowstream.errors import RETRYABLE
from rowstream.errors import ClientError as ClientError  # public: rowstream.client.ClientError
from rowstream.errors import IncompleteExport as IncompleteExport
from rowstream.media import ARROW, NDJSON

if TYPE_CHECKING:
    from rowstream.download import Download, Progress

#: Seconds ``POST …/partitions`` may take (a view's ranges are found in a pass over it).
PLAN_SECONDS = 600.0


class Client:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        retries: int = 5,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(headers=headers, timeout=timeout_seconds)
        self._keys: dict[str, list[str]] = {}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def datasets(self) -> list[dict[str, Any]]:
        """``GET /datasets``: each dataset's name, key, columns and links."""
        response = self.http.get(f"{self.url}/datasets")
        raise_for_problem(response)
        listed: list[dict[str, Any]] = response.json()["datasets"]
        self._keys.update({d["name"]: list(d.get("key") or []) for d in listed})
        return listed

    def dataset_at(self, route: str) -> str | None:
        """The dataset with a route at ``route`` (a path among its ``links``), if any."""
        for dataset in self.datasets():
            for link in dataset.get("links", {}).values():
                if route == link or (isinstance(link, list) and route in link):
                    return str(dataset["name"])
        return None

    def key(self, name: str) -> list[str]:
        if name not in self._keys:
            self.datasets()  # fills the keys of every dataset listed
        if name not in self._keys:
            raise ClientError(f"the server lists no dataset {name!r}")
        return self._keys[name]

    def resume_key(self, name: str) -> list[str]:
        """The key to resume ``name`` by; a ``ClientError`` when it has none."""
        key = self.key(name)
        if not key:
            raise ClientError(f"cannot resume: dataset {name!r} has no key")
        return key

    def iter_rows(self, name: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every row of ``name`` (filters, ``fields``, ``limit`` as keyword arguments), as
        dicts, resumed after a dropped connection."""

        def rows(response: httpx.Response) -> Iterator[dict[str, Any]]:
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)

        yield from self._export(name, params, NDJSON, rows, lambda row, key: [row[k] for k in key])

    def iter_batches(self, name: str, *, parallel: int = 1, **params: Any) -> Iterator[Any]:
        """Every row of ``name`` as ``pyarrow.RecordBatch``es, resumed the same way.

        ``parallel=K``: the export in K parts of one snapshot (``partitions``), fetched at
        once over K connections, each resumed on its own, held in memory, and given in key
        order once every part has arrived (a failed part stops the others)."""
        import pyarrow as pa

        def batches(response: httpx.Response) -> Iterator[Any]:
            body = io.BufferedReader(ResponseFile(response.iter_bytes()))
            reader = pa.ipc.open_stream(pa.PythonFile(body, mode="r"))
            yield from reader

        def last_key(batch: Any, key: list[str]) -> list[Any]:
            return [_json_value(batch.column(k)[-1].as_py()) for k in key]

        if parallel > 1:
            yield from self._in_parts(name, parallel, params, ARROW, batches, last_key, len)
            return
        yield from self._export(name, params, ARROW, batches, last_key, count=len)

    def to_arrow(self, name: str, *, parallel: int = 1, **params: Any) -> Any:
        """``name`` as a ``pyarrow.Table`` (``parallel=K``: fetched in K parts at once)."""
        import pyarrow as pa

        return pa.Table.from_batches(list(self.iter_batches(name, parallel=parallel, **params)))

    def to_pandas(self, name: str, *, parallel: int = 1, **params: Any) -> Any:
        return self.to_arrow(name, parallel=parallel, **params).to_pandas()

    def to_polars(self, name: str, *, parallel: int = 1, **params: Any) -> Any:
        import polars as pl

        return pl.from_arrow(self.to_arrow(name, parallel=parallel, **params))

    def partitions(self, name: str, parts: int, **params: Any) -> dict[str, Any]:
        """``POST /datasets/{name}/partitions``: ``name``'s selection split into at most
        ``parts`` key ranges of one snapshot, each a signed link (``parts[i]["url"]``)."""
        query = {"parts": str(parts), **{k: _param(v) for k, v in params.items()}}
        # a view's or saved query's ranges take one pass over its keys: give it time
        response = self.http.post(
            f"{self.url}/datasets/{name}/partitions", params=query, timeout=PLAN_SECONDS
        )
        raise_for_problem(response)
        planned: dict[str, Any] = response.json()
        return planned

    def release(self, planned: dict[str, Any]) -> None:
        """Let a partitioned export's snapshot go (done with its parts); never raises."""
        with contextlib.suppress(httpx.HTTPError):
            self.http.delete(f"{self.url}{planned['release']}")

    def _in_parts(
        self,
        name: str,
        parallel: int,
        params: dict[str, Any],
        media: str,
        items: Callable[[httpx.Response], Iterator[Any]],
        last_key: Callable[[Any, list[str]], list[Any]],
        count: Callable[[Any], int],
    ) -> Iterator[Any]:
        from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

        self.key(name)  # known before the threads ask for it
        planned = self.partitions(name, parallel, **params)
        urls = [part["url"] for part in planned["parts"]]
        stop = threading.Event()

        def part(url: str) -> list[Any]:
            got = []
            for item in self._export(name, {}, media, items, last_key, count, url=url):
                if stop.is_set():
                    break  # another part failed, or the caller stopped
                got.append(item)
            return got

        pool = ThreadPoolExecutor(max_workers=len(urls))
        try:
            futures = [pool.submit(part, url) for url in urls]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for failed in finished:
                if (error := failed.exception()) is not None:
                    stop.set()  # the others stop at their next batch
                    raise error
            for each in futures:
                yield from each.result()
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.release(planned)

    def download(
        self,
        name: str,
        path: str | Path,
        *,
        format: str = "ndjson",
        resume: bool = False,
        route: str | None = None,
        progress: Progress | None = None,
        params: Mapping[str, Any] | None = None,
        parallel: int = 1,
        **filters: Any,
    ) -> Download:
        """Write ``name`` to ``path`` in ``format`` exactly as the server sends it, checked
        against ``X-Total-Count`` and resumed after a dropped connection (NDJSON, CSV); with
        ``resume``, continue the file a failed download left. ``route`` asks another of
        the dataset's routes (the demo's ``/messages/stream``, ``/datasets/x.csv``) than
        ``/datasets/{name}/stream``; ``params``: filters whose names are taken here (a
        column called ``name`` or ``path``); ``parallel=K`` (NDJSON, CSV): K parts of one
        snapshot fetched at once and joined in key order into the same bytes as one
        stream of that snapshot. See ``rowstream.download``."""
        from rowstream import download

        if parallel > 1:
            if resume:
                raise ClientError(
                    "resume continues one stream's file; a parallel download resumes each "
                    "part while it runs (its snapshot ends with it)"
                )
            return download.write_parallel(
                self,
                name,
                Path(path),
                media=download.media_type(format),
                params={k: _param(v) for k, v in {**(params or {}), **filters}.items()},
                parallel=parallel,
                progress=progress,
            )
        return download.write(
            self,
            name,
            Path(path),
            media=download.media_type(format),
            route=route or f"/datasets/{name}/stream",
            params={k: _param(v) for k, v in {**(params or {}), **filters}.items()},
            resume=resume,
            progress=progress,
        )

    @contextlib.contextmanager
    def stream(self, route: str, query: dict[str, str], media: str) -> Iterator[httpx.Response]:
        """``GET route?query`` as ``media``, with the exact count, uncompressed (the bytes
        are the file), its body not yet read; a problem answer raises ``ClientError``.

        ``route`` may be a signed link (a part's): it is sent as it is, ``query`` (a
        resumption's ``after=``) after its signature, and without the token (a link
        stands in for it)."""
        headers = {"Accept": media, "Prefer": "count=exact", "Accept-Encoding": "identity"}
        if "rs_signature=" in route:
            extra = urlencode(query, quote_via=quote)
            request = self.http.build_request("GET", f"{route}&{extra}" if extra else route)
            request.headers.update(headers)
            request.headers.pop("Authorization", None)
        else:
            request = self.http.build_request(
                "GET", f"{self.url}{route}", params=query, headers=headers
            )
        r = self.http.send(request, stream=True)
        try:
            raise_for_problem(r)
            yield r
        finally:
            r.close()

    def _export(
        self,
        name: str,
        params: dict[str, Any],
        media: str,
        items: Callable[[httpx.Response], Iterator[Any]],
        last_key: Callable[[Any, list[str]], list[Any]],
        count: Callable[[Any], int] = lambda item: 1,
        url: str | None = None,
    ) -> Iterator[Any]:
        """``name``'s rows as ``items`` gives them, resumed after a drop (``url``: a signed
        link to read instead of ``/datasets/{name}/stream?params``)."""
        query = {k: _param(v) for k, v in params.items()}
        limit = int(query["limit"]) if "limit" in query else None
        key = self.key(name)
        total: int | None = None
        received = 0
        after: list[Any] | None = None
        failures = 0
        while True:
            if after is not None:
                query["after"] = json.dumps(after)
                if limit is not None:
                    query["limit"] = str(limit - received)
            try:
                with self.stream(url or f"/datasets/{name}/stream", query, media) as response:
                    if total is None and "x-total-count" in response.headers:
                        total = int(response.headers["x-total-count"])
                    for item in items(response):
                        received += count(item)
                        if key:
                            after = last_key(item, key)
                        yield item
                break
            except RETRYABLE as exc:
                failures += 1
                if not key or failures > self.retries:
                    raise IncompleteExport(
                        f"{name}: the connection dropped after {received:,} rows "
                        f"({type(exc).__name__}); "
                        + ("the dataset has no key to resume by" if not key else "gave up"),
                        received=received,
                        total=total,
                    ) from exc
                time.sleep(self.backoff_seconds * 2 ** (failures - 1))
        if total is not None and received != total:
            raise IncompleteExport(
                f"{name}: received {received:,} rows of {total:,}", received=received, total=total
            )


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def _json_value(value: Any) -> Any:
    """A key value as ``after=`` takes it (a JSON array of strings or numbers)."""
    if isinstance(value, int | float | str) or value is None:
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def raise_for_problem(response: httpx.Response) -> None:
    """A ``ClientError`` saying the problem's status and ``detail`` (RFC 9457)."""
    if response.status_code < 400:
        return
    response.read()
    try:
        body = response.json()
        detail = body.get("detail") or body.get("title") or response.text[:200]
    except ValueError:
        detail = response.text[:200]
    raise ClientError(f"HTTP {response.status_code}: {detail}")


class ResponseFile(io.RawIOBase):
    """A response body as a raw readable file, chunk by chunk (nothing buffered whole);
    wrap it in ``io.BufferedReader`` for reads that fill what they ask (pyarrow's)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            self._rest = next(self._chunks, b"")
            if not self._rest:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n
