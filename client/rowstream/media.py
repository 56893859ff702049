"""The media types of rowstream's formats, one list for the server (``app/formats.py``
declares each format around them) and the client."""

NDJSON = "application/x-ndjson"
JSON = "application/json"
CSV = "text/csv"
TEXT = "text/plain"
ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
