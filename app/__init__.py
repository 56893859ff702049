"""rowstream: serve large PostgreSQL result sets over HTTP, fast, with constant memory."""

__version__ = "0.1.0"
