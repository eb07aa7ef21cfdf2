"""`python -m meshai_gateway`: the promoted model over Ollama's HTTP API and the gateway's gRPC service.

Env: MESHAI_S3_*, MESHAI_LISTEN (gRPC), MESHAI_HTTP_LISTEN (HTTP, 11434), MESHAI_MODEL_NAME (mesh-ai),
MESHAI_MODEL_POLL_S (how often the promotion pointer is checked, default 15), MESHAI_WORKDIR (model cache),
MESHAI_API_KEY or MESHAI_API_KEY_FILE (require a key on the HTTP routes and gRPC methods but health), and the
settings in settings.py.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from meshai_common.config import env, host_port
from meshai_common.errors import ConfigError, MeshAIError
from meshai_common.logs import setup_logging
from meshai_common.store import ArtifactStore

log = logging.getLogger("meshai_gateway")


def main() -> int:
    setup_logging("gateway")
    try:
        store = ArtifactStore.from_env()
        listen = env("MESHAI_LISTEN")
        host, port = host_port(env("MESHAI_HTTP_LISTEN"), "MESHAI_HTTP_LISTEN")
        workdir = Path(env("MESHAI_WORKDIR", "/tmp/meshai/gateway"))
        poll_s = float(env("MESHAI_MODEL_POLL_S", "15"))
        from meshai_gateway.settings import GatewaySettings

        settings = GatewaySettings.from_env()
    except (ConfigError, ValueError) as exc:
        print(f"meshai-gateway: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from meshai.v1 import gateway_pb2, gateway_pb2_grpc
    from meshai_common.grpc_server import GrpcService
    from meshai_gateway.app import create_app
    from meshai_gateway.auth import GrpcApiKeyInterceptor, warn_if_open
    from meshai_gateway.bucket_source import BucketSource
    from meshai_gateway.grpc_service import GatewayServicer

    try:
        store.ensure_bucket()
    except MeshAIError as exc:
        log.warning("bucket not ready yet", extra={"reason": str(exc)})
    source = BucketSource(store, settings.model_name, workdir / "models", poll_interval_s=poll_s)
    app = create_app(settings, source)
    manager, service = app.state.manager, app.state.service
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def register(server):
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(manager, service, loop), server)
        return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]

    # gRPC health: SERVING only with the bucket reachable and a model loaded.
    grpc_service = GrpcService("gateway", listen, store, register,
                               ready=lambda: None if manager.ready else manager.reason,
                               interceptors=[GrpcApiKeyInterceptor(settings.api_key)] if settings.api_key else ()
                               ).start()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                           timeout_graceful_shutdown=30))
    log.info("gateway HTTP", extra={"listen": f"{host}:{port}", "source": source.describe(),
                                    "api_key": bool(settings.api_key)})
    warn_if_open(host, settings.api_key)
    try:
        loop.run_until_complete(server.serve())  # returns after SIGTERM/SIGINT and a drain
    finally:
        grpc_service.stop(grace=10)
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
