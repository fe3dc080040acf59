import json

import numpy as np
import pytest

from alaya.data.dedup.lsh import candidate_pairs, choose_kept, clusters
from alaya.data.dedup.minhash import MinHasher, band_keys, jaccard, lsh_params
from alaya.data.documents import read_documents, read_texts
from conftest import CORPUS


def _texts():
    texts = [t for t in read_texts(["builtin:demo-bilingual"]) if len(t) > 120]  # English and Chinese
    texts += [d.text for d in read_documents(["builtin:demo"])
              if d.meta["lang"] in ("en", "code") and 1000 < len(d.text) < 20000][:30]  # long English and code
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
    # batches bounded by characters (long documents) give the same signatures
    assert np.array_equal(h.signatures(texts, batch_chars=3000), h.signatures(texts))


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


# ---- the compiled kernels against plain-Python statements of the same definitions ----

from hypothesis import example, given, settings, strategies as st  # noqa: E402

from alaya.data.dedup import kernels  # noqa: E402

M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _ref_shingles(text: str, ngram: int, char_ngram: int) -> list[int]:
    t = kernels.exact_fold(text.replace("\x00", " "))
    wt = kernels.word_table()
    cjk_ranges = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x3040, 0x30FF), (0xAC00, 0xD7AF))
    n_cjk = sum(any(lo <= ord(c) <= hi for lo, hi in cjk_ranges) for c in t)
    n_word = sum(ord(c) >= 0x3000 or bool(wt[ord(c)]) for c in t)
    if n_cjk > 0 and n_cjk > 0.3 * max(n_word, 1):
        units, k = [_mix64(ord(c)) for c in t if ord(c) > 32], char_ngram
    else:
        def is_word(c):
            c = ord(c)
            return bool(wt[c]) if c < 0x3000 else c > 0x303F and (c < 0xFF00 or c > 0xFF20)
        units, k, h, n = [], ngram, 0, 0
        for c in t + " ":
            if is_word(c) and c != " ":
                h, n = (h * 1000003 + ord(c)) & M64, n + 1
            elif n:
                units.append((h + 0x51ED27 * n) & M64)
                h, n = 0, 0
    out = []
    for j in range(max(1, len(units) - k + 1) if units else 0):
        h = 0
        for u in units[j : j + k]:
            h = (h * 0x100000001B3 + u) & M64
        out.append(h)
    return out


_alphabet = st.one_of(
    st.characters(codec="utf-8", exclude_characters="\x00"),
    st.sampled_from(list("abc XYZ_9 ,.\n\t…℃ⅡßﬁＡ，。你好世界한국\u0301\u0308\u1100\u1161\u11a8\u3131\u314f´¨𝐀①")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(_alphabet, max_size=40), min_size=1, max_size=6))
@example(["\u1100\u1161\u11a8", "\uac00\u11a8"])  # Hangul jamo compose into syllables
@example(["e\u0301", "A\u0308b"])  # decomposed accents compose
@example(["\u3131\u314f", "x\x00y"])  # compatibility jamo; a NUL inside a text
@example(["……℃ Ⅱ ß ﬁ ＡＢＣ，", ""])
def test_compiled_folding_equals_unicodedata_nfkc_then_casefold(texts):
    got = kernels.fold_batch(texts).tobytes().decode("utf-32-le", "surrogatepass")
    assert got == "\x00".join(kernels.exact_fold(t.replace("\x00", " ")) for t in texts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(_alphabet, max_size=60), min_size=1, max_size=5), st.integers(1, 4), st.integers(1, 4))
def test_compiled_shingles_equal_the_plain_python_definition(texts, ngram, char_ngram):
    from alaya.data.dedup.minhash import batch_shingles

    h, d = batch_shingles(texts, ngram, char_ngram)
    for i, t in enumerate(texts):
        assert h[d == i].tolist() == _ref_shingles(t, ngram, char_ngram)


def test_compiled_signatures_equal_the_plain_python_definition():
    texts = _texts()[:6] + ["short", "", "a b c d e f g h i j k l m n o p q r s t u v w x y z"]
    P, seed = 16, 3
    h = MinHasher(num_perm=P, seed=seed)
    salt = _mix64(seed)
    got = h.signatures(texts)
    for i, t in enumerate(texts):
        sig = [0xFFFFFFFF] * P
        for s in _ref_shingles(t, 5, 5):
            x = _mix64(s ^ salt)
            b = ((x >> 32) * P) >> 32
            sig[b] = min(sig[b], x & 0xFFFFFFFF)
        src = list(sig)
        if any(v != 0xFFFFFFFF for v in src):
            for c in range(P):
                if src[c] == 0xFFFFFFFF:
                    for attempt in range(1, 200):
                        cand = ((_mix64((c * 0x9E3779B1 + attempt + salt) & M64) >> 32) * P) >> 32
                        if src[cand] != 0xFFFFFFFF:
                            sig[c] = src[cand]
                            break
        assert got[i].tolist() == sig, i
