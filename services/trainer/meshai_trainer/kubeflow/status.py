"""Rank 0 of a TrainJob reports to the controller through one small object in the bucket.

`runs/<run_id>/train/trainjob-status.json` is rewritten whole (the store publishes a key all at once, so a
reader never sees half of it): the newest events, each with a sequence number so the controller relays each
once, and at the end the result (the TrainResult and the manifest key) or the error. No append, no log
scraping, no permission for the pods on the Kubernetes API.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from typing import Any

from meshai_common.errors import MeshAIError, NotFound
from meshai_common.progress import Progress
from meshai_common.store import ArtifactStore

log = logging.getLogger(__name__)

STATUS_NAME = "trainjob-status.json"
KEEP_EVENTS = 64  # events kept in the object: more than are written between two reads of the controller
WRITE_EVERY_S = 5.0


def status_key(run_id: str) -> str:
    return f"runs/{run_id}/train/{STATUS_NAME}"


class StatusWriter:
    """Rank 0's side: progress events throttled to one write per WRITE_EVERY_S (messages at once)."""

    def __init__(self, store: ArtifactStore, run_id: str, attempt: str,
                 every_s: float = WRITE_EVERY_S) -> None:
        self.store, self.key, self.every_s = store, status_key(run_id), every_s
        self.doc: dict[str, Any] = {"attempt": attempt, "seq": 0, "state": "running", "events": []}
        self._events: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self._last_write = 0.0
        self._lock = threading.Lock()

    def report(self, progress: Progress) -> None:
        with self._lock:
            self.doc["seq"] += 1
            self._events.append({"seq": self.doc["seq"], "progress": dataclasses.asdict(progress)})
            due = bool(progress.message) or time.monotonic() - self._last_write >= self.every_s
        if due:
            self.flush()

    def finish(self, state: str, *, result: dict[str, Any] | None = None, manifest_key: str = "",
               error: str = "") -> None:
        with self._lock:
            self.doc.update(state=state, result=result, manifest_key=manifest_key, error=error)
        self.flush(required=True)

    def flush(self, required: bool = False) -> None:
        with self._lock:
            self.doc["events"] = list(self._events)
            snapshot = dict(self.doc)
            self._last_write = time.monotonic()
        try:
            self.store.put_json(snapshot, self.key)
        except MeshAIError as exc:  # progress must not stop training; the result must arrive
            if required:
                raise
            log.warning("could not write the TrainJob status", extra={"key": self.key, "error": str(exc)})


def read_status(store: ArtifactStore, run_id: str) -> dict[str, Any] | None:
    """The controller's side: the newest status object, or None before rank 0 wrote one."""
    try:
        return store.get_json(status_key(run_id))
    except NotFound:
        return None


def new_events(doc: dict[str, Any] | None, seen: int) -> tuple[list[Progress], int]:
    """The events after sequence number `seen` (and the new `seen`)."""
    if not doc:
        return [], seen
    fresh = [e for e in doc.get("events", []) if e.get("seq", 0) > seen]
    return [Progress(**e["progress"]) for e in fresh], max([seen, *(e["seq"] for e in fresh)])
