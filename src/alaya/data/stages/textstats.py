"""Compiled (numba) counts behind the heuristic filters: words and n-gram repetition in one pass each.

* :func:`word_units` — the words of a text (maximal runs of non-whitespace, as ``str.split()`` finds
  them), each as a 64-bit hash of its code points, its length in characters, and how many words hold at
  least one alphabetic character (``str.isalpha``). Character classes come from tables built once per
  process from the interpreter's own ``str.isspace`` / ``str.isalpha``.
* :func:`ngram_fractions` — for n-grams of units (words, or characters for Chinese): the share of
  characters in the most frequent n-gram (count × its characters; among n-grams tied for the highest
  count, the longest), and the share of characters covered by duplicated n-grams (every occurrence after
  the first), Gopher's two repetition measures. One hash table pass, no sort.

Units are compared by 64-bit hashes; two different words or n-grams colliding has probability about
m²/2⁶⁴ for m distinct ones in a document.
"""
from __future__ import annotations

import numba
import numpy as np

from alaya.data.dedup.kernels import codepoints, splitmix64

_SPACE, _ALPHA = 1, 2
_P = np.uint64(0x100000001B3)
_TABLE: list[np.ndarray] = []


def char_classes() -> np.ndarray:
    """uint8[0x110000]: 1 whitespace (``str.isspace``), 2 alphabetic (``str.isalpha``)."""
    if not _TABLE:
        every = "".join(map(chr, range(0x110000)))
        space = np.fromiter(map(str.isspace, every), dtype=np.bool_, count=len(every))
        alpha = np.fromiter(map(str.isalpha, every), dtype=np.bool_, count=len(every))
        _TABLE.append((space * _SPACE + alpha * _ALPHA).astype(np.uint8))
    return _TABLE[0]


@numba.njit(cache=True, nogil=True)
def _word_units(cps, classes):
    n = len(cps)
    ids = np.empty(n // 2 + 1, dtype=np.uint64)
    lens = np.empty(n // 2 + 1, dtype=np.int64)
    k = 0
    n_alpha = 0
    i = 0
    while i < n:
        if classes[cps[i]] & _SPACE:
            i += 1
            continue
        h = np.uint64(0)
        start = i
        alpha = False
        while i < n and not (classes[cps[i]] & _SPACE):
            h = h * _P + np.uint64(cps[i]) + np.uint64(1)
            if classes[cps[i]] & _ALPHA:
                alpha = True
            i += 1
        ids[k] = h
        lens[k] = i - start
        if alpha:
            n_alpha += 1
        k += 1
    return ids[:k], lens[:k], n_alpha


def word_units(text: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(word hashes uint64, word lengths int64, number of words with a letter) of ``text.split()``."""
    return _word_units(codepoints(text), char_classes())


def char_units(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The non-whitespace characters as units: (code points as uint64, lengths all 1)."""
    cps = codepoints(text)
    keep = (char_classes()[cps] & _SPACE) == 0
    ids = cps[keep].astype(np.uint64)
    return ids, np.ones(len(ids), dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def ngram_fractions(ids, lens, n):
    """(top n-gram character share, duplicated n-gram character share) of the unit sequence."""
    m = len(ids) - n + 1
    total = 0
    for i in range(len(lens)):
        total += lens[i]
    if m < 1 or total == 0:
        return 0.0, 0.0
    csum = np.zeros(len(lens) + 1, dtype=np.int64)
    for i in range(len(lens)):
        csum[i + 1] = csum[i] + lens[i]
    top = np.uint64(1)
    for t in range(n - 1):
        top = top * _P
    size = 1
    while size < 2 * m:
        size *= 2
    mask = np.uint64(size - 1)
    keys = np.zeros(size, dtype=np.uint64)
    used = np.zeros(size, dtype=np.bool_)
    counts = np.zeros(size, dtype=np.int64)
    firsts = np.zeros(size, dtype=np.int64)
    cover = np.zeros(len(ids) + 1, dtype=np.int64)
    h = np.uint64(0)
    for t in range(n):
        h = h * _P + ids[t]
    best_count, best_chars = 0, 0
    any_dup = False
    for j in range(m):
        if j:
            h = (h - ids[j - 1] * top) * _P + ids[j + n - 1]
        slot = splitmix64(h) & mask
        while used[slot] and keys[slot] != h:
            slot = (slot + np.uint64(1)) & mask
        if not used[slot]:
            used[slot] = True
            keys[slot] = h
            firsts[slot] = j
        else:  # a later occurrence: its units are covered by a duplicated n-gram
            cover[j] += 1
            cover[j + n] -= 1
            any_dup = True
        counts[slot] += 1
        c = counts[slot]
        chars = csum[firsts[slot] + n] - csum[firsts[slot]]
        if c > best_count or (c == best_count and chars > best_chars):
            best_count, best_chars = c, chars
    top_fraction = best_count * best_chars / total if best_count > 1 else 0.0
    if not any_dup:
        return top_fraction, 0.0
    covered, run = 0, 0
    for i in range(len(ids)):
        run += cover[i]
        if run > 0:
            covered += lens[i]
    return top_fraction, covered / total
