"""The retrieval index: documents from the catalog, the facts and the question bank, scored lexically.

Each document is one short text (a catalog entry, one bank phrasing, one fact question) that points at a
key: a command, "relay", or a facts topic. A question is scored against every document with BM25 over
stemmed words (misspelled words are first corrected to a known word one edit away) fused with a character
3-gram cosine, and each key takes the score of its best document. An index built with an embedder (semantic
grounding, catalog-v6) also adds each key's best sentence-embedding cosine to that score.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from meshai_common.errors import ConfigError
from meshai_common.grounding.text import (
    RELATED,
    SLOT_PREFIX,
    SURFACE,
    TYPED_SLOTS,
    deletes,
    is_stopword,
    shortnames,
    stem,
    terms,
    words,
)
from meshai_common.meshmaster import load_catalog, load_facts, unknown_slash_words
from meshai_common.meshmaster.catalog import Command, FactItem, Topic

BM25_K1 = 1.2
BM25_B = 0.75
STOPWORD_WEIGHT = 0.4  # function words still count a little: "what can you do" matches its bank twin
CORRECTED_WEIGHT = 0.8  # a spelling fix is a guess: worth a little less than a word typed right
# The fused score of a key: its best document's word BM25 (scaled by the best document's) and character
# cosine, plus the key's pooled BM25 (scaled by the best key's).
DOC_WEIGHT = 0.65
CHAR_WEIGHT = 0.35
POOLED_WEIGHT = 0.5
POOLED_B = 0.5
GLOSSARY_FILE = Path(__file__).resolve().parent / "glossary.yaml"
_SLOT = re.compile(r"\{(\w+)\}")
# A bank slot ({name}, {msg}) and a question word nobody indexed ("bob", "K7AB") meet as this one term:
# "tell {name} {msg}" then matches "tell bob im late" on more than the verb.
SLOT = SLOT_PREFIX
SLOT_WEIGHT = 0.5
HISTORY_WEIGHT = 0.3  # a history word counts this much of the same word in the question
RELATED_WEIGHT = 0.5  # an everyday word's catalog counterpart ("woken" -> alarm)
SURFACE_WEIGHT = 0.6  # a word matched as written, on top of its stem: "nodes" leans to /nodes over /node
SHORTNAME_WEIGHT = 1.0  # a node's short name written as one ("OTTR", "K7AB"): the question names a node
# Semantic grounding: a key's best sentence-embedding cosine, added to its lexical score scaled to the best
# key's 1.0. Chosen on the question bank's held-out folds (bench_retrieval.py --semantic-weights).
SEMANTIC_WEIGHT = 1.5
# The tuned copy of the embedding model (catalog-v9) agrees with the bank far more: its cosine weighs twice as
# much (question bank folds, first hit right: 87.9 % at 1.5, 89.6 % at 3; bench_embedder_tuning.py).
TUNED_SEMANTIC_WEIGHT = 3.0


@dataclass(frozen=True)
class Entry:
    kind: str  # "command" | "relay" | "fact" | "none"
    key: str
    line: str  # the Context line for this key (facts: the answer of the matched question)


NO_ENTRY = Entry("none", "", "")  # small talk and general questions: they compete, and are never returned


@dataclass(frozen=True)
class Doc:
    entry: Entry
    terms: tuple[str, ...]
    group: str = ""  # the data service's template group of a bank or fact phrasing ("nodes:a3", "fact:snr:0:1")
    text: str = ""  # the text as written, slots and all: what a suite is checked against and what is embedded


def _char_grams(term_list: Iterable[str]) -> Counter[str]:
    grams: Counter[str] = Counter()
    for t in term_list:
        if is_stopword(t) or t.startswith((SLOT, SURFACE)):
            continue
        padded = f"^{t}$"
        for i in range(len(padded) - 2):
            grams[padded[i : i + 3]] += 1
    return grams


class _Bm25:
    """Okapi BM25 over bags of terms (one bag per document)."""

    def __init__(self, bags: list[tuple[str, ...]], b: float) -> None:
        n = len(bags)
        self.b = b
        self.lengths = [len(x) for x in bags]
        self.avg_len = sum(self.lengths) / max(n, 1)
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, bag in enumerate(bags):
            for t, tf in sorted(Counter(bag).items()):
                self.postings[t].append((i, tf))
        self.idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in self.postings.items()}

    def scores(self, weights: dict[str, float]) -> dict[int, float]:
        out: dict[int, float] = defaultdict(float)
        k1, b = BM25_K1, self.b
        for t, w in weights.items():
            idf = self.idf.get(t, 0.0) * w
            for i, tf in self.postings.get(t, ()):
                norm = 1 - b + b * self.lengths[i] / self.avg_len
                out[i] += idf * tf * (k1 + 1) / (tf + k1 * norm)
        return out


class Index:
    """Word BM25 and character 3-gram TF-IDF over documents, plus word BM25 over each key's pooled
    documents (built once, read-only after).

    The document level finds the one phrasing a question resembles; the key level pools the evidence of all
    of a key's phrasings, so a question mixing words from several phrasings of one command still finds it.
    """

    def __init__(self, docs: list[Doc], light: frozenset[str] = frozenset(), embedder: Any = None,
                 semantic_weight: float | None = None) -> None:
        self.docs = docs
        self.semantic_weight = semantic_weight  # None: SEMANTIC_WEIGHT, read at each search (benchmarks sweep it)
        # semantic.Embedder or None; with one, every document's text has a unit vector (semantic grounding)
        self.embedder = embedder
        self.vectors = embedder.embed_cached([embed_text(d.text) for d in docs]) if embedder is not None else None
        self.light = light  # question-frame terms ("command", "send"): weighted like function words
        self.words = _Bm25([d.terms for d in docs], BM25_B)
        self.keys: list[Entry] = []
        pooled: dict[str, list[str]] = {}
        for d in docs:
            if d.entry.key not in pooled:
                pooled[d.entry.key] = []
                self.keys.append(d.entry)
            pooled[d.entry.key].extend(d.terms)
        self.pooled = _Bm25([tuple(pooled[e.key]) for e in self.keys], POOLED_B)
        position = {e.key: j for j, e in enumerate(self.keys)}
        self.key_of = [position[d.entry.key] for d in docs]  # document -> its key's position in self.keys
        self.none_key = position.get(NO_ENTRY.key, -1)
        self.vocab = self.words.postings
        self.df = {t: len(p) for t, p in self.vocab.items()}
        # everyday words -> catalog words (text.RELATED), as stems the index holds
        self.related: dict[str, tuple[str, ...]] = {}
        for word, alts in RELATED.items():
            found = tuple(r for r in dict.fromkeys(stem(a) for a in alts) if r in self.vocab)
            if found:
                self.related[stem(word)] = found
        self.spell: dict[str, list[str]] = defaultdict(list)
        for t in sorted(set(self.vocab) | set(self.related)):
            if len(t) >= 4 and not t.isdigit():
                for d in deletes(t):
                    self.spell[d].append(t)
        # character n-grams: sparse TF-IDF vectors, unit length, with an inverted index
        grams = [_char_grams(d.terms) for d in docs]
        gdf: Counter[str] = Counter()
        for g in grams:
            gdf.update(g.keys())
        n = len(docs)
        self.gidf = {g: math.log((n + 1) / (c + 0.5)) for g, c in gdf.items()}
        self.gpostings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for i, g in enumerate(grams):
            vec = {k: v * self.gidf[k] for k, v in g.items()}
            norm = math.sqrt(sum(x * x for x in vec.values())) or 1.0
            for k in sorted(vec):
                self.gpostings[k].append((i, vec[k] / norm))

    def correct(self, term: str) -> str | None:
        """A known term one edit away from an unknown one (the most common such term), else None."""
        if term in self.vocab or term in self.related or len(term) < 4 or term.isdigit():
            return None
        found: set[str] = set()
        for d in deletes(term):
            found.update(self.spell.get(d, ()))
        if not found:
            return None
        return max(sorted(found), key=lambda t: self.df.get(t, 0))

    def query_terms(self, question: str, history: Sequence[str] = ()) -> dict[str, float]:
        """Term -> weight for a question; words of the history lines join at HISTORY_WEIGHT."""
        weights = self._weights(question)
        for line in history:
            for t, w in self._weights(line).items():
                if t not in weights and t != SLOT:
                    weights[t] = w * HISTORY_WEIGHT
        return weights

    def _weights(self, text: str) -> dict[str, float]:
        weights: dict[str, float] = {}

        def put(term: str, weight: float) -> None:
            weights[term] = max(weights.get(term, 0.0), weight)

        for word in words(text):
            t = stem(word)
            base = STOPWORD_WEIGHT if is_stopword(t) or t in self.light else 1.0
            if t in self.vocab or t in self.related:
                if SURFACE + word in self.vocab:
                    put(SURFACE + word, SURFACE_WEIGHT)
            else:
                fixed = self.correct(t)
                if fixed is None:
                    if SLOT in self.vocab:
                        put(SLOT, SLOT_WEIGHT)
                    continue
                t, base = fixed, base * CORRECTED_WEIGHT
            if t in self.vocab:
                put(t, base)
            for r in self.related.get(t, ()):
                put(r, RELATED_WEIGHT * base)
        if SLOT in self.vocab and any(self.unknown(w) for w in shortnames(text)):
            put(SLOT, SHORTNAME_WEIGHT)
        return {t: w for t, w in weights.items() if t in self.vocab}

    def unknown(self, word: str) -> bool:
        """True for a word the index neither knows nor can correct to one it knows."""
        t = stem(word.lower())
        return t not in self.vocab and t not in self.related and self.correct(t) is None

    def char_cosine(self, question: str) -> dict[int, float]:
        q = _char_grams(terms(question))
        vec = {k: v * self.gidf[k] for k, v in q.items() if k in self.gidf}
        norm = math.sqrt(sum(x * x for x in vec.values()))
        scores: dict[int, float] = defaultdict(float)
        if not norm:
            return scores
        for k, v in vec.items():
            for i, x in self.gpostings[k]:
                scores[i] += v / norm * x
        return scores

    def search(self, question: str, history: Sequence[str] = (), fused_docs: bool = False) -> list[tuple[Entry, float]]:
        """Every key that matches, best first, with its fused score (deterministic order on ties). With an
        embedder, each key's best document cosine (SEMANTIC_WEIGHT) joins its lexical score; fused_docs: each
        key's entry (a fact's answer) is that of its best document by the same fused score, not by words alone."""
        weights = self.query_terms(question, history)
        words = self.words.scores(weights)
        chars = self.char_cosine(question)  # spelling help for the question only
        word_scale = DOC_WEIGHT / (max(words.values(), default=0.0) or 1.0)
        best = [0.0] * len(self.keys)
        best_doc = [-1] * len(self.keys)
        doc_scores: dict[int, float] = {}
        keep_docs = fused_docs and self.vectors is not None  # only the fusion by meaning reads them
        key_of = self.key_of
        for i in sorted(chars.keys() | words.keys()):
            s = word_scale * words.get(i, 0.0) + CHAR_WEIGHT * chars.get(i, 0.0)
            if keep_docs:
                doc_scores[i] = s
            j = key_of[i]
            if s > best[j]:
                best[j], best_doc[j] = s, i
        pooled = self.pooled.scores(weights)
        pooled_scale = POOLED_WEIGHT / (max(pooled.values(), default=0.0) or 1.0)
        for j, p in pooled.items():
            best[j] += pooled_scale * p
        if self.vectors is not None:
            best, best_doc = self._semantic(question, best, best_doc, doc_scores if keep_docs else None)
        ranked = sorted((-s, self.keys[j].key, j) for j, s in enumerate(best) if s > 0 and j != self.none_key)
        return [(self.docs[best_doc[j]].entry if best_doc[j] >= 0 else self.keys[j], -s) for s, _, j in ranked]

    def _semantic(self, question: str, best: list[float], best_doc: list[int],
                  doc_scores: dict[int, float] | None = None) -> tuple[list[float], list[int]]:
        """The lexical scores scaled to the best key's 1.0, plus SEMANTIC_WEIGHT x each key's best cosine.
        Each key stands on its best document by words (doc_scores None) or by words and meaning."""
        import numpy as np

        # elementwise, not a BLAS call: BLAS threads would fight llama.cpp's still-spinning ones for the CPUs
        sims = (self.vectors * self.embedder.embed_question(question)).sum(axis=1)
        top = max((s for j, s in enumerate(best) if j != self.none_key), default=0.0) or 1.0
        scores = np.asarray(best) / top
        key_of = np.asarray(self.key_of)
        cos = np.full(len(self.keys), -1.0)
        np.maximum.at(cos, key_of, sims)
        weight = SEMANTIC_WEIGHT if self.semantic_weight is None else self.semantic_weight
        fused = scores + weight * np.clip(cos, 0.0, None)
        if doc_scores is None:
            by = sims  # a key found only by meaning stands on its closest document
            docs = list(best_doc)
        else:
            lexical = np.zeros(len(self.docs))
            lexical[list(doc_scores)] = list(doc_scores.values())
            by = lexical / top + weight * np.clip(sims, 0.0, None)
            docs = [-1] * len(self.keys)
        order = np.lexsort((-by, key_of))
        first = order[np.r_[True, key_of[order][1:] != key_of[order][:-1]]]
        for i in first:
            if docs[key_of[i]] < 0:
                docs[key_of[i]] = int(i)
        return [float(x) for x in fused], docs


# -- documents -------------------------------------------------------------------------------------------


def embed_text(text: str) -> str:
    """A document's text as the embedder reads it: slots as their bare names ("tell {name} {msg}" -> "tell name
    msg"), which read as words where braces would not."""
    return " ".join(_SLOT.sub(r"\1", text).split())


def _neutral(phrase: str) -> str:
    """A bank phrasing with its slots as terms: {time}, {dur}, {ref} as the term their values become in a
    question ("5:45am" -> "zslottime"), the others ({name}, {box}) as SLOT, which unknown words become."""
    return " ".join(_SLOT.sub(_slot_term, phrase).split())


def _slot_term(m: re.Match[str]) -> str:
    kind = m.group(1)
    return f" {SLOT_PREFIX}{kind} " if kind in TYPED_SLOTS else f" {SLOT} "


def build_docs(
    command_line: Callable[[Command], str], relay_line: str, fact_line: Callable[[Topic, FactItem], str]
) -> list[Doc]:
    """Documents from the catalog, the facts and the question bank (when its loader is installed)."""
    catalog = load_catalog()
    docs: list[Doc] = []

    def add(entry: Entry, text: str, group: str = "", phrase: str = "") -> None:
        t = tuple(terms(text, surface=True))
        if t:
            docs.append(Doc(entry, t, group, phrase))

    entries: dict[str, Entry] = {}
    for cmd in catalog.commands:
        entry = entries[cmd.name] = Entry("command", cmd.name, command_line(cmd))
        names = " ".join(n[1:] for n in cmd.names)
        args = re.sub(r"[<>\[\]|]", " ", cmd.usage[len(cmd.name):])
        text = f"{names} {cmd.description} {args}"
        add(entry, text, phrase=" ".join(text.split()))
    relay = entries["relay"] = Entry("relay", "relay", relay_line)
    add(relay, f"relay {catalog.relay_description}", phrase=f"relay {catalog.relay_description}")
    plain: dict[str, Entry] = {}
    for word, what in catalog.plain_words.items():
        plain[word] = Entry("fact", word, f"{word} (plain word, no slash): {what}")
        add(plain[word], f"{word} {what}", phrase=f"{word} {what}")
    for topic in load_facts().topics.values():
        for i, item in enumerate(topic.items):
            entry = Entry("fact", topic.id, fact_line(topic, item))
            for j, ask in enumerate(item.asks):
                add(entry, ask, f"fact:{topic.id}:{i}:{j}", ask)
    for name, phrases in load_glossary().items():
        for j, phrase in enumerate(phrases):
            add(entries[name], phrase, f"glossary:{name}:{j}", phrase)
    for target, phrase, group in _bank_phrasings(catalog.plain_words):
        add(entries.get(target) or plain.get(target) or NO_ENTRY, _neutral(phrase), group, phrase)
    return docs


def tuning_key(doc: Doc) -> str:
    """What a document is a phrasing of, for tuning the embedding model (catalog-v9): its entry's key, and for
    a fact ask its topic's item ("sync#2"), since a fact's line is chosen by item and asks of one topic's
    other items must stay apart. "" for small talk."""
    if doc.entry.key and doc.group.startswith("fact:"):
        return f"{doc.entry.key}#{doc.group.split(':')[2]}"
    return doc.entry.key


def _bank_phrasings(plain_words: Iterable[str]) -> list[tuple[str, str, str]]:
    """(target, phrasing, template group) from the question bank: target is a command name, "relay", a plain word or "".

    An intent about no command points at the plain word its answer teaches ("send plain ping"); small talk
    and general questions point nowhere (""): they are indexed so that "hello" matches its own kind rather
    than a command. Empty while the bank's loader (meshai_common.meshmaster.intents) is not installed.
    """
    try:
        from meshai_common.meshmaster.intents import load_intents, load_phrasing
    except ImportError:
        return []
    targets: dict[str, str] = {}
    for intent in load_intents():
        target = intent.command or ("relay" if intent.id == "relay" else _plain_word(intent, plain_words))
        targets[intent.id] = target or ""
    out = []
    for i in load_intents():
        out.extend((targets[i.id], p, f"{i.id}:a{n}") for n, p in enumerate(i.actions))
        out.extend((targets[i.id], p, f"{i.id}:q{n}") for n, p in enumerate(i.asks))
    phrasing = load_phrasing()
    for k, contrast in enumerate(getattr(phrasing, "contrasts", ())):
        for intent_id, asks in contrast.asks.items():
            out.extend((targets.get(intent_id, ""), a, f"{intent_id}:c{k}:{j}") for j, a in enumerate(asks))
    for k, qa in enumerate(phrasing.general):
        out.extend(("", a, f"general:{k}:{j}") for j, a in enumerate(qa.asks))
    return out


@lru_cache(maxsize=4)
def load_glossary(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """glossary.yaml: canonical command -> everyday phrases; a bad entry raises ConfigError naming it."""
    p = Path(path) if path else GLOSSARY_FILE
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the glossary: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("glossary"), dict):
        raise ConfigError(f"{p}: expected a mapping with a 'glossary' mapping")
    catalog = load_catalog()
    out: dict[str, tuple[str, ...]] = {}
    for name, phrases in doc["glossary"].items():
        cmd = catalog.get(str(name))
        if cmd is None or cmd.name != name:
            raise ConfigError(f"{p}: glossary.{name}: not a canonical command name of the catalog")
        if not isinstance(phrases, list) or not phrases or not all(isinstance(x, str) and x.strip() for x in phrases):
            raise ConfigError(f"{p}: glossary.{name}: expected a non-empty list of phrases")
        for x in phrases:
            if unknown_slash_words(x):
                raise ConfigError(f"{p}: glossary.{name}: {x!r} names an unknown command")
        out[name] = tuple(phrases)
    return out


def frame_terms() -> frozenset[str]:
    """Terms of the bank's question frames ("what's the command to {a}?"): they say how, not what, is asked."""
    try:
        from meshai_common.meshmaster.intents import load_phrasing
    except ImportError:
        return frozenset()
    return frozenset(t for f in load_phrasing().frames for t in terms(f.replace("{a}", " ")))


def _plain_word(intent: Any, plain_words: Iterable[str]) -> str | None:
    answers = " ".join(intent.answers.values()).lower()
    return next((w for w in plain_words if re.search(rf"\b{re.escape(w)}\b", answers)), None)
