"""`python -m meshai_data`: the data service's gRPC server (env: MESHAI_LISTEN, MESHAI_S3_*)."""

import sys

from meshai_common.grpc_server import run_service
from meshai_data.service import build

if __name__ == "__main__":
    sys.exit(run_service("data", build))
