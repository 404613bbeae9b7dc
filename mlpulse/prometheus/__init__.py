"""Prometheus and Alertmanager configuration derived from the committed files: ``native`` renders
them for runs on 127.0.0.1 (``mlpulse generate native``)."""
