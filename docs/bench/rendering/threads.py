"""Issue 26: does polars render NDJSON off the GIL, batch by batch? The driver's Arrow
batches of `messages` rendered one by one in a worker thread while the main thread counts
loop turns (what an event loop would still get done)."""

import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
import adbc_driver_postgresql.dbapi as adbc
import polars as pl

from app import embedded


def spin(stop: threading.Event) -> float:
    """Loop turns per second until ``stop``."""
    turns, started = 0, time.perf_counter()
    while not stop.is_set():
        turns += 1
    return turns / (time.perf_counter() - started)


with embedded.held(Path(".data")) as server, adbc.connect(embedded.url(server)) as c:
    with c.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(1 << 20)})
        cur.execute("SELECT * FROM messages ORDER BY id")
        batches = list(cur.fetch_record_batch())
    rows = sum(b.num_rows for b in batches)

    def render() -> int:
        return sum(len(pl.from_arrow(b).write_ndjson()) for b in batches)

    alone = []
    for _ in range(5):
        t = time.perf_counter()
        size = render()
        alone.append(time.perf_counter() - t)
    stop = threading.Event()
    t = time.perf_counter()
    while time.perf_counter() - t < 0.5:
        pass
    baseline_turns = []
    for _ in range(3):
        stop.clear()
        timer = threading.Timer(statistics.median(alone), stop.set)
        timer.start()
        baseline_turns.append(spin(stop))
    shared, took = [], []
    for _ in range(3):
        stop.clear()
        started = time.perf_counter()
        worker = threading.Thread(target=lambda: (render(), stop.set()))
        worker.start()
        shared.append(spin(stop))
        worker.join()
        took.append(time.perf_counter() - started)
    print(
        f"{len(batches)} batches, {rows} rows, {size} bytes; rendering alone "
        f"{statistics.median(alone):.3f} s, beside a busy main thread "
        f"{statistics.median(took):.3f} s; the main thread's loop rate meanwhile: "
        f"{statistics.median(shared) / statistics.median(baseline_turns):.0%} of its rate alone"
    )
