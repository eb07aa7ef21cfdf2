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
    slash_words,
    unknown_slash_words,
)

__all__ = [
    "Catalog",
    "Command",
    "FactItem",
    "Facts",
    "Topic",
    "is_known_command",
    "load_catalog",
    "load_facts",
    "slash_words",
    "unknown_slash_words",
]
