"""Evaluation suites shipped with the evaluator (YAML under suites/), loaded without any model code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from meshai_common.errors import InvalidInput, NotFound

SUITES = Path(__file__).resolve().parent / "suites"
AREAS = ("commands", "brevity", "hallucination", "technical")


def load_suite(name_or_path: str = "public") -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.is_file():
        path = SUITES / f"{name_or_path}.yaml"
    if not path.is_file():
        raise NotFound(f"no evaluation suite {name_or_path!r} (shipped: "
                       f"{', '.join(sorted(p.stem for p in SUITES.glob('*.yaml')))})")
    suite = yaml.safe_load(path.read_text()) or {}
    for section in ("commands", "hallucination", "technical"):
        items = suite.get(section)
        if not isinstance(items, list) or not items:
            raise InvalidInput(f"{path}: section {section!r} must be a non-empty list")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not item.get("id") or not item.get("question"):
                raise InvalidInput(f"{path}: {section}[{i}] needs an id and a question")
    return suite


def questions(suite: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(area, item) for every question, in a fixed order."""
    return [(area, item) for area in ("commands", "hallucination", "technical") for item in suite[area]]


def suite_prompts(name: str = "public") -> list[str]:
    """The suite's question texts: the data service drops any training example asking one of them."""
    return [item["question"] for _, item in questions(load_suite(name))]
