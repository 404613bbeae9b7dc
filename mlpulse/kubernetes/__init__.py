"""The Kubernetes deployment's generated manifests (``mlpulse generate kubernetes``).

``deploy/kubernetes/`` is a Kustomize base and its overlays, written by hand, except the files
under ``deploy/kubernetes/base/generated/``, which ``manifests.render_files`` writes from the
files the other tests prove: one PrometheusRule per ``prometheus/rules/*.yml`` (the groups
unchanged), one ConfigMap per ``grafana/dashboards/*.json`` for Grafana's dashboard sidecar, and
the Logstash pipeline of ``logstash/`` as a ConfigMap. See docs/kubernetes.md.
"""
