#!/usr/bin/env bash
# Makes sure a Docker engine answers; where none does, starts Debian's dockerd (apt-get install docker.io) as
# root, for CI and test machines:
#   deploy/images/engine.sh               # log in $MESHAI_DOCKERD_LOG (default /var/log/meshai-dockerd.log)
# --bridge=none --iptables=false: no bridge network, no firewall rules; containers use the host's network
# (deploy/compose/test-stack.yml binds every service to 127.0.0.1). Niced (MESHAI_DOCKERD_NICE, default 15):
# image builds and containers run inside the engine, so they leave other work its share of the CPUs.
# BuildKit's cache is collected down to MESHAI_BUILD_CACHE_KEEP (default 10GB): each build of a new commit adds
# layers, and without a bound a test machine that builds on every run fills its disk.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    echo "docker engine: running ($(docker info --format '{{.ServerVersion}}'))"
    exit 0
fi
command -v dockerd >/dev/null || { echo "engine.sh: no dockerd (apt-get install docker.io)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "engine.sh: starting dockerd needs root" >&2; exit 1; }
log="${MESHAI_DOCKERD_LOG:-/var/log/meshai-dockerd.log}"
config="$(dirname "$log")/meshai-dockerd.json"
printf '{"builder": {"gc": {"enabled": true, "defaultKeepStorage": "%s"}}}\n' \
    "${MESHAI_BUILD_CACHE_KEEP:-10GB}" >"$config"
nohup nice -n "${MESHAI_DOCKERD_NICE:-15}" dockerd --config-file "$config" --bridge=none --iptables=false \
    --ip6tables=false >>"$log" 2>&1 </dev/null &
for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
        echo "docker engine: started dockerd $(docker info --format '{{.ServerVersion}}') (log $log)"
        exit 0
    fi
    sleep 1
done
echo "engine.sh: dockerd did not answer within 60 s; the end of $log:" >&2
tail -20 "$log" >&2
exit 1
