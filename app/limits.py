"""Every fixed bound of the service, in one place (the settings hold what an operator
may change, with their defaults; this holds what they may not). The OpenAPI document and
the error messages read these, so a documented bound is the enforced one.
"""

from __future__ import annotations

# --- request values -----------------------------------------------------------------------
#: The largest integer a ``limit`` or an ``int8`` filter takes.
INT8 = 2**63 - 1
#: Longest value a filter takes (and each item of an ``__in`` list).
MAX_VALUE_LENGTH = 4096
#: Longest ``__in`` list, as text, and most values in one.
MAX_LIST_CHARS = 16_384
MAX_IN_VALUES = 1000
#: Longest path and query ``POST /links`` signs.
MAX_LINK_URL_CHARS = 8192
#: Seconds a signed link lives when ``POST /links`` names none (``LINK_MAX_TTL_SECONDS``
#: caps any).
DEFAULT_LINK_TTL_SECONDS = 600

# --- secrets and keys ---------------------------------------------------------------------
#: Secrets shorter than this are refused (RFC 7518 §3.2: an HS256 key must be at least as
#: long as the hash output, 256 bits).
MIN_SECRET_BYTES = 32
#: Fewer distinct characters than this and a production secret is a pattern, not random
#: (``aaaa…``, ``abab…``). 8: no 32-character hex secret (``openssl rand -hex 16``) of
#: 200,000 sampled had fewer; at 12, 1.7% had.
MIN_DISTINCT_SECRET_CHARACTERS = 8
#: Bytes of a JWKS document read at most (a provider's has a handful of keys).
MAX_JWKS_BYTES = 256 * 1024
#: Seconds one fetch of the JWKS may take in all.
JWKS_FETCH_SECONDS = 5.0
#: Seconds a request with an unknown ``kid`` waits for the fetch it started (or found).
UNKNOWN_KEY_WAIT_SECONDS = 0.25

# --- connections --------------------------------------------------------------------------
#: Seconds a refused connection may linger to read what the client still sends (closing
#: with unread input would reset the connection before the client reads the refusal).
REFUSAL_LINGER_SECONDS = 1.0
#: Descriptors kept for everything but client connections: the pools' connections, the
#: listening socket, log files, the embedded server's pipes.
RESERVED_DESCRIPTORS = 64

# --- exports ------------------------------------------------------------------------------
#: Tries to begin an export's transaction: a dead pooled connection is replaced once.
BEGIN_ATTEMPTS = 2
#: Seconds an export's cleanup (ROLLBACK, cancelling a fetch) may take.
CLEANUP_SECONDS = 5.0
#: The whole-COPY time budget of a streamed COPY: a day (``STREAM_MAX_SECONDS`` ends
#: exports long before).
COPY_STREAM_SECONDS = 24 * 3600.0
#: Rows in an export's first fetch: the response starts once it is read, so a small one
#: gets the first byte out sooner (rendering 1,000 rows took ~2.4 ms of a ~5 ms first byte).
FIRST_BATCH_ROWS = 100
#: Bytes of one Arrow batch from the ADBC driver (its default is 16 MB): memory stays low
#: per stream, and the first batch leaves sooner.
ADBC_BATCH_BYTES = 1 << 20

#: ``COPY`` chunks queued for a server-rendered export while its worker thread renders the
#: ones before: asyncpg's socket reads, about 10 KB each at full speed and up to 256 KiB
#: when a slow client has held the stream back, so at most 4 MiB per stream.
RENDER_QUEUE_CHUNKS = 16
#: A server-rendered export renders (and sends) this many bytes of ``COPY`` data at once,
#: or what came within ``RENDER_BATCH_SECONDS`` when rows come slower: each hand-over to
#: the worker thread and each HTTP send has a cost of its own.
RENDER_BATCH_BYTES = 256 * 1024
RENDER_BATCH_SECONDS = 0.05
#: Bytes of ``COPY`` data rendered first, alone, so that the response starts with them.
RENDER_FIRST_BYTES = 16 * 1024
#: Bytes of a server-rendered export's output buffer (a larger row gets a larger one).
RENDER_OUT_BYTES = 1 << 20

# --- partitioned exports (``partitions.py``) -------------------------------------------------
#: Most parts one partitioned export is split into.
MAX_PARTS = 64
#: Most partitioned exports one instance holds open at once (each holds a connection and a
#: snapshot).
MAX_PARTITION_HOLDS = 16
#: Rows of a table sampled (its pages, ``TABLESAMPLE SYSTEM``) to find the parts' bounds,
#: and the fewest of them in the selection per part for the sample to be used (else the
#: bounds are found exactly, by a count and a pass over the selection's keys).
SAMPLE_ROWS = 30_000
MIN_SAMPLE_PER_PART = 50
#: Seconds a hold lasts after its last part was read through its instance: the end of a
#: body may still be on its way, and a client that loses it resumes in this snapshot.
PART_READ_GRACE_SECONDS = 5.0
#: Most of them one caller (subject) holds on one instance.
MAX_PARTITION_HOLDS_PER_SUBJECT = 4

# --- health -------------------------------------------------------------------------------
#: Seconds ``/readyz`` gives each step of its check that every dataset is readable (the
#: datasets' probe is bounded on the server too: ``lock_timeout``, ``statement_timeout``).
READINESS_PROBE_SECONDS = 2.0
#: Seconds one start-up warm-up export may take.
WARM_UP_SECONDS = 2.0
