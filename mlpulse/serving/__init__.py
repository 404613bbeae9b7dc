"""The model service: any valid bundle behind Flask and gunicorn, instrumented with mlpulse.

- ``app``: the app factory (validation policy, problem details, scoring through
  ``mlpulse.predictor``, metrics and the event log);
- ``openapi``: the OpenAPI document, from the bundle;
- ``gunicorn_conf``, ``wsgi``: gunicorn settings from the environment, one app per worker.

``mlpulse serve DIR`` runs it; the README lists every environment variable.
"""

from pathlib import Path


def gunicorn_conf_path() -> str:
    """The gunicorn configuration file of the service (``gunicorn -c``)."""
    return str(Path(__file__).with_name("gunicorn_conf.py"))
