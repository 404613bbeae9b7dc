"""gunicorn settings for the model service (``mlpulse serve`` passes this file to gunicorn).

Every setting reads an environment variable with a documented default (README, "Configuration").
"""

import os

# prometheus_client picks its multiprocess value class when it is first imported, so the
# directory must be in the environment before anything below imports it.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.abspath("var/prometheus-multiproc"))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# OpenMP reads its thread count when its runtime loads (with the model): one thread per worker
# unless MODEL_OMP_THREADS says otherwise; create_app also limits the runtime once it is loaded.
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("MODEL_OMP_THREADS", "1"))

from mlpulse.gunicorn import child_exit, on_starting, post_worker_init  # noqa: E402,F401  (gunicorn reads these names)

wsgi_app = "mlpulse.serving.wsgi:app"
bind = os.environ.get("MODEL_SERVICE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("MODEL_SERVICE_WORKERS", "2"))
threads = int(os.environ.get("MODEL_SERVICE_THREADS", "1"))
timeout = int(os.environ.get("MODEL_SERVICE_TIMEOUT", "30"))
# Recycling workers bounds slow memory growth; the metrics survive it (see mlpulse.gunicorn).
max_requests = int(os.environ.get("MODEL_SERVICE_MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("MODEL_SERVICE_MAX_REQUESTS_JITTER", "0"))
accesslog = os.environ.get("MODEL_SERVICE_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("MODEL_SERVICE_LOG_LEVEL", "info")
