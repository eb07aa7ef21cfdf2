"""Object references in gRPC messages <-> the store: every service fetches and checks inputs the same way."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from meshai.v1 import jobs_pb2
from meshai_common.errors import InvalidInput
from meshai_common.jobs import RunContext
from meshai_common.store import ArtifactStore, StoredObject


def to_ref(obj: StoredObject) -> jobs_pb2.ObjectRef:
    return jobs_pb2.ObjectRef(key=obj.key, sha256=obj.sha256, size=obj.size)


def from_ref(ref: jobs_pb2.ObjectRef) -> StoredObject:
    return StoredObject(ref.key, ref.sha256, ref.size)


def check_refs(store: ArtifactStore, refs: Iterable[jobs_pb2.ObjectRef], field: str) -> None:
    """Fail at submit, not minutes into a job, when an input is missing (NotFound names the key)."""
    for ref in refs:
        if not ref.key:
            raise InvalidInput(f"{field}: an object reference has an empty key")
        store.stat(ref.key)


def check_prefix(store: ArtifactStore, prefix: str, field: str) -> list[str]:
    if not prefix:
        raise InvalidInput(f"{field} is empty")
    keys = store.list(prefix.rstrip("/") + "/")
    if not keys:
        from meshai_common.errors import NotFound

        raise NotFound(f"{field}: nothing stored under {prefix!r}")
    return keys


def fetch(ctx: RunContext, refs: Iterable[jobs_pb2.ObjectRef], folder: str) -> list[Path]:
    """Download referenced objects into the job's workdir, each verified against its sha256."""
    paths = []
    for ref in refs:
        path = ctx.workdir / folder / ref.key.rsplit("/", 1)[-1]
        ctx.store.get_file(ref.key, path, expected_sha256=ref.sha256 or None)
        paths.append(path)
    return paths


def fetch_prefix(store: ArtifactStore, prefix: str, dest: Path) -> Path:
    """Download every object under a prefix (an HF model folder), each verified against its recorded sha256."""
    prefix = prefix.rstrip("/") + "/"
    for key in store.list(prefix):
        store.get_file(key, Path(dest) / key[len(prefix):])
    return Path(dest)
