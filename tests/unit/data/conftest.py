"""Fixtures for the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path("/work/shared/fixtures")
SAMPLES = Path(__file__).resolve().parents[3] / "services" / "data" / "samples"


@pytest.fixture
def fixtures_dir() -> Path:
    """The shared fixtures, or the copy shipped with the data service where /work/shared is absent."""
    return SHARED if (SHARED / "messages_archive.json").exists() else SAMPLES
