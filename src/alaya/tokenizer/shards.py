"""Token shards: curated documents → flat token files grouped by mixture source (``alaya data tokenize``); the
training side reads them memory-mapped (:class:`alaya.train.shards.TokenShards`).

``alaya data tokenize`` writes::

    OUT/index.json                      sources → splits → shards (file, tokens, documents), dtype, tokenizer
    OUT/{source}/{split}-{task:05d}-{part:03d}.bin    token ids, uint16 (uint32 above 65536 tokens), each
                                                      document followed by </s>
    OUT/{source}/{split}-{task:05d}-{part:03d}.idx.npy  end offset of every document in that shard (int64)
    OUT/tasks/{task:05d}.json           one per input file: its shards; written last (atomic), so a rerun
                                        skips finished inputs and redoes a killed one (the same task markers
                                        as a curation stage's; the tasks run on alaya.data.engine, local or Ray)

The source of a document is ``meta`` fields joined (default ``lang-type``, e.g. ``en-news``; ``unknown``
when absent); a stable hash of the document id sends ``heldout_fraction`` of the documents to the
``heldout`` split. Inputs are tokenized in parallel, one task per input file; the output does not depend
on the number of processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from alaya.configfile import settings_changes
from alaya.fileio import write_json_atomic

from alaya.data.documents import DEFAULT_SHARD_MB, Quarantine, expand_paths, is_heldout, plan_shards, read_documents
from alaya.data.engine import make_engine
from alaya.tokenizer import AlayaTokenizer

INDEX = "index.json"
SPLITS = ("train", "heldout")
DEFAULT_SHARD_TOKENS = 1 << 27  # 256 MB of uint16


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def source_of(meta: dict, group_by: Sequence[str]) -> str:
    parts = [str(meta.get(k) or "unknown") for k in group_by]
    name = "-".join(parts) if parts else "all"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class _ShardWriter:
    def __init__(self, out: Path, source: str, split: str, task: int, dtype: np.dtype, shard_tokens: int):
        self.out, self.source, self.split, self.task = out, source, split, task
        self.dtype, self.shard_tokens = dtype, shard_tokens
        self.part, self.f, self.tokens, self.ends = -1, None, 0, []
        self.done: list[dict] = []

    def _open(self) -> None:
        self.part += 1
        (self.out / self.source).mkdir(parents=True, exist_ok=True)
        self.name = f"{self.source}/{self.split}-{self.task:05d}-{self.part:03d}"
        self.f = open(self.out / f"{self.name}.bin.tmp", "wb")
        self.tokens, self.ends = 0, []

    def add(self, ids: list[int], eos: int) -> None:
        if self.f is None or self.tokens >= self.shard_tokens:
            self.close()
            self._open()
        arr = np.asarray(ids + [eos], dtype=self.dtype)
        self.f.write(arr.tobytes())
        self.tokens += len(arr)
        self.ends.append(self.tokens)

    def close(self) -> None:
        if self.f is None:
            return
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        np.save(self.out / f"{self.name}.idx.npy", np.asarray(self.ends, dtype=np.int64))
        os.replace(self.out / f"{self.name}.bin.tmp", self.out / f"{self.name}.bin")
        self.done.append({"file": f"{self.name}.bin", "tokens": self.tokens, "documents": len(self.ends)})
        self.f = None


def _tokenize_task(args: tuple) -> dict:
    task, path, out, tokenizer_dir, group_by, heldout_fraction, shard_tokens, batch_docs = args
    out = Path(out)
    tok = AlayaTokenizer.load(tokenizer_dir)
    dtype = token_dtype(tok.vocab_size)
    quarantine = Quarantine()
    writers: dict[tuple[str, str], _ShardWriter] = {}
    docs = 0

    def flush(batch):
        for (source, split), ids in zip([b[0] for b in batch], tok.encode_batch([b[1] for b in batch])):
            key = (source, split)
            if key not in writers:
                writers[key] = _ShardWriter(out, source, split, task, dtype, shard_tokens)
            writers[key].add(ids, tok.eos_id)

    batch = []
    for doc in read_documents([path], quarantine):
        split = "heldout" if is_heldout(doc.id, heldout_fraction) else "train"
        batch.append(((source_of(doc.meta, group_by), split), doc.text))
        docs += 1
        if len(batch) >= batch_docs:
            flush(batch)
            batch = []
    flush(batch)
    shards = []
    for w in writers.values():
        w.close()
        shards += [{"source": w.source, "split": w.split, **d} for d in w.done]
    record = {"task": task, "input": str(path), "documents": docs, "quarantined": quarantine.count,
              "quarantine_examples": [r.to_json() for r in quarantine.records[:20]], "shards": shards}
    write_json_atomic(out / "tasks" / f"{task:05d}.json", record)
    return record


def tokenize_to_shards(
    inputs: Sequence[str],
    tokenizer_dir: str | Path,
    output: str | Path,
    group_by: Sequence[str] = ("lang", "type"),
    heldout_fraction: float = 0.01,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    processes: int | None = None,
    progress: bool = True,
    shard_mb: float = DEFAULT_SHARD_MB,
    engine: str = "local",
    address: str | None = None,
) -> dict:
    """Tokenize every input file (resumable, parallel, deterministic) and write the index. One task per
    file, or per line-aligned range of about ``shard_mb`` MB of a large plain JSONL file, run on the data
    room's engine (local processes, or Ray with ``engine="ray"``), as the curation stages are."""
    files = expand_paths(inputs)
    out = Path(output)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    tok = AlayaTokenizer.load(tokenizer_dir)
    tasks = plan_shards(files, int(shard_mb * 2**20))
    settings = {"inputs": files, "shard_mb": shard_mb, "group_by": list(group_by), "heldout_fraction": heldout_fraction,
                "shard_tokens": shard_tokens, "tokenizer_sha1": hashlib.sha1(
                    (Path(tokenizer_dir) / "tokenizer.json").read_bytes()).hexdigest()}
    settings_path = out / "settings.json"
    if settings_path.exists():
        old = json.loads(settings_path.read_text(encoding="utf-8"))
        changed = settings_changes(old, settings)
        if changed:
            raise ValueError(f"{out} holds shards made with other settings ({'; '.join(changed)}); use a new --output")
    else:
        write_json_atomic(settings_path, settings)
    done = {}
    for p in (out / "tasks").glob("*.json"):
        rec = json.loads(p.read_text(encoding="utf-8"))
        done[rec["task"]] = rec
    todo = [(i, f, str(out), str(tokenizer_dir), tuple(group_by), heldout_fraction, shard_tokens, 256)
            for i, f in enumerate(tasks) if i not in done]
    if done:
        print(f"{len(done)} of {len(tasks)} inputs already tokenized in {out}; {len(todo)} to go", file=sys.stderr)
    if todo:
        eng = make_engine(engine, processes or min(len(todo), os.cpu_count() or 1) or 1, address)
        for rec in eng.map(_tokenize_task, todo, desc="tokenize" if progress else ""):
            done[rec["task"]] = rec
    index = {"version": 1, "dtype": str(token_dtype(tok.vocab_size)), "eos_id": tok.eos_id,
             "vocab_size": tok.vocab_size, "tokenizer": str(Path(tokenizer_dir).resolve()),
             "group_by": list(group_by), "heldout_fraction": heldout_fraction,
             "documents": sum(r["documents"] for r in done.values()),
             "quarantined": sum(r["quarantined"] for r in done.values()), "sources": {}}
    for task in sorted(done):
        for s in done[task]["shards"]:
            src = index["sources"].setdefault(s["source"], {sp: {"tokens": 0, "documents": 0, "shards": []} for sp in SPLITS})
            sp = src[s["split"]]
            sp["tokens"] += s["tokens"]
            sp["documents"] += s["documents"]
            sp["shards"].append({"file": s["file"], "tokens": s["tokens"], "documents": s["documents"]})
    index["sources"] = dict(sorted(index["sources"].items()))
    write_json_atomic(out / INDEX, index)
    return index
