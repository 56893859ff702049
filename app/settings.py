"""All configuration, read once from the environment (and an optional ``.env``).

One class, no module-level instance: the app factory and the CLI each build a
``Settings`` and pass it down, so tests can run several configurations in one process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.limits import MIN_DISTINCT_SECRET_CHARACTERS, MIN_SECRET_BYTES

#: Secrets this repository itself publishes (the compose files' ``JWT_SECRET``): anyone
#: can read them, so production refuses them. A test scans the repository for secret
#: settings and checks that each value it finds is refused.
PUBLISHED_SECRETS = frozenset({"change-me-change-me-change-me-change-me-0123456789"})
#: Words that mark a value as a placeholder someone was meant to replace.
_PLACEHOLDER = re.compile(
    r"change[-_ ]?me|changeit|replace[-_ ]?me|placeholder|example|your[-_ ]?(own[-_ ]?)?"
    r"secret|secret[-_ ]?here|not[-_ ]?a[-_ ]?secret|dummy|insecure|test[-_ ]?secret",
    re.IGNORECASE,
)


def placeholder_reason(value: str) -> str | None:
    """Why ``value`` cannot be a production secret (published here, a placeholder's
    words, too few distinct characters), or None."""
    if value in PUBLISHED_SECRETS:
        return "it is published in this project's own files"
    if _PLACEHOLDER.search(value):
        return "it looks like a placeholder"
    if len(set(value)) < MIN_DISTINCT_SECRET_CHARACTERS:
        return f"it has fewer than {MIN_DISTINCT_SECRET_CHARACTERS} distinct characters"
    return None


class Settings(BaseSettings):
    #: Time settings name their unit (``*_SECONDS``); the names they had before still work.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    #: ``postgresql://…``; unset means "start the embedded PostgreSQL under ``data_dir``".
    database_url: str | None = None
    #: Where exports (streams, COPY, buffered reads) run: a replica, or PgBouncer in front
    #: of one. Default: ``DATABASE_URL``. Nothing is ever written there.
    database_read_url: str | None = None
    #: Refuse new exports (503) while the read side replays more than this many seconds
    #: behind its primary. Unset: no check.
    read_max_lag_seconds: float | None = Field(default=None, ge=0)
    #: Server processes behind one port (``rowstream serve``); one per container is the
    #: usual choice, several for a VM. Needs ``DATABASE_URL``.
    workers: int = Field(default=1, ge=1)
    #: ``transaction`` when ``DATABASE_URL`` points at PgBouncer in transaction mode: no
    #: named prepared statements (asyncpg's statement cache is turned off) and nothing
    #: set per session (everything per request is ``SET LOCAL`` anyway).
    database_pooler: Literal["none", "transaction"] = "none"
    #: The datasets to serve (TOML). Default: ``datasets.toml`` in the working directory
    #: when there is one; with none, the demo's ``messages`` table.
    datasets_file: Path | None = None
    #: Seconds ``/readyz`` reuses its check that every dataset is readable.
    readiness_cache_seconds: float = Field(default=5.0, ge=0)
    #: Where ``rowstream serve`` listens (``--host``/``--port`` override them).
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    #: Where the embedded database, the generated development secret and other local
    #: state live. Git-ignored.
    data_dir: Path = Path(".data")

    environment: Literal["development", "production"] = "development"
    #: ``json``: one JSON object per log line (one access line per request); ``text``.
    log_format: Literal["json", "text"] = "json"

    #: An HMAC key for tokens (at least 32 bytes, in every environment). In development,
    #: when no key at all is configured, one is generated once under ``data_dir``.
    jwt_secret: str | None = Field(default=None, repr=False)
    #: The HMAC algorithms ``JWT_SECRET`` is used with.
    jwt_algorithms: Annotated[list[str], NoDecode, Field(min_length=1)] = ["HS256"]
    #: An identity provider's public key (PEM: RSA → RS256, EC → ES256/384/512, Ed25519
    #: → EdDSA; the algorithm comes from the key, never from a token's header).
    jwt_public_key: str | None = None
    #: A JWKS document on disk, or at a URL (fetched at start, cached, refetched for an
    #: unknown ``kid`` at most every ``JWT_JWKS_REFRESH_MIN_SECONDS``).
    jwt_jwks_file: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwt_jwks_refresh_min_seconds: float = Field(default=30.0, ge=0)
    #: ``aud``: a token's ``aud`` (a string or an array) must contain it, when set.
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: A token whose ``exp`` lies further ahead than this is refused (a "forever" token).
    jwt_max_ttl_seconds: float = Field(
        default=24 * 3600,
        gt=0,
        validation_alias=AliasChoices("jwt_max_ttl_seconds", "jwt_max_ttl"),
    )
    #: Clock skew allowed on ``exp``, ``iat`` and ``nbf``.
    jwt_leeway_seconds: float = Field(
        default=30.0,
        ge=0,
        validation_alias=AliasChoices("jwt_leeway_seconds", "jwt_leeway"),
    )
    #: Tokens longer than this are refused before any decoding is attempted.
    jwt_max_length: int = 4096
    #: The claim that lists a token's roles (a dataset's ``roles`` need one of them); a
    #: dotted name reaches into objects (``realm_access.roles``). ``scope`` counts too.
    jwt_roles_claim: str = "roles"
    #: Off by default. When set, each export runs ``SET LOCAL ROLE`` to this claim's value
    #: (one of ``DB_ROLES``, else 403) with the claims in ``request.jwt.claims``, so the
    #: database's row-level security decides which rows each caller sees.
    db_role_claim: str | None = None
    #: A JSON array or a comma-separated list (``DB_ROLES=app_alice,app_bob``), as every
    #: list setting.
    db_roles: Annotated[list[str], NoDecode] = []

    #: The HMAC key of signed links (``POST /links``). Default: derived from ``JWT_SECRET``.
    link_secret: str | None = Field(default=None, repr=False)
    #: The longest a signed link may live.
    link_max_ttl_seconds: float = Field(
        default=900.0,
        gt=0,
        validation_alias=AliasChoices("link_max_ttl_seconds", "link_max_ttl"),
    )
    #: A bearer token ``/metrics`` requires. Outside development ``/metrics`` needs it
    #: (unset: ``/metrics`` answers 404); in development, unset leaves it open.
    metrics_token: str | None = Field(default=None, repr=False)

    #: Rows fetched from the server-side cursor per round trip, and per HTTP chunk.
    stream_batch_size: int = Field(default=1000, ge=1, le=100_000)

    #: Where Arrow and Parquet come from: ``adbc``, PostgreSQL's binary COPY decoded by the
    #: ADBC driver (where the columns' types suit it; not through PgBouncer in transaction
    #: mode, nor from a read replica), or ``copy-text``, its CSV text parsed by Arrow.
    arrow_source: Literal["adbc", "copy-text"] = "adbc"
    #: Where NDJSON and CSV text is made: ``server``, from PostgreSQL's binary COPY by the
    #: compiled renderer (``app/render.c``, built by ``make``; the database's core only
    #: reads and sends), or ``database``, PostgreSQL renders each value's text. The bytes
    #: are the same; without the compiled renderer, ``database``.
    text_rendering: Literal["server", "database"] = "server"
    #: Load pyarrow and the ADBC driver at start, and keep one driver connection open, so
    #: that the first Arrow or Parquet request costs what any does; ``false``: the first
    #: such request loads them (about 0.2 s, once), and an idle process holds about 55 MB
    #: less (docs/benchmarks.md, "Idle memory").
    arrow_preload: bool = True
    #: Spreadsheet-safe CSV (OWASP's "CSV injection"): a text cell or column name that
    #: begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, which Excel,
    #: LibreOffice and Google Sheets would run as a formula, goes out with a ``'`` before
    #: it (and so does one that begins with ``'``, so the prefix reads back unambiguously).
    #: Off by default: exports stay exact. Only CSV, only text columns; numbers, dates and
    #: every other format are untouched. A request overrides it with ``csv_safe=1``/``0``.
    csv_safe: bool = False
    #: Rows of one Parquet row group: held in memory until complete (about 3 MB for the
    #: demo's rows), so this is what bounds a Parquet stream's memory.
    parquet_row_group_rows: int = Field(default=16_384, ge=1, le=1_000_000)

    #: Streams running at once in this process (each holds a pooled connection and a
    #: transaction); keep it below ``pool_max_size`` so other requests still get one.
    stream_capacity: int = Field(default=16, ge=1)
    #: Streams one token subject may run at once (429 beyond it).
    stream_per_subject: int = Field(default=8, ge=1)
    #: Seconds a new stream waits for capacity before it is refused with 503.
    stream_admission_wait_seconds: float = Field(
        default=0.5,
        ge=0,
        validation_alias=AliasChoices("stream_admission_wait_seconds", "stream_admission_wait"),
    )
    #: Seconds one chunk may wait for a client that stopped reading before the stream is
    #: aborted (its connection and transaction freed).
    stream_send_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices("stream_send_timeout_seconds", "stream_send_timeout"),
    )
    #: Seconds an export may run at all, however fast its client reads. A stream holds a
    #: slot, a pooled connection and a REPEATABLE READ snapshot, which keeps VACUUM from
    #: removing rows deleted since it began; 30 minutes is about a billion NDJSON rows at
    #: the measured rate. The stream ends as a visible failure: resume with ``after=``.
    stream_max_seconds: float = Field(default=1800.0, gt=0)
    #: Seconds the instance that planned a partitioned export (``POST
    #: /datasets/{name}/partitions``) holds its snapshot open for the parts at most (and
    #: never longer than their links live: ``LINK_MAX_TTL_SECONDS``, the caller's token);
    #: it lets go sooner once every part has been read through it or the export is
    #: released. Like a stream's, an open snapshot keeps VACUUM from removing rows deleted
    #: since it began: 15 minutes is half of ``STREAM_MAX_SECONDS``, and K parts take
    #: about 1/K of one stream's time.
    partition_hold_seconds: float = Field(default=900.0, gt=0, le=86_400)
    #: A client slower than this (bytes per second, over ``STREAM_MIN_RATE_WINDOW_SECONDS``
    #: during which it, not the database, held the export back) is cut off the same way.
    #: 256 KiB/s is a 2 Mbit/s link; 0 turns the check off.
    stream_min_bytes_per_second: int = Field(default=256 * 1024, ge=0)
    #: The window the minimum rate is measured over.
    stream_min_rate_window_seconds: float = Field(default=30.0, gt=0)
    #: Database backstop on stream transactions (``idle_in_transaction_session_timeout``).
    stream_idle_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("stream_idle_timeout_seconds", "stream_idle_timeout"),
    )
    #: The standard (buffered) endpoint refuses results larger than this, before loading.
    max_standard_rows: int = Field(default=1_000_000, ge=1)

    #: Memory the standard (buffered) route may hold for response bodies at once, over all
    #: its requests, in MiB. Each request reserves its estimated body before loading and
    #: grows the reservation as rows arrive; beyond the budget it gets 503 and
    #: ``Retry-After``, and its memory is released when its response is sent or aborted.
    standard_memory_budget_mb: int = Field(default=512, ge=1)

    #: Seconds a connection may take to send a complete request head (from its start, or
    #: from the first byte of a later request); then it is closed (408 if it sent some).
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Bytes one request head (request line and headers) may have; beyond: 431.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    #: Seconds a request's body may take to arrive, from the end of its head; then the
    #: request is answered 408 (or, once answered, its connection closed). Bodies here are
    #: small JSON (``POST /links``), so a slow one is an attack, not a slow link.
    body_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Bytes one request body may have: 413 from its ``Content-Length`` before any of it
    #: is read, or as soon as a chunked body passes it. The largest valid ``POST /links``
    #: body (a URL of 8,192 characters, each escaped as a JSON surrogate pair) is ~96 KiB.
    max_body_bytes: int = Field(default=128 * 1024, ge=1024)
    #: Seconds an idle kept-alive connection is held between requests before it is closed.
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0)
    #: Connections open at once (per process); a new one beyond it gets 503 at once.
    #: Lowered at start when the open-file limit cannot hold that many (logged).
    max_connections: int = Field(default=1000, ge=1)
    #: Connections one client address may hold at once (per process); beyond it 503 at
    #: once, so one address cannot take every connection. Addresses in
    #: ``FORWARDED_ALLOW_IPS`` (trusted proxies, which carry everyone's requests) are
    #: exempt; put the per-client limit on the proxy itself.
    max_connections_per_client: int = Field(default=100, ge=1)
    #: The addresses trusted to set ``X-Forwarded-For`` / ``X-Forwarded-Proto``
    #: (uvicorn's setting, read here too): comma-separated IPs or networks, ``*`` for any.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    #: The origin signed links are made for (``https://data.example.com``): required in
    #: production for ``POST /links``; in development, unset means the address this
    #: server listens on. Never taken from a request's ``Host`` header.
    public_url: str | None = None

    #: 0: the app starts (and /readyz answers 503) while the database is down.
    pool_min_size: int = Field(default=0, ge=0)
    pool_max_size: int = Field(default=20, ge=1)
    #: Seconds a single statement (one cursor fetch) may take before asyncpg gives up:
    #: a database that stops answering cannot hang a request forever.
    command_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("command_timeout_seconds", "command_timeout"),
    )
    #: Seconds to wait for a free pooled connection before answering 503.
    pool_acquire_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias=AliasChoices("pool_acquire_timeout_seconds", "pool_acquire_timeout"),
    )

    @field_validator("db_roles", "jwt_algorithms", mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        """A list setting from the environment: a JSON array, or comma-separated."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError("not a JSON array; or give a comma-separated list") from None
        return [item.strip() for item in text.split(",") if item.strip()]

    @field_validator("public_url")
    @classmethod
    def _origin_only(cls, value: str | None) -> str | None:
        """``PUBLIC_URL`` is an http(s) origin, optionally with a path prefix: no query,
        no fragment, no credentials."""
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("PUBLIC_URL must be an http(s) URL, e.g. https://data.example.com")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("PUBLIC_URL takes no query, fragment or credentials")
        return value.rstrip("/")

    def resolved_datasets_file(self) -> Path | None:
        """``DATASETS_FILE``, else ``./datasets.toml`` if it exists, else None (the demo)."""
        if self.datasets_file is not None:
            return self.datasets_file
        default = Path("datasets.toml")
        return default if default.is_file() else None

    def resolved_jwt_secret(self) -> str | None:
        """The HMAC key: ``JWT_SECRET``; None when only public keys are configured; in
        development with no key at all, one generated once and kept under ``data_dir``.

        A short secret is a configuration error everywhere, and so is no key at all
        outside development: refusing to start beats signing with something guessable.
        """
        if self.jwt_secret:
            if len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
            self._refuse_placeholder("JWT_SECRET", self.jwt_secret)
            return self.jwt_secret
        if self.jwt_public_key or self.jwt_jwks_file or self.jwt_jwks_url:
            return None
        if self.environment != "development":
            raise ValueError(
                "JWT_SECRET (or JWT_PUBLIC_KEY, JWT_JWKS_FILE, JWT_JWKS_URL) must be set"
            )
        secret_file = self.generated_secret_file()
        assert secret_file is not None
        return _read_or_create_secret(secret_file)

    def generated_secret_file(self) -> Path | None:
        """Where the development key generated for want of any other lives, when that is
        the key tokens are checked with."""
        if self.jwt_secret or self.jwt_public_key or self.jwt_jwks_file or self.jwt_jwks_url:
            return None
        return (
            (self.data_dir / "jwt_secret").resolve() if self.environment == "development" else None
        )

    def resolved_link_secret(self) -> bytes | None:
        """The key signed links are made with: ``LINK_SECRET``, else one derived from the
        JWT secret (so links die with it); None: signed links are off."""
        if self.link_secret:
            if len(self.link_secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"LINK_SECRET must be at least {MIN_SECRET_BYTES} bytes")
            self._refuse_placeholder("LINK_SECRET", self.link_secret)
            return self.link_secret.encode()
        secret = self.resolved_jwt_secret()
        if secret is None:
            return None
        return hmac.new(secret.encode(), b"rowstream signed links", hashlib.sha256).digest()

    def _refuse_placeholder(self, name: str, value: str) -> None:
        """In production, a secret anyone could know stops the start (one line)."""
        if self.environment == "production" and (reason := placeholder_reason(value)):
            raise ValueError(f"{name} cannot be used in production: {reason}; set a random one")

    def check_production(self) -> None:
        """What production needs beyond the keys: a ``METRICS_TOKEN`` that is no
        placeholder either (``resolved_*_secret`` check the keys)."""
        if self.metrics_token:
            self._refuse_placeholder("METRICS_TOKEN", self.metrics_token)


def _read_or_create_secret(path: Path) -> str:
    """Create the development secret atomically: concurrent first starts agree on one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # fails if another process won the race: use theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def default(name: str) -> Any:
    """A setting's default, for the classes that take it from their caller but may be made
    without one (a test's ``Policy()``): the settings are the one source of defaults."""
    return Settings.model_fields[name].default
