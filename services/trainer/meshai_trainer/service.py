"""The trainer's gRPC face: fetch the splits, run the recipe, publish adapter + merged model + cached base.

Checkpoints go to `runs/<run_id>/train/checkpoints/` as they are written (and when the job is cancelled or the
service stops); they survive a failed or cancelled job, and a resubmitted job resumes from the newest one.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import yaml

from meshai.v1 import jobs_pb2, trainer_pb2, trainer_pb2_grpc
from meshai_common.errors import ConfigError, InvalidInput
from meshai_common.jobs import JobRuntime, JobServicerMixin, RunContext, job_service
from meshai_common.manifest import write_manifest
from meshai_common.progress import Progress
from meshai_common.refs import check_refs, fetch
from meshai_common.store import ArtifactStore
from meshai_common.tracking import check_tracking
from meshai_trainer import checkpoint
from meshai_trainer.config import TrainConfig, load_config, require_cuda

STAGE = "train"
DEFAULT_CONFIG = "cpu-smollm2"  # a request naming no recipe gets the embedded default's
CACHE_COMPLETE = "_complete.json"  # written last: the cached base folder is whole


def base_cache_prefix(key: str) -> str:
    return f"cache/base/{key}"


def checkpoint_prefix(ctx: RunContext) -> str:
    return f"{ctx.prefix}/checkpoints"


def request_config(req: trainer_pb2.TrainRequest) -> TrainConfig:
    """The request's config: its YAML text, else the shipped recipe it names, with its overrides."""
    if req.config_yaml:
        return load_config(text=req.config_yaml, overrides=dict(req.overrides))
    return load_config(req.config_name or DEFAULT_CONFIG, overrides=dict(req.overrides))


def run_train(req: trainer_pb2.TrainRequest, ctx: RunContext, *,
              in_process: bool = False) -> tuple[jobs_pb2.TrainResult, str] | None:
    """Train `req` and publish the outputs and the manifest; returns the result and the manifest key.

    The service runs it in its job thread (one process, or N local ranks: launch.py). With `in_process` it
    runs in every rank that torchrun started (a Kubeflow TrainJob's pods, kubeflow/podjob.py): each rank
    trains here and meets the others through torchrun's environment; only rank 0 publishes, the others
    return None.
    """
    from meshai_trainer.launch import ranks_for_job
    from meshai_trainer.model import base_key, fetch_s3_base
    from meshai_trainer.recipe import train

    t0 = time.monotonic()
    cfg = request_config(req)
    train_path, val_path = fetch(ctx, [req.train, req.val], "data")
    key = base_key(cfg.base_model)
    base_prefix = base_cache_prefix(key)
    cached = ctx.store.exists(f"{base_prefix}/{CACHE_COMPLETE}")
    base_dir = None if cached else ctx.workdir / "base"
    out = ctx.workdir / "out"
    # The bucket is the record of checkpoints: a killed process may have left newer, unpublished ones here.
    ckpt_dir = out / "checkpoints"
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    ckpt_prefix = checkpoint_prefix(ctx)
    resume = checkpoint.fetch_latest(ctx.store, ckpt_prefix, ckpt_dir)
    if resume is not None:
        ctx.report(Progress(message=f"resuming from {resume.name}"))
    ranks = 1 if in_process else ranks_for_job()
    if ranks > 1:  # one process per GPU; they fetch an s3:// base and publish checkpoints themselves
        metrics = _train_ranks(req, ranks, ctx, train_path, val_path, out, base_dir, ckpt_prefix)
    else:
        run_cfg = cfg
        if cfg.base_model.startswith("s3://"):  # an HF folder in a bucket: downloaded (sha256-checked) per job
            ctx.report(Progress(message=f"fetching {cfg.base_model}"))
            local = fetch_s3_base(cfg.base_model, ctx.store, ctx.workdir / "base-model")
            run_cfg = cfg.model_copy(update={"base_model": str(local)})
        metrics = train(run_cfg, train_path, val_path, out, ctx, base_out=base_dir, checkpoint_dir=ckpt_dir,
                        resume_from=resume,
                        on_checkpoint=lambda path: checkpoint.sync(ctx.store, path, ckpt_prefix,
                                                                   cfg.save_total_limit))
    ctx.check_cancelled()
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun rank other than 0: rank 0 publishes
        return None
    t_upload = time.monotonic()
    merged = ctx.store.put_dir(out / "merged", f"{ctx.prefix}/merged")
    adapter = ctx.store.put_dir(out / "adapter", f"{ctx.prefix}/adapter")
    train_log = ctx.store.put_file(out / "train_log.jsonl", f"{ctx.prefix}/train_log.jsonl")
    curves = ctx.store.put_dir(out / "tensorboard", f"{ctx.prefix}/tensorboard")  # `tensorboard --logdir`
    if base_dir is not None:
        base = ctx.store.put_dir(base_dir, base_prefix)
        ctx.store.put_json({"files": [o.as_dict() for o in base], "base_model": cfg.base_model},
                           f"{base_prefix}/{CACHE_COMPLETE}")
    metrics["upload_seconds"] = time.monotonic() - t_upload
    manifest = write_manifest(
        ctx.store, ctx.run_id, STAGE,
        inputs=[ctx.store.stat(req.train.key), ctx.store.stat(req.val.key)],
        outputs=[*merged, *adapter, train_log, *curves],
        config=cfg.model_dump(mode="json"),
        timings={"total": time.monotonic() - t0, "train": metrics["train_seconds"]},
        metrics=metrics,
        parents={"data": f"runs/{ctx.run_id}/data/manifest.json"},
    )
    result = jobs_pb2.TrainResult(merged_prefix=f"{ctx.prefix}/merged", adapter_prefix=f"{ctx.prefix}/adapter",
                                  base_prefix=base_prefix, base_key=key)
    for k, v in metrics.items():
        if isinstance(v, int | float):
            result.metrics[k] = float(v)
    return result, manifest.key


def _train_ranks(req: trainer_pb2.TrainRequest, ranks: int, ctx: RunContext, train_path: Path, val_path: Path,
                 out: Path, base_dir: Path | None, ckpt_prefix: str) -> dict[str, Any]:
    """The same training as `train(...)`, as `ranks` data-parallel processes (see launch.py)."""
    config = req.config_name or DEFAULT_CONFIG
    if req.config_yaml:
        config = str(ctx.workdir / "config.yaml")
        (ctx.workdir / "config.yaml").write_text(req.config_yaml)
    args = [config, "--train", str(train_path), "--val", str(val_path), "--output-dir", str(out),
            "--resume", "auto", "--checkpoint-prefix", ckpt_prefix, "--run-id", ctx.run_id]
    args += [x for k, v in req.overrides.items() for x in ("--set", f"{k}={v}")]
    if base_dir is not None:
        args += ["--base-out", str(base_dir)]
    ctx.report(Progress(message=f"training on {ranks} processes"))
    from meshai_trainer.launch import run_ranks

    return run_ranks(ranks, args, ctx.workdir / "ranks", ctx)


BACKENDS = ("local", "kubeflow")


def train_backend() -> str:
    """MESHAI_TRAIN_BACKEND: `local` (the default: training runs in this service) or `kubeflow` (each job
    becomes a Kubeflow Trainer TrainJob and this service only follows it: meshai_trainer/kubeflow)."""
    raw = os.environ.get("MESHAI_TRAIN_BACKEND", "").strip().lower() or "local"
    if raw not in BACKENDS:
        raise ConfigError(f"environment variable MESHAI_TRAIN_BACKEND={raw!r} must be one of "
                          f"{', '.join(BACKENDS)}")
    return raw


class TrainerServicer(JobServicerMixin, trainer_pb2_grpc.TrainerServiceServicer):

    def __init__(self, runtime: JobRuntime, controller: Any | None = None) -> None:
        super().__init__(runtime)
        self.controller = controller  # a TrainJobController: jobs run as TrainJobs, not here

    def Submit(self, request: trainer_pb2.TrainRequest, context: grpc.ServicerContext) -> jobs_pb2.JobRef:  # noqa: N802
        if not request.train.key or not request.val.key:
            raise InvalidInput("TrainRequest needs both train and val dataset objects")
        try:
            cfg = request_config(request)  # a bad config fails the call, not the job minutes later
        except yaml.YAMLError as exc:
            raise InvalidInput(f"config_yaml: {exc}") from None
        if self.controller is None:  # a TrainJob's pods check their own GPUs (kubeflow/podjob.py)
            require_cuda(cfg, request.config_name or ("config_yaml" if request.config_yaml else DEFAULT_CONFIG))
        check_refs(self.runtime.store, [request.train, request.val], "TrainRequest.train/val")
        check_tracking()  # MESHAI_MLFLOW_TRACKING_URI set without mlflow: refused now, not after loading
        if self.controller is None:
            work = partial(run_train, request)
        else:
            work = partial(_run_trainjob, self.controller, request)
        return self.runtime.submit(request.run_id, work)


def _run_trainjob(controller: Any, req: trainer_pb2.TrainRequest,
                  ctx: RunContext) -> tuple[jobs_pb2.TrainResult, str]:
    named = trainer_pb2.TrainRequest()
    named.CopyFrom(req)
    named.run_id = ctx.run_id  # a request without one got a fresh id at submit
    return controller.run(named, ctx)


_build_local = job_service(STAGE, TrainerServicer, trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
                           trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
                           workers=1)  # one training at a time per trainer


def build(store: ArtifactStore, workdir: str) -> tuple[Callable[[Any], list[str]], Callable[[], None]]:
    """The service for grpc_server.run_service, with the backend MESHAI_TRAIN_BACKEND names."""
    if train_backend() == "local":
        return _build_local(store, workdir)
    from meshai_trainer.kubeflow.controller import TrainJobController
    from meshai_trainer.kubeflow.trainjob import KubeflowSettings

    controller = TrainJobController(KubeflowSettings.from_env())
    # TrainJobs are independent of this process: several can be followed at once (the cluster queues them).
    runtime = JobRuntime(STAGE, store, Path(workdir), workers=4)

    def register(server: Any) -> list[str]:
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(runtime, controller), server)
        return [trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name]

    def stop() -> None:
        controller.detached = True  # a restarted controller follows the TrainJobs left running
        runtime.shutdown()

    return register, stop
