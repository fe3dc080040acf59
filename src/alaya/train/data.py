"""Token streams for training: documents packed end to end, separated by ``</s>``."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def pack_documents(token_lists: Iterable[list[int]], eos_id: int, vocab_size: int) -> np.ndarray:
    """One flat array of token ids: doc, </s>, doc, </s>, ..."""
    chunks = []
    for ids in token_lists:
        chunks.append(np.asarray(ids, dtype=np.int64))
        chunks.append(np.asarray([eos_id], dtype=np.int64))
    flat = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return flat.astype(token_dtype(vocab_size))


def random_windows(tokens: np.ndarray, seq_len: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A [batch, seq_len] batch of windows at random offsets, drawn from ``generator`` (seeded runs repeat)."""
    if len(tokens) < seq_len + 1:
        raise ValueError(f"only {len(tokens)} tokens; need at least seq_len + 1 = {seq_len + 1}")
    starts = torch.randint(0, len(tokens) - seq_len, (batch_size,), generator=generator).tolist()
    return torch.from_numpy(np.stack([tokens[s : s + seq_len].astype(np.int64) for s in starts]))


def sequential_windows(tokens: np.ndarray, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping windows from the start (held-out evaluation)."""
    n = (len(tokens)) // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n == 0:
        raise ValueError(f"only {len(tokens)} tokens; need at least seq_len = {seq_len}")
    return torch.from_numpy(tokens[: n * seq_len].astype(np.int64).reshape(n, seq_len))
