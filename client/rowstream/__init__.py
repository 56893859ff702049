"""The rowstream client library (``rowstream.client``); the server is the ``app`` package."""
