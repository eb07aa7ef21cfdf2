#!/usr/bin/env bash
# Creates Mesh-AI's Secrets once, with random values. A Secret that already exists is left as it is, so
# running this again, like `kubectl apply -k`, never overwrites keys that are in use or managed elsewhere.
#   deploy/k8s/create-secrets.sh              create what is missing in namespace $MESHAI_NAMESPACE (meshai)
#   deploy/k8s/create-secrets.sh --print      print the Secrets it would create (nothing is sent anywhere)
# meshai-s3-root is MinIO's root account (MinIO and the bucket-init Job only); meshai-s3-<service> holds that
# service's own S3 key, which bucket-init registers in MinIO. With an external S3, create the meshai-s3-<service>
# Secrets from your provider's keys instead (same names and keys) and skip meshai-s3-root.
# Optional, by hand: meshai-gateway-key (key api-key), meshai-hf-token (key token); see deploy/README.md.
set -euo pipefail

namespace="${MESHAI_NAMESPACE:-meshai}"
print=false
case "${1:-}" in
  --print) print=true ;;
  "") ;;
  *) echo "usage: $0 [--print]" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"

# 24 random bytes as 48 hex characters (od reads exactly that much: no SIGPIPE under pipefail).
random_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

secret() {  # name, then key=value pairs
  local name="$1"; shift
  local literals=()
  for pair in "$@"; do literals+=("--from-literal=$pair"); done
  if $print; then
    kubectl create secret generic "$name" --namespace "$namespace" "${literals[@]}" --dry-run=client -o yaml
    echo "---"
  elif kubectl --namespace "$namespace" get secret "$name" >/dev/null 2>&1; then
    echo "secret/$name exists: kept"
  else
    kubectl --namespace "$namespace" create secret generic "$name" "${literals[@]}"
  fi
}

# The namespace first (with its Pod Security labels), so the Secrets have somewhere to go.
$print || kubectl apply -f "$here/base/namespace.yaml"
secret meshai-s3-root "MINIO_ROOT_USER=meshai-root" "MINIO_ROOT_PASSWORD=$(random_secret)"
for service in data trainer quantizer evaluator gateway pipeline; do
  secret "meshai-s3-$service" "MESHAI_S3_ACCESS_KEY=meshai-$service" "MESHAI_S3_SECRET_KEY=$(random_secret)"
done
