#!/usr/bin/env bash
# One-off job (compose service es-certs, in the Elasticsearch image): create the stack's CA and
# the node certificate once, into the es-certs volume, and copy the CA certificate alone into the
# es-ca volume that Logstash, Kibana and the setup job mount. Re-running it changes nothing.
set -euo pipefail

CERTS=/certs          # es-certs volume: CA key, node key and certificates (Elasticsearch only)
PUBLIC=/ca            # es-ca volume: ca/ca.crt only
INSTANCES=/usr/share/elasticsearch/config/mlpulse/instances.yml
certutil=/usr/share/elasticsearch/bin/elasticsearch-certutil

if [[ ! -f "$CERTS/ca/ca.crt" ]]; then
  echo "creating the certificate authority"
  "$certutil" ca --silent --pem --out "$CERTS/ca.zip"
  unzip -q -o "$CERTS/ca.zip" -d "$CERTS"
  rm -f "$CERTS/ca.zip"
fi

if [[ ! -f "$CERTS/elasticsearch/elasticsearch.crt" ]]; then
  echo "creating the node certificate"
  "$certutil" cert --silent --pem --in "$INSTANCES" \
    --ca-cert "$CERTS/ca/ca.crt" --ca-key "$CERTS/ca/ca.key" --out "$CERTS/nodes.zip"
  unzip -q -o "$CERTS/nodes.zip" -d "$CERTS"
  rm -f "$CERTS/nodes.zip"
fi

mkdir -p "$PUBLIC/ca"
cp "$CERTS/ca/ca.crt" "$PUBLIC/ca/ca.crt"

# Elasticsearch runs as uid 1000, gid 0; keys readable by it only.
chown -R 1000:0 "$CERTS"
find "$CERTS" -type d -exec chmod 750 {} +
find "$CERTS" -type f -exec chmod 640 {} +
chmod 644 "$PUBLIC/ca/ca.crt"
echo "certificates ready"
