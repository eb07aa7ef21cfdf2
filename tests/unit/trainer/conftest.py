"""Trainer test fixtures: the embedded SmolLM2 as an HF folder (real weights) and a small chat dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Short, real-looking exchanges: a few tokens each, so a training step takes a fraction of a second.
QA = [
    ("how do I list nodes?", "Send /nodes to list nodes heard in the last 24h."),
    ("what does SNR mean?", "Signal-to-noise ratio: above 0 dB is a clean link."),
    ("how do I relay to bob?", "Send /relay bob followed by your message."),
    ("check my mail", "Send /checkmail to read your mailbox."),
    ("what is a hop?", "One radio passing a packet on; 3 hops is the default limit."),
    ("is the mesh up?", "Send /ping; replies show which nodes hear you."),
    ("what is ACK?", "An acknowledgement: the node got your message."),
    ("how far can LoRa go?", "A few km in towns, tens of km line of sight."),
    ("weather here?", "Send /weather for the local forecast."),
    ("who is online?", "Send /nodes; the list shows when each was last heard."),
    ("how do I send mail?", "Send /mail alice then your text."),
    ("why no reply?", "The node may be out of range; try again or raise hops."),
    ("what is RSSI?", "Received signal strength, in dBm; closer to 0 is stronger."),
    ("help", "Send /help for the command list."),
    ("how do I set my name?", "Set it in the Meshtastic app under User."),
    ("battery low?", "Send /status to see each node's battery level."),
]


def write_chat_jsonl(path: Path, pairs: list[tuple[str, str]] = QA) -> Path:
    with open(path, "w") as fh:
        for q, a in pairs:
            msgs = [{"role": "system", "content": "Reply briefly."}, {"role": "user", "content": q},
                    {"role": "assistant", "content": a}]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """In-process model work on one thread, restored afterwards: tests stay fast and comparable even when
    other processes (the suite's services, a parallel job) busy the cores, where spinning thread pools crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("chat")
    return write_chat_jsonl(d / "train.jsonl"), write_chat_jsonl(d / "val.jsonl", QA[:6])
