"""Child processes whose output goes to a log file, stopped the way an orchestrator stops them: a signal, a
grace period to drain, then SIGKILL. Used by the trainer's rank launcher, the benchmarks and the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class LoggedProcess:
    """`argv` started with stdout and stderr in `log_path`; `new_session` puts it (and its children) in its own
    process group, which `stop` then signals as a whole."""

    def __init__(self, argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
                 new_session: bool = False) -> None:
        self.log_path = Path(log_path)
        self._group = new_session
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=new_session)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):  # it exited just now
                (os.killpg if self._group else os.kill)(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig`, wait up to `timeout` s, then SIGKILL; the exit code."""
        return stop_all([self], sig, timeout)[0]


def stop_all(procs: Sequence[LoggedProcess], sig: int = signal.SIGTERM, grace: float = 30.0) -> list[int]:
    """Signal every process at once, give them `grace` seconds together, SIGKILL the rest; their exit codes."""
    for p in procs:
        p.send(sig)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.send(signal.SIGKILL)
            p.proc.wait()
        p._log.close()
    return [p.proc.returncode for p in procs]
