"""WSGI entry point for gunicorn: each worker builds its own app (and loads the bundle)."""

from model_service.app import create_app

app = create_app()
