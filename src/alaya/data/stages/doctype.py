"""Type: news / encyclopedia / books / forum-chat / academic / others (code stays code), from metadata
where present (``meta.type``), otherwise from a classifier trained with the quality tool's classifier on
labelled documents (../shared/data/corpus is labelled by type)."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

from alaya.data.classifier import TextClassifier, split_held_out
from alaya.data.documents import Document, Quarantine, read_documents
from alaya.data.stages.base import DocumentStage

TYPES = ("news", "encyclopedia", "books", "forum", "academic", "others")
ALIASES = {"forum-chat": "forum", "chat": "forum", "forum/chat": "forum", "wiki": "encyclopedia",
           "book": "books", "paper": "academic", "other": "others"}


def canonical_type(value) -> str | None:
    if not isinstance(value, str):
        return None
    v = ALIASES.get(value.strip().lower(), value.strip().lower())
    return v if v in TYPES or v == "code" else None


def train_type(inputs: Sequence[str], output: str, held_out: float = 0.2, seed: int = 0,
               max_per_type: int | None = None) -> dict:
    q = Quarantine()
    texts, labels, per = [], [], {}
    for d in read_documents(inputs, q):
        t = canonical_type(d.meta.get("type"))
        if t is None or t == "code":
            continue
        if max_per_type and per.get(t, 0) >= max_per_type:
            continue
        per[t] = per.get(t, 0) + 1
        texts.append(d.text)
        labels.append(t)
    if len(per) < 2:
        raise ValueError(f"need documents of at least two types in meta.type, found {per}")
    train_idx, test_idx = split_held_out(len(texts), held_out, seed)
    t0 = time.perf_counter()
    model = TextClassifier.train([texts[i] for i in train_idx], [labels[i] for i in train_idx], seed=seed)
    train_s = time.perf_counter() - t0
    pred = model.predict([texts[i] for i in test_idx])
    truth = [labels[i] for i in test_idx]
    per_type = {}
    for t in sorted(set(truth)):
        idx = [k for k, y in enumerate(truth) if y == t]
        per_type[t] = round(sum(pred[k] == t for k in idx) / len(idx), 4)
    metrics = {"accuracy": round(sum(p == y for p, y in zip(pred, truth)) / len(truth), 4),
               "accuracy_by_type": per_type, "held_out": len(truth), "train_docs": len(train_idx),
               "documents_by_type": per, "train_docs_per_s": round(len(train_idx) / train_s, 1)}
    model.metrics = metrics
    model.save(output)
    return metrics


class TypeStage(DocumentStage):
    name = "type"

    def __init__(self, model: str | None = None, trust_metadata: bool = True):
        self.model_path, self.trust_metadata = model, trust_metadata
        self._model = None

    def setup(self) -> None:
        if self._model is None and self.model_path:
            self._model = TextClassifier.load(self.model_path)

    def apply(self, doc: Document):
        if doc.meta.get("lang") == "code":
            return replace(doc, meta={**doc.meta, "type": "code", "type_source": "language"}), None
        given = canonical_type(doc.meta.get("type")) if self.trust_metadata else None
        if given:
            return replace(doc, meta={**doc.meta, "type": given, "type_source": "metadata"}), None
        self.setup()
        if self._model is None:
            return replace(doc, meta={**doc.meta, "type": "others", "type_source": "default"}), None
        scores = self._model.scores([doc.text])[0]
        best = int(scores.argmax())
        return replace(doc, meta={**doc.meta, "type": self._model.classes[best], "type_score": round(float(scores[best]), 4),
                                  "type_source": "classifier"}), None
