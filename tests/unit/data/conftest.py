"""Fixtures for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# The sample archive and mailboxes shipped in the repository with the data service.
SAMPLES = Path(__file__).resolve().parents[3] / "services" / "data" / "meshai_data" / "samples"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The sample Mesh-Master files (messages_archive.json, mesh_mailboxes.json) in the repository."""
    assert (SAMPLES / "messages_archive.json").is_file(), f"{SAMPLES}: sample archive missing"
    return SAMPLES
