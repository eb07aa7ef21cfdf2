"""Generate the Python gRPC code for protos/meshai/v1/*.proto, in place. The one code-generation step.

Run from anywhere: `python protos/generate.py`. Output (*_pb2.py, *_pb2_grpc.py, *.pyi) is git-ignored.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc


def main() -> int:
    root = Path(__file__).resolve().parent
    protos = sorted((root / "meshai" / "v1").glob("*.proto"))
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{root}",
        f"-I{include}",
        f"--python_out={root}",
        f"--pyi_out={root}",
        f"--grpc_python_out={root}",
        *[str(p.relative_to(root)) for p in protos],
    ]
    rc = protoc.main(args)
    if rc != 0:
        print(f"protoc failed with exit code {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
