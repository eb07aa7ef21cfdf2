"""Mesh-Master knowledge shared by every stage: the versioned command catalog and the Meshtastic facts."""

from meshai_common.meshmaster.catalog import (
    Catalog,
    Command,
    FactItem,
    Facts,
    Topic,
    is_known_command,
    load_catalog,
    load_facts,
    slash_word_matches,
    slash_words,
    unknown_slash_words,
)
from meshai_common.meshmaster.intents import (
    Contrast,
    FakeCommand,
    GeneralQA,
    Intent,
    IntentSet,
    Phrasing,
    Referring,
    load_intents,
    load_phrasing,
)

__all__ = [
    "Catalog",
    "Command",
    "Contrast",
    "FactItem",
    "Facts",
    "FakeCommand",
    "GeneralQA",
    "Intent",
    "IntentSet",
    "Phrasing",
    "Referring",
    "Topic",
    "is_known_command",
    "load_catalog",
    "load_facts",
    "load_intents",
    "load_phrasing",
    "slash_word_matches",
    "slash_words",
    "unknown_slash_words",
]
