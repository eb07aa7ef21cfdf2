"""Where the served model comes from. The app only asks a ModelSource for "the current model".

- LocalFileSource: one GGUF on disk (`meshai gateway --model PATH`); re-checked on refresh, so replacing the
  file (atomically, by rename) hot-swaps the model.
- A bucket source (follows `models/<name>/current.json`, downloads and verifies the GGUF) implements the
  same interface; ModelManager polls it every `poll_interval_s`.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshai_common.errors import InvalidInput, NotFound
from meshai_common.modelfile import Modelfile, parse_modelfile
from meshai_common.store import sha256_file

GGUF_MAGIC = b"GGUF"
# Receives Ollama pull-status objects while a source fetches a model.
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ModelInfo:
    """One servable model version: a local GGUF ready to open plus what travels with it."""

    name: str  # the served name clients ask for, e.g. "mesh-ai"
    path: Path  # local GGUF file
    sha256: str
    size: int
    modified_at: float  # unix time of this version (promotion or file mtime)
    modelfile: Modelfile = field(default_factory=Modelfile)
    run_id: str = ""  # pipeline run that produced it, when known
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific facts, shown by /api/show

    @property
    def digest(self) -> str:
        return self.sha256

    @property
    def system(self) -> str | None:
        return self.modelfile.system

    @property
    def parameters(self) -> dict[str, Any]:
        return self.modelfile.parameters


class ModelSource(ABC):
    """Tells the gateway which model to serve.

    current() resolves the model that should be served now and returns it with a local path the engine can
    open; it may download and verify. It raises NotFound (nothing to serve), Unavailable (cannot tell now) or
    IntegrityError (bytes do not match their sha256). It is called from a worker thread, never the event loop.
    `progress`, when given, receives Ollama pull-status objects ({"status", "digest", "total", "completed"})
    while it works.
    """

    name: str
    # ModelManager re-asks current() this often (seconds); None: only at start and on refresh().
    poll_interval_s: float | None = None
    # True where current() fetches from a model registry, so `POST /api/pull` means "fetch the promoted
    # version now"; a local file has nothing to fetch.
    fetches: bool = False

    @abstractmethod
    def current(self, progress: Progress | None = None) -> ModelInfo: ...

    def describe(self) -> str:
        return type(self).__name__


def check_gguf(path: Path) -> None:
    """Fail early, with the path in the message, on a file that is missing or not a GGUF."""
    if not path.is_file():
        raise NotFound(f"model file {path} does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise InvalidInput(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")


class LocalFileSource(ModelSource):
    """A GGUF on local disk. A Modelfile is read from `modelfile`, else `<path>.Modelfile` or a `Modelfile`
    next to the GGUF, when present."""

    def __init__(self, path: str | os.PathLike[str], name: str = "mesh-ai", *,
                 modelfile: str | os.PathLike[str] | None = None, poll_interval_s: float | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        self.name = name
        self.modelfile_path = Path(modelfile).expanduser().resolve() if modelfile else None
        self.poll_interval_s = poll_interval_s
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], str] | None = None  # (ino, size, mtime_ns) -> sha256

    def describe(self) -> str:
        return f"file {self.path}"

    def _find_modelfile(self) -> Path | None:
        if self.modelfile_path is not None:
            if not self.modelfile_path.is_file():
                raise NotFound(f"Modelfile {self.modelfile_path} does not exist")
            return self.modelfile_path
        for candidate in (self.path.with_name(self.path.name + ".Modelfile"), self.path.with_name("Modelfile")):
            if candidate.is_file():
                return candidate
        return None

    def current(self, progress: Progress | None = None) -> ModelInfo:
        check_gguf(self.path)
        st = self.path.stat()
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, sha256_file(self.path))  # hashing ~100 MB takes well under a second
            sha = self._cache[1]
        mf_path = self._find_modelfile()
        modelfile = Modelfile()
        if mf_path is not None:
            modelfile = parse_modelfile(mf_path.read_text(encoding="utf-8"), source=str(mf_path))
        return ModelInfo(name=self.name, path=self.path, sha256=sha, size=st.st_size, modified_at=st.st_mtime,
                         modelfile=modelfile, extra={"source": self.describe()})
