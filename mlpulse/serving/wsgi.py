"""WSGI entry point for gunicorn: each worker builds its own app (and loads the bundle)."""

from mlpulse.serving.app import create_app

app = create_app()
