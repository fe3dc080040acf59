"""Training data: the token dtype of a vocabulary and the mixture sampler over token shards."""
from __future__ import annotations

import sys

import numpy as np
import torch


class MixtureSampler:
    """Fixed-length windows drawn from token sources with mixture weights; deterministic for a seed.

    Each draw picks a source by weight, a shard of it in proportion to its tokens, then a uniform start.
    The whole state is the generator's state and the count of windows drawn: :meth:`state_dict` /
    :meth:`load_state_dict` restore it exactly, so a resumed run continues with the very windows an
    uninterrupted run would have drawn (nothing is replayed or skipped by counting batches).

    For data parallelism every rank draws the same global batch and keeps its own slice
    (:meth:`global_batch`), so a run on N processes sees exactly the data of a one-process run with the
    same global batch.
    """

    def __init__(self, sources: dict, weights: dict[str, float] | None, seq_len: int, seed: int):
        usable = {n: s for n, s in sources.items() if any(len(a) >= seq_len for a in s.shards)}
        if not usable:
            raise ValueError(f"no source has a shard of at least seq_len = {seq_len} tokens")
        if weights is None:
            weights = {n: float(s.tokens) for n, s in usable.items()}
        unknown = sorted(set(weights) - set(sources))
        if unknown:
            raise ValueError(f"mixture weights name unknown sources {unknown}; the data has {sorted(sources)}")
        too_small = sorted(n for n, w in weights.items() if w > 0 and n not in usable)
        if too_small:
            raise ValueError(f"sources {too_small} have a weight but no shard of {seq_len} tokens")
        self.names = sorted(n for n, w in weights.items() if w > 0)
        if not self.names or any(weights[n] < 0 for n in weights):
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {weights}")
        w = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.probs = w / w.sum()
        self.shards = [[a for a in usable[n].shards if len(a) >= seq_len] for n in self.names]
        self.shard_probs = []
        for arrays in self.shards:
            sizes = np.array([len(a) - seq_len + 1 for a in arrays], dtype=np.float64)
            self.shard_probs.append(sizes / sizes.sum())
        self.seq_len = seq_len
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.drawn = 0

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.names, self.probs.tolist()))

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` windows [n, seq_len] (int64) and the source index of each."""
        src = self.rng.choice(len(self.names), size=n, p=self.probs)
        out = np.empty((n, self.seq_len), dtype=np.int64)
        for i, s in enumerate(src):
            arrays = self.shards[s]
            k = self.rng.choice(len(arrays), p=self.shard_probs[s]) if len(arrays) > 1 else 0
            start = int(self.rng.integers(0, len(arrays[k]) - self.seq_len + 1))
            out[i] = arrays[k][start : start + self.seq_len]
        self.drawn += n
        return out, src

    def global_batch(self, micro_batch: int, world: int, accum: int, rank: int) -> list[dict]:
        """The ``accum`` micro-batches of ``rank`` for one optimizer step (every token is trained on)."""
        windows, _ = self.draw(micro_batch * world * accum)
        windows = windows.reshape(accum, world, micro_batch, self.seq_len)
        out = []
        for k in range(accum):
            ids = torch.from_numpy(windows[k, rank])
            out.append({"input_ids": ids, "labels": ids})
        return out

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state, "drawn": self.drawn, "names": self.names,
                "probs": self.probs.tolist(), "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        if state["names"] != self.names or state["seq_len"] != self.seq_len:
            raise ValueError(f"sampler state is for sources {state['names']} and seq_len {state['seq_len']}, "
                             f"this run has {self.names} and {self.seq_len}")
        if not np.allclose(state["probs"], self.probs):
            print("warning: mixture weights changed since the checkpoint; continuing with the new ones",
                  file=sys.stderr)
        self.rng.bit_generator.state = state["bit_generator"]
        self.drawn = state["drawn"]
