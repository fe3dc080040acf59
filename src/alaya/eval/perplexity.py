"""Perplexity on held-out text (any input the document reader takes): token perplexity, bits per byte
(comparable across tokenizers) and word perplexity, by language when documents carry ``meta.lang``.
Texts are scored in rolling windows of the model's context, as lm-eval's ``loglikelihood_rolling``."""
from __future__ import annotations

import math
import re

from alaya.data.documents import Quarantine, read_documents
from alaya.eval.scorer import Scorer, bits_per_byte
from alaya.eval.sources import EvalDataError

WORD = re.compile(r"\S+")


def read_heldout(paths: list[str], limit: int | None) -> dict[str, list]:
    """Documents by language (``meta.lang``, else ``all``), at most ``limit`` of each."""
    q = Quarantine()
    by_lang: dict[str, list] = {}
    for doc in read_documents(paths, q):
        if not doc.text.strip():
            continue
        lang = str(doc.meta.get("lang") or "all")
        rows = by_lang.setdefault(lang, [])
        if limit is None or len(rows) < limit:
            rows.append(doc)
    if q.count:
        r = q.records[0]
        raise EvalDataError(f"{r.file}:{r.line}: {r.reason} ({q.count} malformed records in all)")
    if not by_lang:
        raise EvalDataError(f"{', '.join(paths)}: no documents with text")
    return dict(sorted(by_lang.items()))


def score_documents(scorer: Scorer, docs: list, desc: str) -> list[dict]:
    out = []
    for doc, (ll, n) in zip(docs, scorer.rolling([d.text for d in docs], desc)):
        n_bytes, n_words = len(doc.text.encode("utf-8")), len(WORD.findall(doc.text))
        out.append({"doc_id": doc.id, "logprob": ll, "tokens": n, "bytes": n_bytes, "words": n_words,
                    "bits_per_byte": bits_per_byte(ll, n_bytes)})
    return out


def aggregate(samples: list[dict]) -> dict[str, float]:
    ll = sum(s["logprob"] for s in samples)
    tokens = sum(s["tokens"] for s in samples)
    n_bytes = sum(s["bytes"] for s in samples)
    words = sum(s["words"] for s in samples)
    bpb = bits_per_byte(ll, n_bytes)
    return {"token_perplexity": _exp(-ll / max(tokens, 1)), "bits_per_byte": bpb,
            "byte_perplexity": 2.0 ** min(bpb, 1000.0), "word_perplexity": _exp(-ll / max(words, 1)),
            "bytes_per_token": n_bytes / max(tokens, 1)}


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")
