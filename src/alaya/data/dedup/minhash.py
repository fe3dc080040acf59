"""MinHash signatures as numpy arrays, a batch of documents at a time, with no Python object per shingle.

Shingles: a batch of normalised texts is joined into one array of code points. English and code are
shingled by ``ngram`` consecutive words (word boundaries found on the array, word hashes from prefix sums
of a polynomial hash, uint64 wrapping arithmetic); Chinese (and Japanese/Korean) text, which has no
spaces between words, by ``char_ngram`` consecutive characters. Each shingle is one 64-bit hash.

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

import re
import unicodedata

import numpy as np

EMPTY = np.uint32(0xFFFFFFFF)
_BASE = np.uint64(1000003)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_U64 = np.uint64


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


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _U64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _word_table() -> np.ndarray:
    """Which code points below U+3000 are word characters (letters, digits, marks, underscore)."""
    table = np.zeros(0x3000, dtype=bool)
    for cp in range(0x3000):
        ch = chr(cp)
        table[cp] = ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")
    return table


_WORD_TABLE: np.ndarray | None = None
_INV_CACHE: dict[int, np.ndarray] = {}


def _inverse_powers(n: int) -> np.ndarray:
    """B^-k mod 2^64 for k = 0..n (B is odd, so the inverse exists)."""
    size = 1 << max(12, int(n).bit_length())
    if size not in _INV_CACHE:
        b, inv = int(_BASE), int(_BASE)
        for _ in range(7):  # Newton's iteration doubles the correct low bits each time
            inv = (inv * (2 - b * inv)) % (1 << 64)
        out = np.empty(size + 1, dtype=np.uint64)
        out[0] = 1
        with np.errstate(over="ignore"):
            np.cumprod(np.full(size, _U64(inv), dtype=np.uint64), out=out[1:])
        _INV_CACHE[size] = out
    return _INV_CACHE[size]


def _powers(n: int) -> np.ndarray:
    out = np.empty(n + 1, dtype=np.uint64)
    out[0] = 1
    with np.errstate(over="ignore"):
        np.cumprod(np.full(n, _BASE, dtype=np.uint64), out=out[1:])
    return out


def _combine(units: np.ndarray, doc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of k consecutive units that lie in one document; documents with fewer than k units get one
    shingle of all their units."""
    n = len(units)
    out_h, out_d = [], []
    if n >= k:
        m = n - k + 1
        h = np.zeros(m, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i in range(k):
                h = h * _U64(0x100000001B3) + units[i : i + m]
        same = doc[: m] == doc[k - 1 :]
        out_h.append(h[same])
        out_d.append(doc[: m][same])
    if n:
        counts = np.bincount(doc)
        short = np.nonzero((counts > 0) & (counts < k))[0]
        if len(short):
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            for d in short:  # rare: documents shorter than one shingle
                h = _U64(0)
                with np.errstate(over="ignore"):
                    for u in units[starts[d] : starts[d] + counts[d]]:
                        h = h * _U64(0x100000001B3) + u
                out_h.append(np.array([h], dtype=np.uint64))
                out_d.append(np.array([d], dtype=np.int64))
    if not out_h:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_h), np.concatenate(out_d)


def _word_shingles(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    joined = "\x00".join(texts)
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    n = len(cps)
    if n == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    small = cps < 0x3000
    isword = np.where(small, _WORD_TABLE[np.minimum(cps, 0x2FFF)], (cps > 0x303F) & ((cps < 0xFF00) | (cps > 0xFF20)))
    edges = np.diff(np.concatenate([[False], isword, [False]]).astype(np.int8))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    if len(starts) == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    c64 = cps.astype(np.uint64)
    pw = _powers(n)
    with np.errstate(over="ignore"):
        S = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(c64 * pw[n - 1 - np.arange(n)], out=S[1:])  # S[i] = sum_{j<i} cp_j * B^(n-1-j)
        inv = _inverse_powers(n)
        words = (S[ends] - S[starts]) * inv[n - ends] + _U64(0x51ED27) * (ends - starts).astype(np.uint64)
    sep = np.nonzero(cps == 0)[0]
    doc = np.searchsorted(sep, starts)  # separators before the word = its document index
    return _combine(words, doc.astype(np.int64), ngram)


def _char_shingles(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    joined = "\x00".join(texts)
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    doc = np.cumsum(cps == 0)
    keep = cps > 32  # drop spaces, control characters and the separators
    units = _splitmix64(cps[keep].astype(np.uint64))
    return _combine(units, doc[keep].astype(np.int64), ngram)


_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x3040, 0x30FF), (0xAC00, 0xD7AF))


def _fold(texts: list[str]) -> str:
    """The batch joined by NUL, NFKC-normalised (skipped when already normal) and case-folded."""
    joined = "\x00".join(t.replace("\x00", " ") for t in texts)
    if not unicodedata.is_normalized("NFKC", joined):
        joined = unicodedata.normalize("NFKC", joined)
    return joined.casefold()


def batch_shingles(texts: list[str], ngram: int = 5, char_ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """All shingle hashes of a batch (with repeats) and the index of the document of each.

    Whitespace needs no collapsing here: words are found by word characters, and character shingles skip
    spaces. A document is shingled by characters when CJK characters are more than 30 % of its word
    characters (counted on the code-point array, no Python loop per character).
    """
    global _WORD_TABLE
    if _WORD_TABLE is None:
        _WORD_TABLE = _word_table()
    joined = _fold(texts)
    norm = joined.split("\x00")
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    cjk_mask = np.zeros(len(cps), dtype=bool)
    for lo, hi in _CJK_RANGES:
        cjk_mask |= (cps >= lo) & (cps <= hi)
    small = cps < 0x3000
    wordish = np.where(small, _WORD_TABLE[np.minimum(cps, 0x2FFF)], True) & (cps != 0)
    starts = np.concatenate([[0], np.nonzero(cps == 0)[0] + 1])
    n_cjk = np.add.reduceat(cjk_mask, starts) if len(cps) else np.zeros(len(texts))
    n_word = np.add.reduceat(wordish, starts) if len(cps) else np.zeros(len(texts))
    if len(cps) and starts[-1] == len(cps):  # reduceat at an empty last document reads one element too far
        n_cjk[-1] = n_word[-1] = 0
    cjk = (n_cjk > 0) & (n_cjk > 0.3 * np.maximum(n_word, 1))
    parts_h, parts_d = [], []
    for mask, fn, k in ((~cjk, _word_shingles, ngram), (cjk, _char_shingles, char_ngram)):
        idx = np.nonzero(mask)[0]
        if len(idx):
            h, d = fn([norm[i] for i in idx], k)
            parts_h.append(h)
            parts_d.append(idx[d])
    if not parts_h:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    return np.concatenate(parts_h), np.concatenate(parts_d)


class MinHasher:
    def __init__(self, num_perm: int = 128, ngram: int = 5, char_ngram: int = 5, seed: int = 1):
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        self.num_perm, self.ngram, self.char_ngram, self.seed = num_perm, ngram, char_ngram, seed
        self._salt = _splitmix64(np.array([seed], dtype=np.uint64))[0]

    def shingles(self, text: str) -> np.ndarray:
        """The document's distinct shingle hashes (sorted), for exact Jaccard."""
        h, _ = batch_shingles([text], self.ngram, self.char_ngram)
        return np.unique(h)

    def signatures(self, texts: list[str], batch: int = 512) -> np.ndarray:
        """[len(texts), num_perm] uint32; a document without shingles gets all 0xFFFFFFFF (never matched)."""
        out = np.full((len(texts), self.num_perm), EMPTY, dtype=np.uint32)
        for i in range(0, len(texts), batch):
            chunk = texts[i : i + batch]
            h, d = batch_shingles(chunk, self.ngram, self.char_ngram)
            if len(h):
                out[i : i + len(chunk)] = self._oph(h, d, len(chunk))
        return out

    def _oph(self, h: np.ndarray, d: np.ndarray, n_docs: int) -> np.ndarray:
        P = self.num_perm
        with np.errstate(over="ignore"):
            x = _splitmix64(h ^ self._salt)
        bins = ((x >> _U64(32)) * _U64(P)) >> _U64(32)
        vals = (x & _U64(0xFFFFFFFF)).astype(np.uint32)
        sig = np.full(n_docs * P, EMPTY, dtype=np.uint32)
        np.minimum.at(sig, d * P + bins.astype(np.int64), vals)
        sig = sig.reshape(n_docs, P)
        filled = sig != EMPTY
        has_any = filled.any(axis=1)
        rows, cols = np.nonzero(~filled & has_any[:, None])
        if len(rows):
            src = sig.copy()
            todo = np.arange(len(rows))
            for attempt in range(1, 200):  # optimal densification: probe bins by a seeded hash of (bin, attempt)
                if not len(todo):
                    break
                with np.errstate(over="ignore"):
                    probe = _splitmix64(cols[todo].astype(np.uint64) * _U64(0x9E3779B1) + _U64(attempt) + self._salt)
                cand = (((probe >> _U64(32)) * _U64(P)) >> _U64(32)).astype(np.int64)
                ok = filled[rows[todo], cand]
                sig[rows[todo[ok]], cols[todo[ok]]] = src[rows[todo[ok]], cand[ok]]
                todo = todo[~ok]
            for t in todo:  # practically never: fall back to the next filled bin to the right
                r, c = rows[t], cols[t]
                nxt = np.nonzero(filled[r])[0]
                sig[r, c] = src[r, nxt[np.searchsorted(nxt, c) % len(nxt)]]
        return sig


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two shingle-hash sets (sorted unique arrays)."""
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


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
    """[n, bands] uint64: one hash per band of ``rows`` signature values (band index mixed in).

    Band by band, so the extra memory is one band's columns, not a 64-bit copy of all signatures."""
    n = len(signatures)
    keys = np.empty((n, bands), dtype=np.uint64)
    for b in range(bands):
        k = np.full(n, b + 1, dtype=np.uint64)
        for r in range(rows):
            k = _splitmix64(k ^ signatures[:, b * rows + r].astype(np.uint64))
        keys[:, b] = k
    return keys
