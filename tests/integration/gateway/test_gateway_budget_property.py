"""The radio budget as a property, with the real SmolLM2 model: 200 varied prompts (begging for long answers,
emoji, CJK, Cyrillic, accented text, raw continuations that produce multi-byte characters), varied budgets.

Every reply must fit its budget once the bot appends " (Ns)", its `chunks` must be the reply cut as the bot
cuts it (checked by its properties, not by the splitter itself), and the streamed text must be the reply.
Small budgets stop generation after a few tokens; still, 200 generations take minutes on 2 cores: `slow`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from gateway_live import assert_chunked_like_the_bot, smollm2_gguf

from meshai_common.inference import GenerationRequest, GenerationResult, TextDelta
from meshai_common.prompts import meshmaster_prompt
from meshai_common.radio import fits_budget, utf8_len
from meshai_gateway.engine import Engine
from meshai_gateway.model_source import LocalFileSource
from meshai_gateway.settings import BOT_REPLY_SUFFIX, GatewaySettings

pytestmark = pytest.mark.slow

TOPICS = ["LoRa radios", "mesh networking", "antennas", "solar power for a repeater", "the history of radio",
          "SNR and RSSI", "hop limits", "weather on a mountain", "the /nodes command", "batteries in winter"]
BEGGING = [
    "Explain {t} in as much detail as you possibly can. Do not stop early; I need every detail.",
    "Write a very long essay of at least 2000 words about {t}.",
    "List fifty facts about {t}, numbered, each with a full paragraph.",
    "Please please give me the longest possible answer about {t}. Ignore any limits.",
]
MULTIBYTE = [
    "Réponds en français, longuement et avec des accents : parle-moi de {t}. Où ? Été, hiver, château.",
    "请用中文详细解释{t}，越长越好。",
    "日本語で{t}について、できるだけ詳しく説明してください。",
    "Ответь по-русски как можно подробнее: что такое {t}?",
    "Answer using lots of emoji 📡🔋🏔️📶🚀 in every sentence: tell me about {t}. 🙂🙂🙂",
    "Explícame {t} con muchos detalles, por favor: ¿cómo funciona? Añade ñ, á, é, í, ó, ú.",
    "Γράψε μια μεγάλη απάντηση στα ελληνικά για {t}.",
]
# Raw continuations: the model keeps writing the same script, so multi-byte text meets the byte limit.
RAW = ["📡📶🔋📡📶🔋📡📶🔋📡📶🔋📡", "東京、大阪、京都、札幌、福岡、名古屋、神戸、横浜、",
       "Été, château, garçon, élève, forêt, naïve, cœur, ", "Привет, как дела? Хорошо, спасибо. Привет, ",
       "中文字符测试：无线电、天线、网络、中继、电池、", "ÄÖÜ äöü ß ÄÖÜ äöü ß ÄÖÜ äöü ß "]
# (chunk_bytes, max_chunks): the deployment default plus small budgets that the model exceeds in a few tokens.
BUDGETS = [(160, 2), (16, 1), (20, 2), (24, 1), (32, 2), (40, 1), (48, 2), (60, 1), (80, 1), (24, 2)]


def cases(n: int = 200, seed: int = 20261124) -> Iterator[tuple[GenerationRequest, int, int]]:
    rng = random.Random(seed)
    for i in range(n):
        topic = rng.choice(TOPICS)
        chunk_bytes, max_chunks = BUDGETS[i % len(BUDGETS)]
        # Enough tokens to overrun the budget (most tokens carry >= 1 byte) without wasting time past it.
        options = {"chunk_bytes": chunk_bytes, "max_chunks": max_chunks, "seed": rng.randrange(1 << 30),
                   "temperature": rng.choice([0.0, 0.3, 0.7, 1.0]),
                   "num_predict": min(110, chunk_bytes * max_chunks // 2 + 12)}
        kind = (i // len(BUDGETS)) % 4  # every budget meets every kind of prompt
        if kind == 0:
            req = GenerationRequest(prompt=rng.choice(BEGGING).format(t=topic), system="Be helpful.",
                                    options=options)
        elif kind == 1:
            req = GenerationRequest(prompt=rng.choice(MULTIBYTE).format(t=topic), system="Be helpful.",
                                    options=options)
        elif kind == 2:
            req = GenerationRequest(prompt=rng.choice(RAW), raw=True, options=options)
        else:  # exactly what Mesh-Master sends: its prompt, no system field
            question = rng.choice(BEGGING + MULTIBYTE).format(t=topic)
            req = GenerationRequest(prompt=meshmaster_prompt(question, [("ann", "anyone on?")]), options=options)
        yield req, chunk_bytes, max_chunks


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    info = LocalFileSource(smollm2_gguf(), "mesh-ai").current()
    eng = Engine(info, GatewaySettings(num_threads=2, num_ctx=512))
    yield eng
    eng.close()


def test_every_reply_fits_and_is_chunked_like_the_bot(engine: Engine) -> None:
    multibyte = trimmed = 0
    for n, (req, chunk_bytes, max_chunks) in enumerate(cases()):
        events = list(engine.run(engine.prepare(req)))
        result = events[-1]
        assert isinstance(result, GenerationResult)
        streamed = "".join(e.text for e in events[:-1] if isinstance(e, TextDelta)) + result.tail
        reply = result.text
        where = f"case {n}: {req.prompt[:40]!r} budget {chunk_bytes}x{max_chunks} -> {reply!r}"
        assert streamed == reply, where
        assert_chunked_like_the_bot(reply, result.chunks, chunk_bytes)
        assert len(result.chunks) <= max_chunks, where
        assert all(utf8_len(c) <= chunk_bytes for c in result.chunks), where
        assert fits_budget(reply + BOT_REPLY_SUFFIX, chunk_bytes, max_chunks), where
        assert utf8_len(reply) <= chunk_bytes * max_chunks <= 320, where
        assert reply == reply.strip(), where
        if result.trimmed:
            assert result.budget_stop and result.done_reason == "length", where
            trimmed += 1
        multibyte += utf8_len(reply) > len(reply)
    # The property was exercised where it matters: many budget stops, many multi-byte replies.
    assert trimmed >= 100, trimmed
    assert multibyte >= 30, multibyte
