"""Compiled (numba) loops behind MinHash: case folding, shingling and one-permutation hashing.

Each loop makes one pass over a batch's code points (a UTF-32 array, documents separated by U+0000); the
Python side only joins, encodes and slices. Definitions (what a word is, which documents are shingled by
characters, the hash functions) are in ``minhash.py``'s docstring; these functions implement them.

Folding: ``casefold(NFKC(text))`` is computed code point by code point from a table built once per process
from ``unicodedata`` (so it follows the interpreter's Unicode version). That is exact when no code point of
the document interacts with its neighbours under NFKC: the table marks as *special* every code point that
is combining, that can be the second half of a canonical composition (including Hangul vowel and trailing
jamo), or whose NFKC contains such a code point. A document with any special code point is folded by
``unicodedata`` instead (rare: decomposed accents, jamo, spacing accents such as "´");
``fold_batch`` returns the same text either way (tested).
"""
from __future__ import annotations

import unicodedata

import numba
import numpy as np

_U64 = np.uint64
_BASE = np.uint64(1000003)
_WORD_LEN = np.uint64(0x51ED27)
_MIX = np.uint64(0x100000001B3)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_PROBE = np.uint64(0x9E3779B1)
_LOW32 = np.uint64(0xFFFFFFFF)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
EMPTY = np.uint32(0xFFFFFFFF)
FOLD_LIMIT = 0x30000  # code points at or above are treated as special (planes 3 and up: rare)

_TABLES: dict[str, np.ndarray] = {}


def fold_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """casefold(NFKC(chr(cp))) for cp < FOLD_LIMIT as (length int8, −1 where the document needs
    ``unicodedata``; offset int32 into data; data uint32): "…" is "...", "℃" is "°c", "ß" is "ss"."""
    if "fold" not in _TABLES:
        followers = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V and T jamo
        for cp in range(FOLD_LIMIT):
            d = unicodedata.decomposition(chr(cp))
            if d and not d.startswith("<"):
                parts = d.split()
                if len(parts) == 2:
                    followers.add(int(parts[1], 16))
        length = np.full(FOLD_LIMIT, -1, dtype=np.int8)
        offset = np.zeros(FOLD_LIMIT, dtype=np.int32)
        data: list[int] = []
        nfkc, combining = unicodedata.normalize, unicodedata.combining
        for cp in range(FOLD_LIMIT):
            if 0xD800 <= cp <= 0xDFFF or cp in followers:
                continue
            c = chr(cp)
            n = nfkc("NFKC", c)
            if combining(c) or any(combining(x) or ord(x) in followers for x in n):
                continue
            f = n.casefold()
            if len(f) == 1 and f == c:
                length[cp] = 0  # unchanged
                continue
            length[cp], offset[cp] = len(f), len(data)
            data.extend(ord(x) for x in f)
        _TABLES["fold"] = (length, offset, np.array(data, dtype=np.uint32))
    return _TABLES["fold"]


def word_table() -> np.ndarray:
    """bool[0x3000]: word characters below U+3000 (letters, digits, marks, underscore)."""
    if "word" not in _TABLES:
        table = np.zeros(0x3000, dtype=np.bool_)
        for cp in range(0x3000):
            ch = chr(cp)
            table[cp] = ch.isalnum() or ch == "_" or unicodedata.category(ch).startswith("M")
        _TABLES["word"] = table
    return _TABLES["word"]


def codepoints(text: str) -> np.ndarray:
    """The text as a uint32 array of code points (lone surrogates kept)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def exact_fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def fold_batch(texts: list[str]) -> np.ndarray:
    """The batch as one uint32 array of folded code points, documents separated by 0 (a NUL inside a text
    becomes a space)."""
    joined = "\x00".join(texts)
    if joined.count("\x00") != len(texts) - 1:
        texts = [t.replace("\x00", " ") for t in texts]
        joined = "\x00".join(texts)
    cps = codepoints(joined)
    special = np.zeros(len(texts), dtype=np.bool_)
    out = _fold(cps, *fold_table(), special)
    if not special.any():
        return out
    bounds = np.concatenate([[0], np.nonzero(out == 0)[0] + 1, [len(out) + 1]])
    parts = []
    for i in range(len(texts)):
        if special[i]:
            parts.append(codepoints(exact_fold(texts[i])))
        else:
            parts.append(out[bounds[i] : bounds[i + 1] - 1])
        if i + 1 < len(texts):
            parts.append(np.zeros(1, dtype=np.uint32))
    return np.concatenate(parts)


@numba.njit(cache=True, nogil=True)
def _fold(cps, length, offset, data, special):
    """Folded code points; a document with a code point the table cannot fold is flagged in ``special``
    (its code points are copied unchanged, to be replaced by the caller)."""
    limit = len(length)
    total = 0
    doc = 0
    for i in range(len(cps)):
        c = cps[i]
        if c == 0:
            doc += 1
            total += 1
        elif c < limit and length[c] > 0:
            total += length[c]
        else:
            total += 1
            if c >= limit or length[c] < 0:
                special[doc] = True
    out = np.empty(total, dtype=np.uint32)
    j = 0
    for i in range(len(cps)):
        c = cps[i]
        if c < limit and length[c] > 0:
            o = offset[c]
            for t in range(length[c]):
                out[j] = data[o + t]
                j += 1
        else:
            out[j] = c
            j += 1
    return out


@numba.njit(inline="always")
def splitmix64(x):
    x = x + _GOLD
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


_WORDISH, _CJK, _WORD = 1, 2, 4


def class_table() -> np.ndarray:
    """uint8[0x10000] bit flags per BMP code point: 1 counts as a word character when choosing the shingle
    kind (everything from U+3000 up does), 2 is CJK, 4 is part of a word when shingling by words."""
    if "class" not in _TABLES:
        cp = np.arange(0x10000)
        wt = word_table()
        wordish = np.where(cp < 0x3000, wt[np.minimum(cp, 0x2FFF)], True)
        cjk = ((0x3400 <= cp) & (cp <= 0x4DBF)) | ((0x4E00 <= cp) & (cp <= 0x9FFF)) | ((0xF900 <= cp) & (cp <= 0xFAFF)) \
            | ((0x3040 <= cp) & (cp <= 0x30FF)) | ((0xAC00 <= cp) & (cp <= 0xD7AF))
        word = np.where(cp < 0x3000, wt[np.minimum(cp, 0x2FFF)], (cp > 0x303F) & ((cp < 0xFF00) | (cp > 0xFF20)))
        _TABLES["class"] = (wordish * _WORDISH + cjk * _CJK + word * _WORD).astype(np.uint8)
    return _TABLES["class"]


@numba.njit(inline="always")
def _class(c, ctable):
    if c < 0x10000:
        return ctable[c]
    return _WORDISH | _WORD  # beyond the BMP: word characters, not CJK


@numba.njit(cache=True, nogil=True)
def shingle_hashes(cps, ctable, ngram, char_ngram):
    """(hashes uint64, document index int64) of every shingle of a folded batch, in document order."""
    n = len(cps)
    n_docs = 1
    for i in range(n):
        if cps[i] == 0:
            n_docs += 1
    out_h = np.empty(n + n_docs, dtype=np.uint64)
    out_d = np.empty(n + n_docs, dtype=np.int64)
    units = np.empty(n + 1, dtype=np.uint64)
    m = 0
    start = 0
    doc = 0
    while start <= n:
        end = start
        n_cjk = 0
        n_word = 0
        while end < n and cps[end] != 0:
            f = _class(cps[end], ctable)
            n_cjk += (f >> 1) & 1
            n_word += f & 1
            end += 1
        k = 0  # units of this document
        if n_cjk > 0 and n_cjk > 0.3 * max(n_word, 1):
            width = char_ngram
            for i in range(start, end):
                c = cps[i]
                if c > 32:
                    units[k] = splitmix64(_U64(c))
                    k += 1
        else:
            width = ngram
            h = _U64(0)
            length = 0
            for i in range(start, end + 1):
                if i < end and _class(cps[i], ctable) & _WORD:
                    h = h * _BASE + _U64(cps[i])
                    length += 1
                elif length:
                    units[k] = h + _WORD_LEN * _U64(length)
                    k += 1
                    h = _U64(0)
                    length = 0
        if k >= width:
            top = _U64(1)  # _MIX ** (width - 1): the rolling hash drops the oldest unit
            for t in range(width - 1):
                top = top * _MIX
            h = _U64(0)
            for t in range(width):
                h = h * _MIX + units[t]
            for j in range(k - width + 1):
                if j:
                    h = (h - units[j - 1] * top) * _MIX + units[j + width - 1]
                out_h[m] = h
                out_d[m] = doc
                m += 1
        elif k > 0:
            h = _U64(0)
            for t in range(k):
                h = h * _MIX + units[t]
            out_h[m] = h
            out_d[m] = doc
            m += 1
        doc += 1
        start = end + 1
    return out_h[:m], out_d[:m]


@numba.njit(cache=True, nogil=True)
def oph_signatures(h, d, n_docs, num_perm, salt):
    """[n_docs, num_perm] uint32 one-permutation-hashing signatures with optimal densification."""
    P = _U64(num_perm)
    sig = np.full((n_docs, num_perm), EMPTY, dtype=np.uint32)
    for i in range(len(h)):
        x = splitmix64(h[i] ^ salt)
        b = ((x >> _S32) * P) >> _S32
        v = np.uint32(x & _LOW32)
        if v < sig[d[i], b]:
            sig[d[i], b] = v
    src = np.empty(num_perm, dtype=np.uint32)
    filled = np.empty(num_perm, dtype=np.bool_)
    for r in range(n_docs):
        n_filled = 0
        for c in range(num_perm):
            src[c] = sig[r, c]
            filled[c] = src[c] != EMPTY
            if filled[c]:
                n_filled += 1
        if n_filled == 0 or n_filled == num_perm:
            continue
        for c in range(num_perm):
            if filled[c]:
                continue
            done = False
            for attempt in range(1, 200):  # seeded probe sequence of (bin, attempt)
                probe = splitmix64(_U64(c) * _PROBE + _U64(attempt) + salt)
                cand = ((probe >> _S32) * P) >> _S32
                if filled[cand]:
                    sig[r, c] = src[cand]
                    done = True
                    break
            if not done:  # practically never: the next filled bin to the right, cyclically
                j = (c + 1) % num_perm
                while not filled[j]:
                    j = (j + 1) % num_perm
                sig[r, c] = src[j]
    return sig


@numba.njit(cache=True, nogil=True)
def band_hashes(signatures, bands, rows):
    """[n, bands] uint64: a hash of each band's ``rows`` values, the band index mixed in."""
    n = signatures.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    for i in range(n):
        for b in range(bands):
            k = _U64(b + 1)
            for r in range(rows):
                k = splitmix64(k ^ _U64(signatures[i, b * rows + r]))
            keys[i, b] = k
    return keys
