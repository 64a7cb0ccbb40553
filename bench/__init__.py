"""Benchmark harness: the service against a bare WSGI app and a tutorial Flask app (see README.md)."""
