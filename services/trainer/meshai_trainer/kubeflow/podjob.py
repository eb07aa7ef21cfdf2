"""What each rank of a TrainJob runs: `torchrun -m meshai_trainer.cli train job --request JSON`.

The same `run_train` as the service's in-process path: every rank fetches the splits (and a bucket base,
and the newest checkpoint) into its own scratch folder and joins the training through torchrun's environment;
rank 0 publishes checkpoints as they are written, then the outputs and the manifest, and reports progress and
the result through the status object (status.py). SIGTERM (the TrainJob deleted, a node drained, a pod
preempted) stops every rank after the same step with a checkpoint in the bucket, so the next attempt resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from meshai.v1 import trainer_pb2
from meshai_common.errors import Cancelled, InvalidInput, MeshAIError
from meshai_common.jobs import check_run_id
from meshai_common.progress import Progress
from meshai_common.store import ArtifactStore
from meshai_trainer.kubeflow.status import StatusWriter

log = logging.getLogger(__name__)

STAGE = "train"
EXIT_STOPPED = 143  # stopped by SIGTERM after a checkpoint: the Job fails and the JobSet may restart it


class PodContext:
    """A RunContext for one rank in a pod: the bucket from MESHAI_S3_*, progress to the status object."""

    def __init__(self, run_id: str, store: ArtifactStore, workdir: Path, writer: StatusWriter | None) -> None:
        self.run_id, self.store, self.workdir, self.writer = run_id, store, Path(workdir), writer
        self.stage = STAGE
        self.job_id = f"{run_id}/{STAGE}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()

    @property
    def prefix(self) -> str:
        return f"runs/{self.run_id}/{self.stage}"

    def report(self, progress: Progress) -> None:
        if self.writer is not None:
            self.writer.report(progress)

    def cancel(self) -> None:
        self._stop.set()

    def check_cancelled(self) -> None:
        if self._stop.is_set():
            raise Cancelled(f"job {self.job_id} stopped by SIGTERM")


def parse_request(text: str) -> trainer_pb2.TrainRequest:
    try:
        req = json_format.Parse(text, trainer_pb2.TrainRequest())
    except json_format.ParseError as exc:
        raise InvalidInput(f"--request: not a TrainRequest in JSON: {exc}") from None
    check_run_id(req.run_id)
    if not req.train.key or not req.val.key:
        raise InvalidInput("--request: train and val need bucket keys")
    return req


def run_pod_job(request_json: str, workdir: Path | None = None, store: ArtifactStore | None = None) -> int:
    """Train one rank of the request; rank 0 publishes. Returns the process exit code."""
    from meshai_trainer.config import require_cuda
    from meshai_trainer.service import request_config, run_train

    req = parse_request(request_json)
    rank = int(os.environ.get("RANK", "0"))
    store = store or ArtifactStore.from_env()
    writer = StatusWriter(store, req.run_id, attempt=uuid.uuid4().hex) if rank == 0 else None
    root = Path(workdir or os.environ.get("MESHAI_WORKDIR") or "/tmp/meshai/trainer")
    ctx = PodContext(req.run_id, store, root / req.run_id / f"rank-{rank}", writer)
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: ctx.cancel())
    try:
        if writer is not None:
            writer.report(Progress(message=f"started on {os.environ.get('HOSTNAME', 'this pod')}, "
                                           f"{os.environ.get('WORLD_SIZE', '1')} ranks"))
        require_cuda(request_config(req), req.config_name or "config_yaml")  # a pod without its GPU says so
        done = run_train(req, ctx, in_process=True)
    except Cancelled as exc:
        if writer is not None:
            writer.finish("stopped", error=str(exc))
        print(f"meshai: {exc}; the next attempt resumes from the bucket's checkpoint", file=sys.stderr)
        return EXIT_STOPPED
    except MeshAIError as exc:
        if writer is not None:
            writer.finish("failed", error=str(exc))
        raise
    except Exception as exc:
        if writer is not None:
            writer.finish("failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if done is not None and writer is not None:
        result, manifest_key = done
        writer.finish("succeeded", result=_result_dict(result), manifest_key=manifest_key)
    return 0


def _result_dict(result: Any) -> dict[str, Any]:
    return json_format.MessageToDict(result, preserving_proto_field_name=True)
