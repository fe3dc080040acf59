"""Token shards, read back memory-mapped for training (written by ``alaya data tokenize``,
:mod:`alaya.tokenizer.shards`, which documents the layout)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alaya.tokenizer.shards import INDEX


@dataclass
class Source:
    name: str
    shards: list[np.ndarray]  # memory-mapped token arrays
    tokens: int


class TokenShards:
    """The shards of one split, memory-mapped: ``sources[name].shards[i]`` is a flat token array."""

    def __init__(self, folder: str | Path, split: str = "train"):
        self.folder = Path(folder)
        path = self.folder / INDEX
        if not path.is_file():
            raise FileNotFoundError(f"{self.folder}: no {INDEX}; write token shards with `alaya data tokenize`")
        self.index = json.loads(path.read_text(encoding="utf-8"))
        self.dtype = np.dtype(self.index["dtype"])
        self.vocab_size, self.eos_id = self.index["vocab_size"], self.index["eos_id"]
        self.sources: dict[str, Source] = {}
        for name, splits in self.index["sources"].items():
            arrays = []
            for s in splits[split]["shards"]:
                f = self.folder / s["file"]
                if not f.is_file():
                    raise FileNotFoundError(f"{f}: listed in {path} but missing")
                if f.stat().st_size != s["tokens"] * self.dtype.itemsize:
                    raise ValueError(f"{f}: {f.stat().st_size} bytes, index says {s['tokens']} tokens; the shard is damaged")
                arrays.append(np.memmap(f, dtype=self.dtype, mode="r"))
            if arrays:
                self.sources[name] = Source(name, arrays, sum(len(a) for a in arrays))
        if not self.sources:
            raise ValueError(f"{self.folder}: the '{split}' split holds no tokens")
