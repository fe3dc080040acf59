import json

import numpy as np
import pytest

from alaya.data.dedup.lsh import candidate_pairs, choose_kept, clusters
from alaya.data.dedup.minhash import MinHasher, band_keys, jaccard, lsh_params
from alaya.data.documents import read_texts
from conftest import CORPUS


def _texts():
    texts = [t for t in read_texts(["builtin:demo-bilingual"]) if len(t) > 120]  # English and Chinese
    texts += [t for t in read_texts(["builtin:demo"]) if 1000 < len(t) < 20000][:30]  # long English and code
    assert len(texts) > 40
    return texts


def _edit(text: str, fraction: float, rng) -> str:
    chars = list(text)
    for _ in range(int(len(chars) * fraction)):
        chars[rng.integers(len(chars))] = "z"
    return "".join(chars)


def test_signature_agreement_estimates_exact_jaccard_for_english_and_chinese():
    h = MinHasher(num_perm=256)
    rng = np.random.default_rng(0)
    errors = []
    for t in _texts()[:40]:
        u = _edit(t, rng.uniform(0, 0.06), rng)
        sig = h.signatures([t, u])
        errors.append(float((sig[0] == sig[1]).mean()) - jaccard(h.shingles(t), h.shingles(u)))
    assert abs(np.mean(errors)) < 0.02  # unbiased
    assert np.std(errors) < 0.06  # ~ sqrt(J(1-J)/256)


def test_shingles_follow_the_script_and_formatting_does_not_matter():
    h = MinHasher(ngram=2, char_ngram=2)
    assert len(h.shingles("alpha beta gamma")) == 2  # word 2-grams
    assert len(h.shingles("你好世界")) == 3  # character 2-grams, no word segmenter
    assert np.array_equal(h.shingles("Alpha  BETA\n gamma"), h.shingles("alpha beta gamma"))
    sig = h.signatures(["same text here", "Same   text here", "", "   "])
    assert np.array_equal(sig[0], sig[1])
    assert (sig[2] == 0xFFFFFFFF).all() and (sig[3] == 0xFFFFFFFF).all()
    # a batch gives the same signatures as one document at a time
    texts = _texts()[:10]
    assert np.array_equal(h.signatures(texts), np.vstack([h.signatures([t]) for t in texts]))


def test_lsh_params_and_candidates():
    b, r = lsh_params(0.8, 128)
    assert b * r <= 128 and 0.7 < (1 / b) ** (1 / r) < 0.85  # the S-curve's midpoint sits near the threshold
    keys = np.array([[1, 5], [1, 6], [2, 6], [3, 7]], dtype=np.uint64)
    assert candidate_pairs(keys).tolist() == [[0, 1], [1, 2]]
    labels = clusters(4, np.array([[0, 1], [1, 2]]))
    assert labels[0] == labels[1] == labels[2] != labels[3]
    assert choose_kept(labels, "first").tolist() == [0, 0, 0, 3]
    assert choose_kept(labels, "longest", lengths=[5, 9, 9, 1]).tolist() == [1, 1, 1, 3]
    assert choose_kept(labels, "quality", quality=[0.1, 0.2, 0.9, 0.5]).tolist() == [2, 2, 2, 3]


@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not present at {CORPUS}")
def test_band_keys_find_near_duplicates_of_real_documents():
    docs = [json.loads(l)["text"] for l in open(CORPUS / "en-encyclopedia.jsonl", encoding="utf-8")][:200]
    docs += [json.loads(l)["text"] for l in open(CORPUS / "zh-news.jsonl", encoding="utf-8")][:100]
    rng = np.random.default_rng(1)
    n = len(docs)
    texts = docs + [_edit(t, 0.001, rng) for t in docs]  # one character in a thousand: Jaccard about 0.9
    h = MinHasher()
    b, r = lsh_params(0.8, 128)
    pairs = {tuple(p) for p in candidate_pairs(band_keys(h.signatures(texts), b, r)).tolist()}
    assert sum((i, n + i) in pairs for i in range(n)) >= 0.95 * n
    assert len(pairs) < 3 * n  # few unrelated candidates
