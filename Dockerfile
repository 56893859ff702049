# syntax=docker/dockerfile:1
# Build stage: install the pinned dependencies into a virtual environment.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements-runtime.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --require-hashes -r /tmp/requirements.lock
# The NDJSON and CSV renderer (app/render.c), compiled here: the runtime image has no compiler.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY app/render.c /tmp/render.c
RUN gcc -O2 -shared -fPIC -o /opt/_render.so /tmp/render.c

# Runtime stage: the venv and the source, run as an unprivileged user.
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONPATH=/srv \
    ENVIRONMENT=production HOST=0.0.0.0 PORT=8000
RUN useradd --system --uid 10001 --home /srv rowstream
WORKDIR /srv
COPY --from=build /opt/venv /opt/venv
COPY app/ app/
COPY --from=build /opt/_render.so app/_render.so
COPY client/rowstream/ rowstream/
COPY migrations/ migrations/
COPY alembic.ini ./
USER rowstream
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2); sys.exit(0)"
# DATABASE_URL and JWT_SECRET must be provided, and a datasets.toml (mounted at
# /srv/datasets.toml, or DATASETS_FILE): `serve` reads the database, never changes it.
CMD ["python", "-m", "app.cli", "serve", "--graceful-timeout", "20"]
