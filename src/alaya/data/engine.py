"""Running stages over shards: the stage folder contract, resumable shard tasks, local processes or Ray.

A stage's output folder (docs/design.md, "Contracts")::

    data/part-*.jsonl         kept documents            removed/part-*.jsonl  {id, stage, reason, [duplicate_of], text, meta}
    quarantine/part-*.jsonl   {file, line, reason, raw} _done/part-*.json     per-shard counts (the resume markers)
    manifest.json             counts: in == kept + removed + quarantined, removals by reason

A shard task writes its files under temporary names and renames them when complete, then writes its
``_done`` marker; a rerun skips shards with a marker and a stage with a manifest, so a killed job resumes
at shard granularity and ends with the same output. The engine maps a module-level function over task
descriptions: :class:`LocalEngine` in processes on this machine, :class:`RayEngine` as Ray tasks (``ray.init()``
locally, ``address="auto"`` on a cluster); the functions and their outputs are the same.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from alaya.fileio import write_json_atomic
from alaya.data.documents import Document, Quarantine, QuarantineRecord, read_documents

PART_BYTES = 256 * 1024 * 1024  # a data part rolls over to the next file beyond this size


# ----------------------------------------------------------------------------- files
class PartWriter:
    """JSON lines into ``folder/part-{prefix}-{k:03d}.jsonl``, a new file every ``max_bytes``; renamed on close."""

    def __init__(self, folder: Path, prefix: str, max_bytes: int = PART_BYTES):
        self.folder, self.prefix, self.max_bytes = folder, prefix, max_bytes
        self.k, self.f, self.size, self.count = -1, None, 0, 0
        self.files: list[str] = []
        self._tmp: list[tuple[Path, Path]] = []

    def write(self, obj: dict) -> None:
        line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        if self.f is None or (self.size and self.size + len(line) > self.max_bytes):
            self._roll()
        self.f.write(line)
        self.size += len(line)
        self.count += 1

    def _roll(self) -> None:
        if self.f is not None:
            self.f.close()
        self.k += 1
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"part-{self.prefix}-{self.k:03d}.jsonl"
        tmp = self.folder / f".{final.name}.tmp"
        self.f = open(tmp, "wb")
        self.size = 0
        self._tmp.append((tmp, final))

    def close(self) -> list[str]:
        if self.f is not None:
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            self.f = None
        for tmp, final in self._tmp:
            os.replace(tmp, final)
            self.files.append(final.name)
        self._tmp = []
        return self.files


def data_parts(stage_dir: Path) -> list[str]:
    """The kept-document files of a finished stage, in order."""
    return sorted(str(p) for p in (stage_dir / "data").glob("part-*.jsonl"))


def read_shard(path: str, quarantine: Quarantine, text_field: str = "text") -> Iterator[Document]:
    return read_documents([path], quarantine, text_field=text_field)


# ----------------------------------------------------------------------------- engines
class _Progress:
    """A bar over shard tasks that also shows documents per second (from the tasks' counts)."""

    def __init__(self, total: int, desc: str, unit: str):
        self.bar = tqdm(total=total, desc=desc, unit=unit, mininterval=1.0, disable=not desc, file=sys.stderr)
        self.docs, self.t0 = 0, time.perf_counter()

    def done(self, result) -> None:
        self.bar.update(1)
        n = result.get("in", result.get("documents")) if isinstance(result, dict) else None
        if isinstance(n, int):
            self.docs += n
            self.bar.set_postfix(docs=self.docs, docs_s=f"{self.docs / max(time.perf_counter() - self.t0, 1e-9):.0f}")

    def close(self) -> None:
        self.bar.close()


class LocalEngine:
    name = "local"

    def __init__(self, processes: int | None = None):
        self.processes = processes or os.cpu_count() or 1

    def map(self, fn: Callable, tasks: Sequence, desc: str = "", unit: str = " shards") -> list:
        results: list = [None] * len(tasks)
        bar = _Progress(len(tasks), desc, unit)
        try:
            if self.processes == 1 or len(tasks) <= 1:
                for i, t in enumerate(tasks):
                    results[i] = fn(t)
                    bar.done(results[i])
            else:
                with ProcessPoolExecutor(min(self.processes, len(tasks))) as pool:
                    futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
                    for fut in as_completed(futures):
                        results[futures[fut]] = fut.result()
                        bar.done(results[futures[fut]])
        finally:
            bar.close()
        return results


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        import ray

        if not ray.is_initialized():
            kwargs = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
            if address:
                kwargs["address"] = address
            elif num_cpus:
                kwargs["num_cpus"] = num_cpus
            ray.init(**kwargs)
        self.ray = ray

    def map(self, fn: Callable, tasks: Sequence, desc: str = "", unit: str = " shards") -> list:
        remote = self.ray.remote(fn)
        refs = [remote.remote(t) for t in tasks]
        results: list = [None] * len(refs)
        index = {ref: i for i, ref in enumerate(refs)}
        pending = list(refs)
        bar = _Progress(len(refs), desc, unit)
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                for ref in done:
                    results[index[ref]] = self.ray.get(ref)
                    bar.done(results[index[ref]])
        finally:
            bar.close()
        return results


def make_engine(name: str, processes: int | None = None, address: str | None = None):
    if name == "local":
        return LocalEngine(processes)
    if name == "ray":
        return RayEngine(address=address, num_cpus=processes)
    raise ValueError(f"--engine must be local or ray, got {name!r}")


# ----------------------------------------------------------------------------- one shard through a document stage
def removal_record(doc: Document, stage: str, reason: str, **extra) -> dict:
    return {"id": doc.id, "stage": stage, "reason": reason, **extra, "text": doc.text, "meta": doc.meta}


def quarantine_sink(writer: PartWriter) -> Callable[[QuarantineRecord], None]:
    return lambda r: writer.write(r.to_json())


class ShardOutput:
    """One shard task's share of a stage folder: its kept and removed parts, its counts, and the ``_done``
    marker written last (every shard task of every stage writes through this)."""

    def __init__(self, out: Path, part: str, **counts):
        self.done = out / "_done" / f"{part}.json"
        self.kept = PartWriter(out / "data", part)
        self.removed = PartWriter(out / "removed", part)
        self.counts = {"in": 0, "kept": 0, "removed": 0, "quarantined": 0, "reasons": {}, "bytes_in": 0, **counts}

    @staticmethod
    def finished(out: Path, part: str) -> dict | None:
        """The counts of a shard finished before (a rerun skips it), or None."""
        done = out / "_done" / f"{part}.json"
        return json.loads(done.read_text(encoding="utf-8")) if done.exists() else None

    def read(self, doc: Document) -> None:
        self.counts["bytes_in"] += len(doc.text.encode("utf-8", "surrogatepass"))

    def keep(self, doc: Document) -> None:
        self.kept.write(doc.to_json())
        self.counts["kept"] += 1

    def remove(self, doc: Document, stage: str, reason: str, **extra) -> None:
        self.removed.write(removal_record(doc, stage, reason, **extra))
        self.counts["removed"] += 1
        self.counts["reasons"][reason] = self.counts["reasons"].get(reason, 0) + 1

    def close(self) -> dict:
        """Rename the parts into place, then write the done marker; the shard's counts."""
        self.kept.close()
        self.removed.close()
        write_json_atomic(self.done, self.counts)
        return self.counts


def run_document_shard(task: dict) -> dict:
    """Apply a per-document stage to one shard; write data/removed/quarantine parts and the done marker."""
    stage, src, out, part = task["stage"], task["input"], Path(task["output"]), task["part"]
    finished = ShardOutput.finished(out, part)
    if finished is not None:
        return finished
    t0 = time.perf_counter()
    shard = ShardOutput(out, part)
    quarantine_w = PartWriter(out / "quarantine", part)
    quarantine = Quarantine(sink=quarantine_sink(quarantine_w))
    stage.setup()
    for doc in read_shard(src, quarantine):
        shard.counts["in"] += 1
        shard.read(doc)
        kept, reason = stage.apply(doc)
        if kept is None:
            shard.remove(doc, stage.name, reason)
        else:
            shard.keep(kept)
    shard.counts["quarantined"] = quarantine.count
    shard.counts["in"] += quarantine.count
    quarantine_w.close()
    shard.counts["seconds"] = round(time.perf_counter() - t0, 3)
    return shard.close()


def finish_stage(out: Path, name: str, shard_counts: list[dict], extra: dict | None = None,
                 summed: tuple[str, ...] = ()) -> dict:
    """Sum the shard counts into manifest.json, checking in == kept + removed + quarantined; the stage's own
    counters named in ``summed`` are summed too."""
    total = {"stage": name, "in": 0, "kept": 0, "removed": 0, "quarantined": 0, "reasons": {}, "bytes_in": 0,
             "shards": len(shard_counts), "seconds": 0.0}
    for c in shard_counts:
        for k in ("in", "kept", "removed", "quarantined", "bytes_in"):
            total[k] += c.get(k, 0)
        total["seconds"] += c.get("seconds", 0.0)
        for k in summed:
            if k in c:
                total[k] = total.get(k, 0) + c[k]
        for r, n in c.get("reasons", {}).items():
            total["reasons"][r] = total["reasons"].get(r, 0) + n
    if total["in"] != total["kept"] + total["removed"] + total["quarantined"]:
        raise RuntimeError(f"{out}: counts do not add up: {total}")
    total["seconds"] = round(total["seconds"], 3)
    if extra:
        total.update(extra)
    write_json_atomic(out / "manifest.json", total)
    return total
