"""Ranks without a model: torchrun's command line for the service's ranks, a failed rank named in the job's error
with the last line it wrote (the slow tests in test_ddp.py train through the launcher), and the resume
checkpoint shared by rank 0 with a rank that has no copy of it (another node) or a different one.

Run as a script under torchrun (`test_ddp_launch.py ROOT`), this file is one of the two ranks that share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshai_common.errors import MeshAIError
from meshai_common.progress import LocalContext
from meshai_trainer.launch import STOP_GRACE_S, run_ranks, torchrun_argv


def test_torchrun_runs_the_trainer_cli_with_the_venvs_python(tmp_path):
    argv = torchrun_argv(3, ["cpu-smollm2", "--train", "t.jsonl"], tmp_path / "ev.jsonl", tmp_path / "logs",
                         STOP_GRACE_S)
    assert argv[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert argv[argv.index("--nproc-per-node") + 1] == "3"
    assert argv[argv.index("--shutdown-timeout") + 1] == "300"  # the ranks' grace to checkpoint on a stop
    tail = argv[argv.index("-m", 4):]
    assert tail[:6] == ["-m", "meshai_trainer.cli", "train", "run", "cpu-smollm2", "--train"]
    assert tail[-2:] == ["--events", str(tmp_path / "ev.jsonl")]


def test_a_failed_rank_is_named_with_the_last_line_it_wrote(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("base_model: embedded:smollm2\nlora_r: 8\n")
    # Every rank stops at the config check, before any model is loaded; torchrun names the first to fail.
    with pytest.raises(MeshAIError, match=r"training rank [01] of 2 exited 1: .*lora_r"):
        run_ranks(2, [str(config), "--train", str(tmp_path / "t.jsonl"), "--set", "lora_r=many"],
                  tmp_path / "ranks", LocalContext(tmp_path / "job"))


def _share_main(root: Path) -> None:
    from meshai_trainer import distributed

    world = distributed.setup()
    mine = root / f"rank{world.rank}"
    results = {}
    for case in ("rank0-only", "stale-copy", "same-copy", "rank1-only"):
        own = mine / case / "checkpoint-000004"
        chosen = own if own.is_dir() else None
        got = distributed.share_checkpoint(world, chosen, mine / case / "received")
        results[case] = None if got is None else {"path": str(got), "files": {
            str(p.relative_to(got)): p.read_text() for p in sorted(got.rglob("*")) if p.is_file()}}
    (mine / "results.json").write_text(json.dumps(results))
    distributed.cleanup(world)


def _checkpoint(folder: Path, text: str) -> None:
    (folder / "nested").mkdir(parents=True)
    (folder / "trainer_state.json").write_text(text)
    (folder / "nested" / "adapter.bin").write_text(text * 3)


def test_every_rank_resumes_from_rank_0s_checkpoint_without_a_shared_disk(tmp_path):
    _checkpoint(tmp_path / "rank0/rank0-only/checkpoint-000004", "rank 0's")
    _checkpoint(tmp_path / "rank0/stale-copy/checkpoint-000004", "rank 0's")
    _checkpoint(tmp_path / "rank1/stale-copy/checkpoint-000004", "an older run's")
    for rank in (0, 1):
        _checkpoint(tmp_path / f"rank{rank}/same-copy/checkpoint-000004", "shared")
    _checkpoint(tmp_path / "rank1/rank1-only/checkpoint-000004", "rank 1's")
    env = os.environ | {"GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           __file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}/results.json").read_text()) for r in (0, 1))
    want = {"trainer_state.json": "rank 0's", "nested/adapter.bin": "rank 0's" * 3}
    for case in ("rank0-only", "stale-copy"):  # received: rank 1 had none, or a different one
        assert r0[case]["path"] == str(tmp_path / "rank0" / case / "checkpoint-000004")
        assert r1[case] == {"path": str(tmp_path / "rank1" / case / "received" / "checkpoint-000004"),
                            "files": want}
    assert r1["same-copy"]["path"] == str(tmp_path / "rank1/same-copy/checkpoint-000004")  # kept, not sent
    assert not (tmp_path / "rank1/same-copy/received").exists()
    assert r0["rank1-only"] is None and r1["rank1-only"] is None  # rank 0 starts over: so does every rank


if __name__ == "__main__":
    _share_main(Path(sys.argv[1]))
