"""`python -m meshai_evaluator`: the evaluator service's gRPC server (env: MESHAI_LISTEN, MESHAI_S3_*, MESHAI_WORKDIR)."""

import sys

from meshai_common.grpc_server import run_service
from meshai_evaluator.service import build

if __name__ == "__main__":
    sys.exit(run_service("evaluator", build))
