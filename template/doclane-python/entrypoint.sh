#!/bin/sh
# OpenFaaS mounts each secret as a file under /var/openfaas/secrets/; doclane
# reads its settings from the environment: doclane-database-url becomes
# DOCLANE_DATABASE_URL, aws-access-key-id becomes AWS_ACCESS_KEY_ID.
set -eu
for f in /var/openfaas/secrets/*; do
  [ -f "$f" ] || continue
  name=$(basename "$f" | tr 'a-z-' 'A-Z_')
  export "$name=$(cat "$f")"
done
exec python -m doclane.functions.main "$DOCLANE_FUNCTION" --host 127.0.0.1 --port 5000
