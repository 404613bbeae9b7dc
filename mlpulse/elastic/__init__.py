"""The Elasticsearch / Logstash / Kibana side of mlpulse: names every piece shares, generators and
the setup job.

- ``mlpulse.elastic.mapping``: the index template (from a bundle's feature schema), the ILM policy,
  the roles, and a validator that checks events against the template's mapping;
- ``mlpulse.elastic.kibana``: the Kibana saved objects (data view, searches, visualizations,
  dashboard) as NDJSON for the saved objects import API;
- ``mlpulse.elastic.setup``: the idempotent setup job (users, roles, ILM, template, data stream,
  Kibana objects) as a pure request plan and an executor;
- ``mlpulse generate elastic`` writes the committed artefacts; ``mlpulse elastic-setup`` applies them
  (``--plan`` prints the requests).

``docs/elk.md`` describes the whole flow. The names below are the contract between the Logstash
pipeline, the committed JSON files, the setup job and the readers (Kibana, Grafana, the exporter):
change one only together with every file that repeats it (``tests/contract/test_elastic_contract.py`` checks
that they agree).
"""

from __future__ import annotations

# The data stream follows the data stream naming scheme <type>-<dataset>-<namespace>, so the
# stack's conventions (data_stream.* fields, Logs views) apply to it; docs/elk.md says why.
DATA_STREAM_TYPE = "logs"
DATA_STREAM_DATASET = "mlpulse.predictions"
DATA_STREAM_NAMESPACE = "default"
DATA_STREAM = f"{DATA_STREAM_TYPE}-{DATA_STREAM_DATASET}-{DATA_STREAM_NAMESPACE}"
# What readers (the data view, Grafana, the exporter's ES source) query: every namespace.
DATA_STREAM_PATTERN = f"{DATA_STREAM_TYPE}-{DATA_STREAM_DATASET}-*"

INDEX_TEMPLATE = "mlpulse-predictions"
# The built-in logs-*-* template has priority 100; ours must win for our data stream.
INDEX_TEMPLATE_PRIORITY = 200
ILM_POLICY = "mlpulse-predictions"

# Roles (Elasticsearch) and the Kibana feature role.
WRITER_ROLE = "mlpulse_writer"
READER_ROLE = "mlpulse_reader"
KIBANA_VIEWER_ROLE = "mlpulse_kibana_viewer"

# Users the setup job creates, and the environment variable holding each one's password.
WRITER_USER = "mlpulse_logstash_writer"
READER_USER = "mlpulse_reader"
VIEWER_USER = "mlpulse_viewer"
KIBANA_SYSTEM_USER = "kibana_system"  # built-in: the setup job only sets its password

# Where the model service's event files appear in the Logstash and exporter containers.
EVENTS_PATH = "/data/events/*.jsonl"

# Committed artefacts, relative to the repository root (mlpulse generate elastic).
INDEX_TEMPLATE_FILE = "elasticsearch/index-template.json"
ILM_POLICY_FILE = "elasticsearch/ilm-policy.json"
ES_ROLES_DIR = "elasticsearch/roles"
KIBANA_ROLES_DIR = "kibana/roles"
SAVED_OBJECTS_FILE = "kibana/saved-objects.ndjson"
