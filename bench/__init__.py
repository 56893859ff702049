"""``rowstream bench``: the benchmarks, outside the service package.

They start real servers (``rowstream serve``), real PostgreSQL and PgBouncer, and read the
service's own modules (the SQL builder for the COPY reference, the seed, the settings): the
benchmarks depend on ``app``, never the other way round. The command reaches the CLI
through the ``rowstream.commands`` entry point (``pyproject.toml``), so ``app.cli`` imports
nothing of this package.

- ``main``: the command, its parser, and the original standard-versus-streaming scenarios;
- ``dataset_path``: the generic dataset path against plain ``COPY`` (``--datasets``);
- ``clients``: into pandas and polars, against reading PostgreSQL directly (``--clients``);
- ``hostile``: what hostile and slow clients cost (``--hostile``);
- ``report``: medians, tables, charts and the machine's description;
- ``pooler``: a PgBouncer for the bench and the tests.
"""
