"""Benchmark harness: the service against the tutorial Flask app and a bare WSGI app (see README.md)."""
