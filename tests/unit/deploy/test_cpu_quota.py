"""available_cpus(): the container's CPU quota from cgroup files, laid out as the kernel does under a fake root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshai_common.cpu import available_cpus, cgroup_cpu_quota

CORES = len(os.sched_getaffinity(0))


def v2_root(tmp_path: Path, own: str | None, parent: str | None = None, proc_path: str = "/pod/app") -> Path:
    """cgroup v2: /sys/fs/cgroup/cgroup.controllers marks the unified hierarchy; the process sits in
    proc_path, whose cpu.max is `own` and whose parent's is `parent`."""
    fs = tmp_path / "sys/fs/cgroup"
    fs.mkdir(parents=True)
    (fs / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    here = fs / proc_path.lstrip("/")
    here.mkdir(parents=True, exist_ok=True)
    if own is not None:
        (here / "cpu.max").write_text(own + "\n")
    if parent is not None:
        (here.parent / "cpu.max").write_text(parent + "\n")
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(f"0::{proc_path}\n")
    return tmp_path


def v1_root(tmp_path: Path, quota: str, period: str = "100000", mount: str = "cpu,cpuacct") -> Path:
    folder = tmp_path / "sys/fs/cgroup" / mount
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (folder / "cpu.cfs_period_us").write_text(period + "\n")
    (tmp_path / "proc/self").mkdir(parents=True)
    # The host's path, as seen in a container without a cgroup namespace: not present under the mount.
    (tmp_path / "proc/self/cgroup").write_text(
        f"12:memory:/kubepods/pod1/abc\n4:{mount}:/kubepods/pod1/abc\n1:name=systemd:/kubepods/pod1/abc\n")
    return tmp_path


@pytest.mark.parametrize(("cpu_max", "cpus"), [("100000 100000", 1.0), ("150000 100000", 1.5),
                                               ("50000 100000", 0.5), ("400000 200000", 2.0)])
def test_v2_quota_in_cpus(tmp_path, cpu_max, cpus):
    root = v2_root(tmp_path, cpu_max)
    assert cgroup_cpu_quota(root) == cpus
    # Rounded down (a thread per whole CPU), never 0, never above the CPUs the scheduler gives us.
    assert available_cpus(root) == max(1, min(CORES, int(cpus)))


def test_v2_unlimited_falls_back_to_the_scheduler(tmp_path):
    root = v2_root(tmp_path, "max 100000")
    assert cgroup_cpu_quota(root) is None
    assert available_cpus(root) == CORES


def test_v2_a_parent_limit_counts(tmp_path):
    # A pod-level limit above an unlimited container cgroup (how the kubelet lays them out).
    root = v2_root(tmp_path, "max 100000", parent="100000 100000")
    assert cgroup_cpu_quota(root) == 1.0 and available_cpus(root) == 1
    # The tighter of the two wins.
    other = v2_root(tmp_path / "b", "50000 100000", parent="300000 100000")
    assert cgroup_cpu_quota(other) == 0.5


def test_v2_with_a_cgroup_namespace_reads_the_mount_itself(tmp_path):
    root = v2_root(tmp_path, None, proc_path="/")
    (root / "sys/fs/cgroup/cpu.max").write_text("100000 100000\n")
    assert cgroup_cpu_quota(root) == 1.0


def test_v1_quota_and_no_quota(tmp_path):
    assert cgroup_cpu_quota(v1_root(tmp_path / "a", "100000")) == 1.0
    assert available_cpus(v1_root(tmp_path / "b", "100000")) == 1
    assert cgroup_cpu_quota(v1_root(tmp_path / "c", "-1")) is None
    assert cgroup_cpu_quota(v1_root(tmp_path / "d", "300000", mount="cpu")) == 3.0


def test_no_cgroup_files_means_the_scheduler_decides(tmp_path):
    assert cgroup_cpu_quota(tmp_path) is None
    assert available_cpus(tmp_path) == CORES
    # The real machine answers too (whatever its limits), with a usable count.
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("bad", ["lots 100000", "100000", "100000 0", ""])
def test_v2_garbage_names_the_file(tmp_path, bad):
    root = v2_root(tmp_path, bad)
    with pytest.raises(ValueError, match=r"pod/app/cpu\.max"):
        available_cpus(root)


def test_v1_garbage_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"cpu\.cfs_quota_us"):
        available_cpus(v1_root(tmp_path, "unlimited"))
    with pytest.raises(ValueError, match=r"cpu\.cfs_period_us"):
        available_cpus(v1_root(tmp_path / "z", "100000", period="0"))
