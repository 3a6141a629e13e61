"""The A1111-compatible HTTP API: :func:`retouch.server.app.create_app` over a backend."""
