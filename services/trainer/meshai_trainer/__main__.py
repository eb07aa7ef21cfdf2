"""`python -m meshai_trainer`: the trainer service's gRPC server (env: MESHAI_LISTEN, MESHAI_S3_*, MESHAI_WORKDIR)."""

import sys

from meshai_common.grpc_server import run_service
from meshai_trainer.service import build

if __name__ == "__main__":
    sys.exit(run_service("trainer", build))
