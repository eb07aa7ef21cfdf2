"""How many CPUs this process may really use: the container's CPU quota, not the host's core count.

In a pod with `limits.cpu: 2` on a 64-core node, os.cpu_count() says 64; llama.cpp with 64 threads would
spend the 2-CPU quota in a few milliseconds and then be throttled for the rest of every period. The quota
is in the cgroup: v2 `cpu.max` ("<quota> <period>" or "max <period>"), v1 `cpu.cfs_quota_us` /
`cpu.cfs_period_us` (-1: none). Without a quota the CPUs the scheduler lets this process run on count.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_cpu_quota"]


def available_cpus(root: str | os.PathLike[str] = "/") -> int:
    """CPUs this process can use, at least 1: the cgroup CPU quota (v2, else v1) rounded down, never more than
    the CPUs in its affinity mask (os.sched_getaffinity, else os.cpu_count).

    root: where /proc and /sys/fs/cgroup are found ("/" on a real system; a folder of fake files in tests).
    Raises ValueError naming the file when a cgroup file holds something that is not a quota.
    """
    cores = _scheduler_cpus()
    quota = cgroup_cpu_quota(root)
    if quota is None:
        return cores
    return max(1, min(cores, math.floor(quota)))


def cgroup_cpu_quota(root: str | os.PathLike[str] = "/") -> float | None:
    """The CPU quota in CPUs (1.5 = one and a half), the tightest along the cgroup path; None if unlimited."""
    root = Path(root)
    cgroup_fs = root / "sys/fs/cgroup"
    memberships = _memberships(root / "proc/self/cgroup")
    if (cgroup_fs / "cgroup.controllers").is_file():
        return _v2_quota(cgroup_fs, memberships.get("", "/"))
    for controllers, path in memberships.items():
        if "cpu" in controllers.split(","):
            for mount in (cgroup_fs / controllers, cgroup_fs / "cpu", cgroup_fs / "cpu,cpuacct"):
                if mount.is_dir():
                    return _v1_quota(mount, path)
    return None


def _scheduler_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _memberships(path: Path) -> dict[str, str]:
    """/proc/self/cgroup as {controllers: path}; the v2 hierarchy's controllers are ""."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def _own_then_parents(mount: Path, path: str) -> list[Path]:
    """The process's cgroup folder and its parents up to the mount. Inside a container with its own cgroup
    namespace the path is "/" or not visible under the mount: then the mount itself is the container's."""
    here = mount / path.lstrip("/")
    if not here.is_dir():
        return [mount]
    chain = [here]
    while chain[-1] != mount and mount in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _v2_quota(mount: Path, path: str) -> float | None:
    quotas = []
    for folder in _own_then_parents(mount, path):
        file = folder / "cpu.max"
        if not file.is_file():
            continue
        text = file.read_text().strip()
        fields = text.split()
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) <= 0 or not (
                fields[0] == "max" or fields[0].isdigit()):
            raise ValueError(f"{file}: expected '<quota|max> <period>' in microseconds, found {text!r}")
        if fields[0] != "max":
            quotas.append(int(fields[0]) / int(fields[1]))
    return min(quotas) if quotas else None


def _v1_quota(mount: Path, path: str) -> float | None:
    for folder in _own_then_parents(mount, path):
        quota_file, period_file = folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"
        if not quota_file.is_file() or not period_file.is_file():
            continue
        values = []
        for file in (quota_file, period_file):
            text = file.read_text().strip()
            try:
                values.append(int(text))
            except ValueError:
                raise ValueError(f"{file}: expected an integer number of microseconds, found {text!r}") from None
        quota, period = values
        if period <= 0:
            raise ValueError(f"{period_file}: the period must be positive, found {period}")
        return None if quota < 0 else quota / period
    return None
