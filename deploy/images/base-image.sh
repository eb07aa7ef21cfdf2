#!/usr/bin/env bash
# A Debian bookworm base image (Python 3.11) made from Debian's packages, for a machine that cannot pull from an
# image registry: debootstrap --variant=minbase, then `docker import`. Builds then use it as BASE_IMAGE:
#   deploy/images/base-image.sh                      # -> meshai-base:bookworm (skipped when it exists)
#   BASE_IMAGE=meshai-base:bookworm make images
# Needs root and debootstrap (apt-get install debootstrap). MESHAI_DEBIAN_MIRROR picks another mirror.
set -euo pipefail
tag="${1:-meshai-base:bookworm}"
mirror="${MESHAI_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$tag" >/dev/null 2>&1 && [ -z "${MESHAI_BASE_REBUILD:-}" ]; then
    echo "base image $tag exists (MESHAI_BASE_REBUILD=1 makes it anew)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
root="$(mktemp -d /var/tmp/meshai-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
# python3 + venv (the images' interpreter, as in python:3.11-slim) and ca-certificates (pip's TLS).
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" \
    >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Security updates reach apt-get in the builds; nothing that only an installer needs stays behind.
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
    "$mirror" "$mirror" "$mirror" >"$root/etc/apt/sources.list"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log \
    "$root"/var/log/apt/* "$root"/var/log/bootstrap.log
tar --numeric-owner -C "$root" -c . \
    | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        --message "debootstrap minbase bookworm + python3" - "$tag" >/dev/null
echo "base image $tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"
