"""Stand-ins for the servers the tests cannot run here: they are NOT Elasticsearch or Kibana.

Elasticsearch and Kibana need a JVM / Node.js service, gigabytes of memory and (for the stack)
Docker; none of that runs where the suite runs. The contract tests instead talk over real HTTP on
127.0.0.1 to these small Python servers, which answer with the behaviour recorded from the
products' own references (``tests/fixtures/elastic/``, ``tests/fixtures/elastic_source/``):

- ``http``: one generic HTTP stand-in server (records requests, answers via a callback, optional
  TLS, optional ``X-Elastic-Product`` header), the base of every other stand-in;
- ``elasticsearch``: a stand-in for Elasticsearch's ``_search`` (the exporter's Elasticsearch
  source) and one for the setup job's Elasticsearch APIs;
- ``kibana``: a stand-in for the Kibana APIs the setup job calls.

What they prove is bounded by what they model: the real servers are exercised only by the Docker
stack test (``tests/stack/``).
"""
