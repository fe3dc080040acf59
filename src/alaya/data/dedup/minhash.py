"""MinHash signatures as numpy arrays, a batch of documents at a time, with no Python object per shingle.

Shingles: a batch is joined into one array of code points, folded (NFKC then case folding) and shingled
by compiled loops (``kernels.py``, numba), one pass each. English and code are shingled by ``ngram``
consecutive words (a word is a run of word characters; its hash is the polynomial ``h·1000003 + cp`` over
its code points plus its length, uint64 wrapping arithmetic); Chinese (and Japanese/Korean) text, which
has no spaces between words, by ``char_ngram`` consecutive characters (spaces skipped). A shingle's hash
combines its units' hashes polynomially (rolling). A document shorter than one shingle has one shingle of
all its units.

Signatures: one-permutation hashing with optimal densification (Li, Owen & Zhang 2012; Shrivastava 2017):
each shingle hash is mixed once (splitmix64); its high bits choose one of ``num_perm`` bins, its low 32
bits are the value, and a bin keeps its minimum. A bin that no shingle reached borrows the value of a bin
chosen by a seeded probe sequence. Two documents agree in a position with probability equal to their
Jaccard similarity, as with ``num_perm`` independent permutations, at the cost of one hash per shingle
instead of ``num_perm`` (datasketch's MinHash does ``num_perm`` multiplications per shingle).

Banding (LSH): ``bands × rows ≤ num_perm`` chosen for a target threshold by minimising the weighted
false-positive and false-negative areas of the S-curve ``1 − (1 − s^r)^b`` (datasketch's rule).
"""
from __future__ import annotations

import functools
import re
import unicodedata

import numpy as np

from alaya.data.dedup import kernels

EMPTY = kernels.EMPTY
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")


def normalize_for_hash(text: str) -> str:
    """Case-folded NFKC text with runs of whitespace collapsed: formatting noise is not a difference."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def is_cjk(text: str, sample: int = 2000) -> bool:
    """Mostly Chinese/Japanese/Korean script: shingle by characters, not words."""
    head = text[:sample]
    n_cjk = len(_CJK.findall(head))
    if n_cjk == 0:
        return False
    letters = sum(1 for ch in head if ch.isalpha())
    return n_cjk / max(1, letters) > 0.3


def batch_shingles(texts: list[str], ngram: int = 5, char_ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """All shingle hashes of a batch (with repeats) and the index of the document of each.

    Whitespace needs no collapsing here: words are found by word characters, and character shingles skip
    spaces. A document is shingled by characters when CJK characters are more than 30 % of its word
    characters.
    """
    if not texts:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    return kernels.shingle_hashes(kernels.fold_batch(texts), kernels.class_table(), ngram, char_ngram)


class MinHasher:
    def __init__(self, num_perm: int = 128, ngram: int = 5, char_ngram: int = 5, seed: int = 1):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        self.num_perm, self.ngram, self.char_ngram, self.seed = num_perm, ngram, char_ngram, seed
        self._salt = np.uint64(kernels.splitmix64(np.uint64(seed)))

    def shingles(self, text: str) -> np.ndarray:
        """The document's distinct shingle hashes (sorted), for exact Jaccard."""
        h, _ = batch_shingles([text], self.ngram, self.char_ngram)
        return np.unique(h)

    def signatures(self, texts: list[str], batch: int = 512, batch_chars: int = 1 << 23) -> np.ndarray:
        """[len(texts), num_perm] uint32; a document without shingles gets all 0xFFFFFFFF (never matched).

        Documents go through the kernels in batches of at most ``batch`` documents and about
        ``batch_chars`` characters (the kernels hold ~30 bytes per character of a batch), so a few
        very long documents do not make one huge batch."""
        out = np.full((len(texts), self.num_perm), EMPTY, dtype=np.uint32)
        i = 0
        while i < len(texts):
            j, chars = i, 0
            while j < len(texts) and j - i < batch and (j == i or chars + len(texts[j]) <= batch_chars):
                chars += len(texts[j])
                j += 1
            h, d = batch_shingles(texts[i:j], self.ngram, self.char_ngram)
            if len(h):
                out[i:j] = self._oph(h, d, j - i)
            i = j
        return out

    def _oph(self, h: np.ndarray, d: np.ndarray, n_docs: int) -> np.ndarray:
        return kernels.oph_signatures(h, d, n_docs, self.num_perm, self._salt)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two shingle-hash sets (sorted unique arrays)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising fp_weight·FP area + fn_weight·FN area around ``threshold``."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    xs = np.linspace(0, 1, 1001)
    lo, hi = xs < threshold, xs >= threshold
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1 - (1 - xs**r) ** b
            err = fp_weight * np.trapezoid(p[lo], xs[lo]) + fn_weight * np.trapezoid(1 - p[hi], xs[hi])
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[n, bands] uint64: one hash per band of ``rows`` signature values (band index mixed in)."""
    if bands * rows > signatures.shape[1]:
        raise ValueError(f"bands x rows = {bands * rows} exceeds the signature length {signatures.shape[1]}")
    return kernels.band_hashes(np.ascontiguousarray(signatures), bands, rows)
