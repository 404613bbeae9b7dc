"""Grafana: the dashboards generated from the project's sources of truth (``dashboards``);
``mlpulse generate grafana`` writes them."""
