"""Training curves: TensorBoard scalars read back with TensorBoard's own reader, MLflow in a local file store,
the error when tracking is asked for without mlflow, and plain progress lines on an injected clock."""

from __future__ import annotations

import io
import sys

import pytest

from meshai_common.errors import ConfigError
from meshai_common.progress import Progress
from meshai_common.tracking import TRACKING_URI_ENV, check_tracking, log_artifact
from meshai_trainer.curves import TrainingCurves, format_duration

PARAMS = {"learning_rate": 0.002, "lora_target_modules": ["q_proj", "v_proj"], "max_steps": None}


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_loss_val_lr_speed_and_memory_and_a_resume_replays_the_curve(tmp_path, monkeypatch):
    monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    curves = TrainingCurves(tmp_path, "run-1", PARAMS)
    for step in (1, 2, 3):
        curves.log(step, {"loss": 3.0 - step / 2, "lr": 0.001 * step, "tokens_per_s": 200.0 + step,
                          "epoch": step / 3, "rss_mb": 900.0, "peak_rss_mb": 950.0})
    curves.log(2, {"val_loss": 2.5})
    curves.close()
    got = _scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(1, 2.5), (2, 2.0), (3, 1.5)]
    assert got["train/val_loss"] == [(2, 2.5)]
    assert [s for s, _ in got["train/lr"]] == [1, 2, 3] and got["train/lr"][2][1] == pytest.approx(0.003)
    assert got["speed/tokens_per_s"][0] == (1, 201.0)
    assert got["memory/rss_mb"][-1] == (3, 900.0) and "memory/cuda_max_mb" not in got

    # A resumed run at step 2: the folder is rewritten from the checkpoint's log, no step appears twice.
    again = TrainingCurves(tmp_path, "run-1", PARAMS)
    again.replay([{"step": 1, "loss": 2.5, "lr": 0.001}, {"step": 2, "loss": 2.0, "lr": 0.002},
                  {"step": 2, "val_loss": 2.5}])
    again.log(3, {"loss": 1.25, "lr": 0.003})
    again.close()
    got = _scalars(tmp_path / "tensorboard")
    assert got["train/loss"] == [(1, 2.5), (2, 2.0), (3, 1.25)] and got["train/val_loss"] == [(2, 2.5)]


def test_mlflow_gets_params_metrics_and_a_later_stages_artifact(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv(TRACKING_URI_ENV, uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    curves = TrainingCurves(tmp_path / "out", "run-7", PARAMS, mlflow_every=2)
    for step in (1, 2, 3, 4):
        curves.log(step, {"loss": 4.0 - step, "lr": 0.01})
    curves.log(3, {"val_loss": 1.5})
    curves.close("FINISHED", {"train_loss": 0.5, "stopped_by": "schedule"}, step=4)
    report = tmp_path / "report.json"
    report.write_text('{"accuracy": 0.63}')
    assert log_artifact(report, "run-7", "evaluation")

    client = mlflow.MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("mesh-ai").experiment_id])
    assert run.data.tags["meshai.run_id"] == "run-7" and run.info.status == "FINISHED"
    assert run.data.params == {"learning_rate": "0.002", "lora_target_modules": "['q_proj', 'v_proj']",
                               "max_steps": "None"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [(2, 2.0), (4, 0.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_loss")] == [(3, 1.5)]
    assert run.data.metrics["final/train_loss"] == 0.5 and "final/stopped_by" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id, "evaluation")] == ["evaluation/report.json"]


def test_tracking_asked_for_without_mlflow_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(TRACKING_URI_ENV, "http://127.0.0.1:5000")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an image without the mlflow extra has
    with pytest.raises(ConfigError, match="mlflow is not installed"):
        check_tracking()  # what the service's Submit and the recipe's setup call first
    with pytest.raises(ConfigError, match=rf"{TRACKING_URI_ENV} is set but mlflow is not installed: "
                                          r"pip install -e '.\[mlflow\]'"):
        TrainingCurves(tmp_path, "run-1", PARAMS)
    report = tmp_path / "report.json"
    report.write_text("{}")
    with pytest.raises(ConfigError, match="mlflow is not installed"):
        log_artifact(report, "run-1")
    monkeypatch.delenv(TRACKING_URI_ENV)
    assert log_artifact(report, "run-1") is False  # tracking off: nothing to do, nothing needed
    check_tracking()


def _progress(step: int, total: int = 200, **metrics) -> Progress:
    return Progress(step=step, total=total, loss=2.0 - step / 1000, tokens_per_s=212.4, eta_s=(total - step) * 2.5,
                    metrics={"epoch": step / 100, **metrics})


def test_progress_lines_format_and_cadence_on_an_injected_clock():
    from meshai_trainer.curves import ProgressLines

    now = [100.0]
    out = io.StringIO()
    lines = ProgressLines(out, every_steps=50, every_s=30.0, clock=lambda: now[0])
    written = {}
    for step in range(1, 201):
        now[0] += 0.5 if step <= 120 else 5.0  # fast at first (the step count rules), then slow (the clock rules)
        if step == 60:
            lines.report(Progress(step=60, total=200, message="validated", metrics={"val_loss": 1.75}))
        line = lines.report(_progress(step))
        if line:
            written[step] = line
    # Steps 1-120 take 0.5 s: a line every 50 steps. Then 5 s a step: the 30 s since step 101 are up at step
    # 125, and from there every 6 steps; the last step always gets its line.
    assert list(written) == [1, 51, 101, 125, 131, 137, 143, 149, 155, 161, 167, 173, 179, 185, 191, 197, 200]
    assert written[1] == "train: step 1/200 (0%) epoch 0.01 loss 1.9990 tok/s 212 eta 8m18s"
    assert written[101] == "train: step 101/200 (50%) epoch 1.01 loss 1.8990 val 1.7500 tok/s 212 eta 4m08s"
    assert written[200].startswith("train: step 200/200 (100%) epoch 2.00 ") and written[200].endswith("eta 0s")
    assert out.getvalue().splitlines() == list(written.values())


def test_progress_lines_stay_off_where_the_bar_shows():
    from meshai_trainer.curves import ProgressLines

    silent = ProgressLines(None)
    assert silent.report(_progress(1)) is None
    assert [format_duration(s) for s in (0.4, 59, 61, 3599, 3600 * 5 + 125)] == ["0s", "59s", "1m01s", "59m59s",
                                                                                   "5h02m"]
