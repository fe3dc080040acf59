"""LSH candidate pairs from band keys, edit-distance verification, and clusters.

Candidates: documents that share a band key in any band. A bucket of up to ``max_bucket_pairs`` members
gives all its pairs; a larger bucket (a template repeated thousands of times) gives each member paired
with the bucket's first and with its neighbour, which keeps the work linear and still connects the
cluster. Verification: a candidate pair is a duplicate when the normalised Levenshtein similarity of the
two normalised texts (rapidfuzz) reaches ``edit_threshold``. Clusters: connected components of the
verified pairs (union-find).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def candidate_pairs(keys: np.ndarray, ids: np.ndarray | None = None, max_bucket: int = 32) -> np.ndarray:
    """[m, 2] int64 pairs (i < j) of rows (or of ``ids``) that share a key in one column of ``keys``."""
    n = len(keys)
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    # a pair found in several bands is kept once: pairs are merged band by band as 64-bit codes
    # (i << 32 | j), so memory stays near the number of distinct pairs, not bands × pairs
    codes = np.zeros(0, dtype=np.int64)
    for band in range(keys.shape[1]):
        p = _band_pairs(keys[:, band], ids, max_bucket)
        if len(p):
            p = np.sort(p, axis=1)
            p = p[p[:, 0] != p[:, 1]]
            codes = np.union1d(codes, (p[:, 0] << 32) | p[:, 1])
    return np.stack([codes >> 32, codes & 0xFFFFFFFF], axis=1).astype(np.int64)


def _band_pairs(col: np.ndarray, ids: np.ndarray, max_bucket: int) -> np.ndarray:
    order = np.argsort(col, kind="stable")
    k, members = col[order], ids[order]
    starts = np.nonzero(np.concatenate([[True], k[1:] != k[:-1]]))[0]
    sizes = np.diff(np.concatenate([starts, [len(k)]]))
    multi = sizes > 1
    if not multi.any():
        return np.zeros((0, 2), dtype=np.int64)
    pairs = []
    small = multi & (sizes <= max_bucket)
    for size in np.unique(sizes[small]):
        st = starts[small & (sizes == size)]
        a, b = np.triu_indices(size, 1)
        pairs.append(np.stack([members[st[:, None] + a[None, :]].ravel(), members[st[:, None] + b[None, :]].ravel()], 1))
    for st, size in zip(starts[multi & (sizes > max_bucket)], sizes[multi & (sizes > max_bucket)]):
        m = members[st : st + size]
        pairs.append(np.stack([np.full(size - 1, m[0]), m[1:]], 1))
        pairs.append(np.stack([m[1:-1], m[2:]], 1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    p = np.sort(pairs, axis=1)
    p = p[p[:, 0] != p[:, 1]]
    return np.unique(p, axis=0)


def clusters(n: int, edges: np.ndarray) -> np.ndarray:
    """Component label of each of ``n`` nodes (union-find over ``edges``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(edges) == 0:
        return np.arange(n)
    g = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=False)
    return labels


def choose_kept(labels: np.ndarray, rule: str, lengths: Sequence[int] | None = None,
                quality: Sequence[float] | None = None) -> np.ndarray:
    """For every node, the node kept for its cluster: ``first`` (lowest index), ``longest`` or ``quality``
    (ties go to the lowest index, so the choice is deterministic)."""
    n = len(labels)
    idx = np.arange(n)
    if rule == "first":
        score = np.zeros(n)
    elif rule == "longest":
        if lengths is None:
            raise ValueError("keep rule 'longest' needs the lengths")
        score = -np.asarray(lengths, dtype=np.float64)
    elif rule == "quality":
        if quality is None:
            raise ValueError("keep rule 'quality' needs meta.quality (run the quality stage first)")
        score = -np.nan_to_num(np.asarray(quality, dtype=np.float64), nan=-np.inf)
    else:
        raise ValueError(f"keep rule must be first, longest or quality, got {rule!r}")
    order = np.lexsort((idx, score, labels))  # by cluster, then best score, then index
    first_of_cluster = np.concatenate([[True], labels[order][1:] != labels[order][:-1]])
    best = np.empty(labels.max() + 1, dtype=np.int64)
    best[labels[order][first_of_cluster]] = order[first_of_cluster]
    return best[labels]
