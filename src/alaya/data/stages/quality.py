"""Quality: a trained binary classifier scores every document (``meta.quality``, the probability that it
is fit); documents are kept by threshold, or selectively: kept with probability ``score ** alpha`` from a
generator seeded by the document id (the same choice on every run and every engine)."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence


from alaya.data.classifier import TextClassifier, binary_metrics, split_held_out
from alaya.data.documents import Document, Quarantine, read_documents, stable_fraction
from alaya.data.stages.base import DocumentStage


def train_quality(positive: Sequence[str], negative: Sequence[str], output: str, held_out: float = 0.2,
                  seed: int = 0, max_docs: int | None = None) -> dict:
    """Train on fit (positive) and unfit (negative) texts; print and save held-out precision/recall/AUC."""
    q = Quarantine()
    pos = [d.text for d in read_documents(positive, q)][:max_docs]
    neg = [d.text for d in read_documents(negative, q)][:max_docs]
    if not pos or not neg:
        raise ValueError(f"need positive and negative documents, got {len(pos)} and {len(neg)}")
    texts, labels = pos + neg, ["fit"] * len(pos) + ["unfit"] * len(neg)
    train_idx, test_idx = split_held_out(len(texts), held_out, seed)
    t0 = time.perf_counter()
    model = TextClassifier.train([texts[i] for i in train_idx], [labels[i] for i in train_idx], seed=seed)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = model.scores([texts[i] for i in test_idx])[:, model.classes.index("fit")]
    score_s = time.perf_counter() - t0
    metrics = binary_metrics([1 if labels[i] == "fit" else 0 for i in test_idx], p)
    metrics.update({"positive": len(pos), "negative": len(neg), "quarantined": q.count,
                    "train_docs_per_s": round(len(train_idx) / train_s, 1),
                    "score_docs_per_s": round(len(test_idx) / max(score_s, 1e-9), 1)})
    model.metrics = metrics
    model.save(output)
    return metrics


def _draw(doc_id: str, seed: int) -> float:
    return stable_fraction(f"{seed}:{doc_id}")


class QualityStage(DocumentStage):
    name = "quality"

    def __init__(self, model: str, mode: str = "threshold", threshold: float = 0.5, alpha: float = 1.0,
                 seed: int = 0, langs: list[str] | None = None):
        if mode not in ("threshold", "selective"):
            raise ValueError(f"quality mode must be threshold or selective, got {mode!r}")
        self.model_path, self.mode, self.threshold, self.alpha, self.seed = model, mode, threshold, alpha, seed
        self.langs = None if langs is None else set(langs)  # score only these languages (web text); others pass
        self._model = None

    def setup(self) -> None:
        if self._model is None:
            self._model = TextClassifier.load(self.model_path)
            self._fit = self._model.classes.index("fit") if "fit" in self._model.classes else 1

    def apply(self, doc: Document):
        if self.langs is not None and doc.meta.get("lang") not in self.langs:
            return doc, None
        self.setup()
        score = float(self._model.scores([doc.text])[0, self._fit])
        doc = replace(doc, meta={**doc.meta, "quality": round(score, 4)})
        if self.mode == "threshold":
            return (doc, None) if score >= self.threshold else (None, "quality_below_threshold")
        keep = _draw(doc.id, self.seed) < score ** self.alpha
        return (doc, None) if keep else (None, "quality_not_selected")
