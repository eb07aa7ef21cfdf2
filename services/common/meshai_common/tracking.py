"""Experiment tracking in MLflow when MESHAI_MLFLOW_TRACKING_URI is set; without it every call here is a no-op.

mlflow is an optional extra (`pip install -e '.[mlflow]'`), imported only when tracking is on. One MLflow run
stands for one Mesh-AI run id (tag `meshai.run_id`): the trainer opens it with the config and the curves, and
a later stage attaches its files to the same run with `log_artifact(path, run_id)`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from meshai_common.errors import ConfigError, NotFound

TRACKING_URI_ENV = "MESHAI_MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MESHAI_MLFLOW_EXPERIMENT"
DEFAULT_EXPERIMENT = "mesh-ai"
RUN_TAG = "meshai.run_id"
PARAM_CHARS = 500  # long values (lists, dataset specs) are cut; MLflow refuses very long params

log = logging.getLogger(__name__)


def tracking_uri() -> str | None:
    return os.environ.get(TRACKING_URI_ENV, "").strip() or None


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError(f"environment variable {TRACKING_URI_ENV} is set but mlflow is not installed: "
                          f"pip install -e '.[mlflow]', or unset {TRACKING_URI_ENV}") from None
    return mlflow


def check_tracking() -> None:
    """Fail early, before any work: tracking is asked for (the variable is set) but mlflow is not installed."""
    if tracking_uri() is not None:
        _mlflow()


class TrackingRun:
    """The MLflow run of one Mesh-AI run: found by its tag (a resumed or later stage) or created."""

    def __init__(self, client: Any, mlflow_run_id: str) -> None:
        self.client = client
        self.mlflow_run_id = mlflow_run_id

    @classmethod
    def open(cls, run_id: str, run_name: str | None = None) -> TrackingRun | None:
        """None when tracking is off; ConfigError when it is on and mlflow is missing."""
        uri = tracking_uri()
        if uri is None:
            return None
        mlflow = _mlflow()
        if uri.startswith("file:") or "://" not in uri:
            # A local folder store: the operator chose it explicitly, so MLflow's maintenance-mode refusal
            # of file stores would only get in the way.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        client = mlflow.MlflowClient(tracking_uri=uri)
        name = os.environ.get(EXPERIMENT_ENV, "").strip() or DEFAULT_EXPERIMENT
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
        found = client.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{run_id}'", max_results=1)
        if found:
            return cls(client, found[0].info.run_id)
        created = client.create_run(exp_id, tags={RUN_TAG: run_id}, run_name=run_name or run_id)
        return cls(client, created.info.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        """Params as text; a key already logged with another value (a resumed run) keeps its first value."""
        from mlflow.entities import Param

        have = self.client.get_run(self.mlflow_run_id).data.params
        todo = [Param(k, str(v)[:PARAM_CHARS]) for k, v in sorted(params.items()) if k not in have]
        for start in range(0, len(todo), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.mlflow_run_id, params=todo[start:start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if batch:
            self.client.log_batch(self.mlflow_run_id, metrics=batch)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.mlflow_run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        """status: FINISHED, FAILED or KILLED (cancelled)."""
        self.client.set_terminated(self.mlflow_run_id, status)


def log_artifact(path: Path | str, run_id: str, artifact_path: str | None = None) -> bool:
    """Attach a file (e.g. the evaluation report) to the MLflow run of Mesh-AI run `run_id`.

    Returns False when tracking is off (MESHAI_MLFLOW_TRACKING_URI unset); raises ConfigError when it is on
    and mlflow is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path} does not exist")
    run = TrackingRun.open(run_id)
    if run is None:
        return False
    run.log_artifact(path, artifact_path)
    return True
