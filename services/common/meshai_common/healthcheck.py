"""`python -m meshai_common.healthcheck HOST:PORT [SERVICE]`: exit 0 when the gRPC health check says SERVING.

Used by container HEALTHCHECKs and by `meshai up` to wait for services.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(addr: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    try:
        with grpc.insecure_channel(addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        return False, f"{exc.code().name}: {exc.details()}"
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    return resp.status == health_pb2.HealthCheckResponse.SERVING, name


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m meshai_common.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    ok, status = is_serving(argv[0], argv[1] if len(argv) > 1 else "")
    print(status)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
