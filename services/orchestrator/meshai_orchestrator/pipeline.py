"""`meshai pipeline run`: data -> train -> quantize -> eval over gRPC, then promote if the candidate wins.

Each stage is a job: submitted, watched (progress bar from the server stream), then read back with Get.
Re-running with the same --run-id skips stages that already succeeded, so a crashed orchestrator resumes.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from meshai.v1 import (
    data_pb2,
    data_pb2_grpc,
    evaluator_pb2,
    evaluator_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    jobs_pb2,
    quantizer_pb2,
    quantizer_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from meshai_common.config import env, secret_from_env
from meshai_common.errors import InvalidInput, MeshAIError, NotFound
from meshai_common.jobs import new_run_id
from meshai_common.progress import progress_postfix
from meshai_common.registry import promote
from meshai_common.store import ArtifactStore, StoredObject

State = jobs_pb2.JobState
# Sample archives in the bot's real formats, shipped inside meshai_data (found without importing it).
SAMPLES = Path(importlib.util.find_spec("meshai_data").origin).parent / "samples"


class PipelineError(MeshAIError):
    pass


@dataclass
class PipelineOptions:
    archives: list[Path] = field(default_factory=list)
    mailboxes: Path | None = None
    run_id: str = ""
    min_pairs: int = 0
    seed: int = 42
    config: str = "cpu-smollm2"
    overrides: dict[str, str] = field(default_factory=dict)
    qtype: str = "Q4_K_M"
    model_name: str = "mesh-ai"
    threshold: float = 0.0
    suite: str = "field"
    promote: bool = True
    # Full evaluation: 3 sampled passes, the unquantized model too (quantization loss), the whole test split.
    # Otherwise (the demo): greedy + 1 sampled pass and an even sample of 40 test-split examples.
    full_eval: bool = False
    margin: float | None = None
    max_hallucination_rate: float | None = None
    max_area_drop: float | None = None
    # Where the evaluation's HTML report is copied for the operator (None: left in the bucket only).
    reports_dir: Path | None = None


@dataclass
class Addresses:
    data: str
    trainer: str
    quantizer: str
    evaluator: str
    gateway: str = ""
    # The gateway's API key, when it has one: its gRPC methods need it as much as its HTTP routes.
    gateway_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> Addresses:
        return cls(
            data=env("MESHAI_DATA_ADDR"),
            trainer=env("MESHAI_TRAINER_ADDR"),
            quantizer=env("MESHAI_QUANTIZER_ADDR"),
            evaluator=env("MESHAI_EVALUATOR_ADDR"),
            gateway=os.environ.get("MESHAI_GATEWAY_ADDR", ""),
            gateway_key=secret_from_env("MESHAI_GATEWAY_API_KEY"),
        )


def _ref(obj: StoredObject) -> jobs_pb2.ObjectRef:
    return jobs_pb2.ObjectRef(key=obj.key, sha256=obj.sha256, size=obj.size)


def rpc_error_text(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and details and "failed to connect" in details.lower():
        return f"service unreachable ({details.splitlines()[0]})"
    return f"{code.name if code else 'ERROR'}: {details}"


class Pipeline:
    def __init__(self, addrs: Addresses, store: ArtifactStore, out: Callable[[str], None] = print,
                 progress: bool = True) -> None:
        self.addrs = addrs
        self.store = store
        self.out = out
        self.progress = progress and sys.stderr.isatty() or bool(os.environ.get("MESHAI_PROGRESS"))
        self._channels: list[grpc.Channel] = []

    def _channel(self, addr: str) -> grpc.Channel:
        ch = grpc.insecure_channel(addr)
        self._channels.append(ch)
        return ch

    def close(self) -> None:
        for ch in self._channels:
            ch.close()

    # -- one stage ------------------------------------------------------------------------------------

    def _run_stage(self, name: str, stub: Any, request: Any) -> jobs_pb2.Job:
        try:
            ref = stub.Submit(request, timeout=60)
            self._watch(name, stub, ref.job_id)
            job = stub.Get(jobs_pb2.GetJobRequest(job_id=ref.job_id), timeout=30)
        except grpc.RpcError as exc:
            raise PipelineError(f"{name}: {rpc_error_text(exc)}") from None
        if job.state != State.JOB_STATE_SUCCEEDED:
            state = State.Name(job.state).removeprefix("JOB_STATE_").lower()
            raise PipelineError(f"{name} {state}: {job.error or job.last_event.message}")
        return job

    def _watch(self, name: str, stub: Any, job_id: str) -> None:
        bar = tqdm(total=0, desc=f"{name:<9}", unit="step", disable=not self.progress, leave=True,
                   dynamic_ncols=True, file=sys.stderr)
        started = time.monotonic()
        last_msg = ""
        try:
            for attempt in range(5):
                try:
                    for ev in stub.Watch(jobs_pb2.WatchRequest(job_id=job_id)):
                        if ev.total and bar.total != ev.total:
                            bar.total = ev.total
                        if ev.step >= bar.n:
                            bar.n = ev.step
                        post = progress_postfix(ev.message, ev.loss if ev.HasField("loss") else None,
                                                ev.tokens_per_s if ev.HasField("tokens_per_s") else None,
                                                dict(ev.metrics))
                        bar.set_postfix(post, refresh=False)
                        bar.refresh()
                        if not self.progress and ev.message and ev.message != last_msg:
                            self.out(f"  {name}: {ev.message}")
                            last_msg = ev.message
                        if ev.state in (State.JOB_STATE_SUCCEEDED, State.JOB_STATE_FAILED,
                                        State.JOB_STATE_CANCELLED):
                            return
                    return
                except grpc.RpcError as exc:
                    # A dropped stream (service restart, network blip) is resumed; the job state is in the bucket.
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 4:
                        raise
                    time.sleep(2 * (attempt + 1))
        finally:
            bar.close()
            self.out(f"  {name} finished in {time.monotonic() - started:.1f}s")

    # -- the whole run --------------------------------------------------------------------------------

    def run(self, opts: PipelineOptions) -> dict[str, Any]:
        run_id = opts.run_id or new_run_id()
        archives = expand_archives(opts.archives) if opts.archives else sorted(SAMPLES.glob("messages_archive*.json"))
        mailboxes = opts.mailboxes if opts.mailboxes is not None else _first(SAMPLES.glob("mesh_mailboxes.json"))
        for path in [*archives, *([mailboxes] if mailboxes else [])]:
            if not Path(path).is_file():
                raise InvalidInput(f"input file not found: {path}")
        self.out(f"run {run_id}: bucket {self.store.describe()}")
        t0 = time.monotonic()

        # Inputs go to the bucket first: services only ever see object references.
        arch_refs = [_ref(self.store.put_file(Path(p), f"runs/{run_id}/inputs/{Path(p).name}")) for p in archives]
        mb_ref = _ref(self.store.put_file(Path(mailboxes), f"runs/{run_id}/inputs/{Path(mailboxes).name}")) \
            if mailboxes else None

        # Every evaluation suite's questions, asked of the evaluator, are kept out of the training data (and
        # their near-duplicates with them) by the data service.
        exclude = self.suite_questions()
        data = self._run_stage("data", data_pb2_grpc.DataServiceStub(self._channel(self.addrs.data)),
                               data_pb2.PrepareDataRequest(
                                   run_id=run_id, archives=arch_refs, mailboxes=mb_ref, min_pairs=opts.min_pairs,
                                   seed=opts.seed, cap=True, exclude_prompts=exclude))
        d = data.data
        grounding = self._data_grounding(run_id)
        self.out(f"  dataset: train {d.train_size}, val {d.val_size}, test {d.test_size}")

        train = self._run_stage("train", trainer_pb2_grpc.TrainerServiceStub(self._channel(self.addrs.trainer)),
                                trainer_pb2.TrainRequest(run_id=run_id, train=d.train, val=d.val,
                                                         config_name=opts.config, overrides=opts.overrides))
        t = train.train
        if t.metrics:
            self.out("  train: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(t.metrics.items())))

        quant = self._run_stage(
            "quantize", quantizer_pb2_grpc.QuantizerServiceStub(self._channel(self.addrs.quantizer)),
            quantizer_pb2.QuantizeRequest(run_id=run_id, candidate_prefix=t.merged_prefix,
                                          baseline_prefix=t.base_prefix, baseline_key=t.base_key,
                                          qtype=opts.qtype, model_name=opts.model_name, grounding=grounding))
        q = quant.quantize

        ev = self._run_stage("eval", evaluator_pb2_grpc.EvaluatorServiceStub(self._channel(self.addrs.evaluator)),
                             self._eval_request(run_id, opts, q, d))
        e = ev.eval
        summary: dict[str, Any] = {
            "run_id": run_id,
            "candidate_overall": e.candidate_overall,
            "baseline_overall": e.baseline_overall,
            "candidate_areas": dict(e.candidate_areas),
            "baseline_areas": dict(e.baseline_areas),
            "results_key": e.results.key,
            "report_key": e.report.key,
            "reference": e.reference or "base",
            "candidate_hallucinated_rate": e.candidate_hallucinated_rate,
            "suite": opts.suite,
            "promoted": False,
            "reason": e.reason,
            "wall_s": 0.0,
        }
        if e.report.key and opts.reports_dir is not None:
            local = Path(opts.reports_dir) / f"{run_id}.html"
            self.store.get_file(e.report.key, local, expected_sha256=e.report.sha256 or None)
            summary["report_path"] = str(local)
        if e.promote and opts.promote:
            pointer = promote(self.store, opts.model_name, run_id=run_id, gguf=q.candidate_gguf,
                              modelfile=q.modelfile, eval_results=e.results, overall=e.candidate_overall)
            summary["promoted"] = True
            summary["pointer"] = pointer.key
            self._refresh_gateway()
        summary["wall_s"] = time.monotonic() - t0
        return summary

    def suite_questions(self) -> list[str]:
        """Every shipped evaluation suite's question texts, each once, from the evaluator service."""
        stub = evaluator_pb2_grpc.EvaluatorServiceStub(self._channel(self.addrs.evaluator))
        try:
            reply = stub.GetSuiteQuestions(evaluator_pb2.SuiteQuestionsRequest(), timeout=60)
        except grpc.RpcError as exc:
            raise PipelineError(f"evaluation suites: {rpc_error_text(exc)}") from None
        return list(dict.fromkeys(q for suite in reply.suites for q in suite.questions))

    def _data_grounding(self, run_id: str) -> str:
        """How the data stage grounded the training examples (recorded in its manifest), "" when it did not."""
        try:
            manifest = self.store.get_json(f"runs/{run_id}/data/manifest.json")
        except NotFound:
            return ""
        return str((manifest.get("config") or {}).get("grounding") or "")

    @staticmethod
    def _eval_request(run_id: str, opts: PipelineOptions, q: Any, d: Any) -> evaluator_pb2.EvalRequest:
        req = evaluator_pb2.EvalRequest(
            run_id=run_id, candidate=q.candidate_gguf, baseline=q.baseline_gguf, suite=opts.suite,
            threshold=opts.threshold, candidate_modelfile=q.modelfile, model_name=opts.model_name,
            seeds=3 if opts.full_eval else 1, test_split=d.test, test_limit=0 if opts.full_eval else 40)
        if opts.full_eval and q.candidate_f16.key:
            req.candidate_f16.CopyFrom(q.candidate_f16)
        for name in ("margin", "max_hallucination_rate", "max_area_drop"):
            value = getattr(opts, name)
            if value is not None:
                setattr(req, name, value)
        return req

    def _refresh_gateway(self) -> None:
        if not self.addrs.gateway:
            return
        try:
            stub = gateway_pb2_grpc.GatewayServiceStub(self._channel(self.addrs.gateway))
            auth = [("authorization", f"Bearer {self.addrs.gateway_key}")] if self.addrs.gateway_key else None
            stub.Refresh(gateway_pb2.GatewayStatusRequest(), timeout=120, metadata=auth)
        except grpc.RpcError as exc:  # the gateway also polls the pointer; a missed nudge only delays the swap
            self.out(f"  note: gateway refresh failed ({rpc_error_text(exc)}); it will pick the model up on its next poll")


def expand_archives(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the rotated archives in it (messages_archive*.json)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("messages_archive*.json"))
            if not found:
                raise InvalidInput(f"no messages_archive*.json files in folder {p}")
            out += found
        else:
            out.append(p)
    names = [p.name for p in out]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InvalidInput(f"two archives share the file name {sorted(dupes)[0]!r}; rename one")
    return out


def _first(items: Any) -> Path | None:
    return next(iter(items), None)


def format_summary(summary: dict[str, Any], gateway_url: str, model_name: str) -> str:
    areas = sorted(set(summary["candidate_areas"]) | set(summary["baseline_areas"]))
    ref = summary.get("reference", "base")
    lines = ["", f"Evaluation ({summary.get('suite', 'field')} suite, asked as Mesh-Master asks), candidate vs {ref}:",
             f"  {'area':<14}{ref:>10}{'candidate':>11}{'delta':>9}"]
    for a in areas:
        b, c = summary["baseline_areas"].get(a, 0.0), summary["candidate_areas"].get(a, 0.0)
        lines.append(f"  {a:<14}{b:>10.1f}{c:>11.1f}{c - b:>+9.1f}")
    b, c = summary["baseline_overall"], summary["candidate_overall"]
    lines.append(f"  {'OVERALL':<14}{b:>10.1f}{c:>11.1f}{c - b:>+9.1f}")
    lines.append(f"  candidate hallucinated-command rate: {summary.get('candidate_hallucinated_rate', 0.0):.1f}%")
    lines.append(f"  results: {summary['results_key']}")
    if summary.get("report_path") or summary.get("report_key"):
        lines.append(f"  report:  {summary.get('report_path') or summary['report_key']}")
    if summary["promoted"]:
        lines += [
            f"Promoted: {model_name} <- run {summary['run_id']} ({summary.get('pointer')})",
            "",
            "Point Mesh-Master at the gateway: in its config.json set",
            '  "ai_provider": "ollama",',
            f'  "ollama_url": "{gateway_url}/api/generate",',
            f'  "ollama_model": "{model_name}",',
        ]
    else:
        lines.append(f"Not promoted: {summary.get('reason') or 'candidate did not beat the baseline'}")
    lines.append(f"Pipeline wall time: {summary['wall_s']:.0f}s")
    return "\n".join(lines)


__all__ = ["Addresses", "Pipeline", "PipelineError", "PipelineOptions", "format_summary", "NotFound"]
