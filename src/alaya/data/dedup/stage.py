"""Exact and fuzzy deduplication as pipeline stages, in phases that run on any engine.

1. map (a task per shard): parse the shard once (quarantine), copy its documents to a work file with byte
   offsets, and write per-unit keys: for ``exact_dedup`` a 128-bit hash of the normalised text; for
   ``fuzzy_dedup`` the LSH band keys of each unit's MinHash signature. A unit is a document, or a
   paragraph at ``level: paragraph``.
2. reduce (a task per partition): exact hashes are partitioned by value, fuzzy band keys by band, so no
   task needs all signatures; each finds the units that share a key (candidate pairs).
3. verify (a task per chunk of pairs): exact pairs must have equal normalised text; fuzzy pairs (with
   ``verify: both``, the default) an exact shingle Jaccard of at least ``threshold`` (what MinHash only
   estimated) and a normalised Levenshtein similarity of at least ``edit_threshold`` (rapidfuzz);
   ``verify: edit`` or ``jaccard`` uses one of the two.
4. cluster (the driver, which holds only the verified pairs and one length and quality per unit):
   union-find, then one unit kept per cluster by ``keep`` (first, longest, quality).
5. apply (a task per shard): documents go to ``data/`` or ``removed/`` with ``duplicate_of``; at
   paragraph level the repeated paragraphs are cut from later documents (``meta.paragraphs_removed``)
   and a document left with nothing is removed.
Every phase writes its results per task and skips finished tasks on a rerun.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from alaya.data.dedup.lsh import candidate_pairs, choose_kept, clusters, unique_pairs
from alaya.data.dedup.minhash import MinHasher, band_keys, jaccard, lsh_params, normalize_for_hash
from alaya.data.documents import Document, Quarantine
from alaya.fileio import write_json_atomic
from alaya.data.engine import PartWriter, ShardOutput, finish_stage, quarantine_sink, read_shard
from alaya.data.stages.base import CorpusStage

_PARA_SPLIT = re.compile(r"\n\s*\n")


def paragraph_spans(text: str, min_chars: int) -> list[tuple[int, int]]:
    """(start, end) of the paragraphs (separated by blank lines) with at least ``min_chars`` characters."""
    spans, pos = [], 0
    for m in list(_PARA_SPLIT.finditer(text)) + [None]:
        end = m.start() if m else len(text)
        seg = text[pos:end]
        if len(seg.strip()) >= min_chars:
            lead = len(seg) - len(seg.lstrip())
            spans.append((pos + lead, pos + len(seg.rstrip())))
        pos = m.end() if m else len(text)
    return spans


def _exact_key(text: str) -> tuple[int, int]:
    d = hashlib.blake2b(normalize_for_hash(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


class _DedupBase(CorpusStage):
    """The phases of both dedup stages; what differs (keys, partitions, candidates, verification, the
    removal reason) is a method each subclass gives, so no phase asks which stage it runs."""

    name = "dedup"
    removal_reason = "duplicate"

    def __init__(self, keep: str = "first", level: str = "document", min_paragraph_chars: int = 50,
                 partitions: int = 8, verify_chunk: int = 20000):
        if keep not in ("first", "longest", "quality"):
            raise ValueError(f"keep must be first, longest or quality, got {keep!r}")
        if level not in ("document", "paragraph"):
            raise ValueError(f"level must be document or paragraph, got {level!r}")
        self.keep, self.level, self.min_paragraph_chars = keep, level, min_paragraph_chars
        self.partitions, self.verify_chunk = partitions, verify_chunk

    # ------------------------------------------------------------------ hooks
    def unit_keys(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def n_key_columns(self) -> int:
        raise NotImplementedError

    def partition_count(self) -> int:
        return max(1, self.partitions)

    def partition_pairs(self, work: Path, shards: list[str], offsets: list[int], g: int, P: int) -> np.ndarray:
        """Candidate pairs (global unit ids) of reduce partition ``g`` of ``P``."""
        raise NotImplementedError

    def verify(self, pairs: np.ndarray, text) -> np.ndarray:
        """A boolean per candidate pair: a real duplicate. ``text(unit_id)`` gives a unit's text."""
        raise NotImplementedError

    # ------------------------------------------------------------------ driver
    def run(self, engine, inputs: list[str], out: Path) -> dict:
        t0 = time.perf_counter()
        work = out / "_work"
        work.mkdir(parents=True, exist_ok=True)
        shards = [f"{i:05d}" for i in range(len(inputs))]
        maps = engine.map(_map_task, [{"stage": self, "input": src, "work": str(work), "out": str(out), "part": p}
                                      for src, p in zip(inputs, shards)], desc=f"{self.name} map")
        n_units = [m["units"] for m in maps]
        offsets = np.concatenate([[0], np.cumsum(n_units)]).astype(np.int64)
        N = int(offsets[-1])
        P = self.partition_count()
        red = engine.map(_reduce_task, [{"stage": self, "work": str(work), "shards": shards, "offsets": offsets.tolist(),
                                         "partition": g, "partitions": P} for g in range(P)], desc=f"{self.name} candidates")
        pairs = unique_pairs(np.concatenate([np.load(r) for r in red])) if red else np.zeros((0, 2), np.int64)
        chunks = [pairs[i : i + self.verify_chunk] for i in range(0, len(pairs), self.verify_chunk)]
        ver = engine.map(_verify_task, [{"stage": self, "work": str(work), "shards": shards, "offsets": offsets.tolist(),
                                         "pairs": c, "chunk": k} for k, c in enumerate(chunks)], desc=f"{self.name} verify")
        edges = np.concatenate(ver) if ver else np.zeros((0, 2), np.int64)
        lengths = np.concatenate([np.load(work / f"units-{p}.npz")["lengths"] for p in shards]) if N else np.zeros(0)
        quality = np.concatenate([np.load(work / f"units-{p}.npz")["quality"] for p in shards]) if N else np.zeros(0)
        labels = clusters(N, edges)
        kept = choose_kept(labels, "first" if self.level == "paragraph" else self.keep, lengths, quality) if N else labels
        for i, p in enumerate(shards):
            dec = kept[offsets[i] : offsets[i + 1]]
            np.save(work / f"kept-{p}.npy", dec)
        counts = engine.map(_apply_task, [{"stage": self, "work": str(work), "out": str(out), "part": p,
                                           "offsets": offsets.tolist(), "shards": shards, "index": i}
                                          for i, p in enumerate(shards)], desc=f"{self.name} apply")
        extra = {"candidate_pairs": int(len(pairs)), "verified_pairs": int(len(edges)), "units": N,
                 "clusters_with_duplicates": int(len(np.unique(labels[kept != np.arange(N)]))) if N else 0,
                 "level": self.level, "wall_seconds": round(time.perf_counter() - t0, 3)}
        manifest = finish_stage(out, self.name, counts, extra, summed=("paragraphs_removed",))
        shutil.rmtree(work, ignore_errors=True)
        return manifest

    # ------------------------------------------------------------------ helpers used by the tasks
    def units_of(self, doc: Document) -> list[str]:
        if self.level == "document":
            return [doc.text]
        return [doc.text[s:e] for s, e in paragraph_spans(doc.text, self.min_paragraph_chars)]


class ExactDedup(_DedupBase):
    """Documents (or paragraphs) whose normalised text is identical: one is kept."""

    name = "exact_dedup"
    removal_reason = "exact_duplicate"

    def partition_pairs(self, work, shards, offsets, g, P):
        hs, ids = [], []  # the hashes whose value falls in this partition
        for i, p in enumerate(shards):
            k = np.load(work / f"keys-{p}.npy")
            sel = (k[:, 0] % np.uint64(P)) == np.uint64(g)
            hs.append(k[sel])
            ids.append(np.arange(offsets[i], offsets[i + 1], dtype=np.int64)[sel])
        keys = np.concatenate(hs) if hs else np.zeros((0, 2), np.uint64)
        gid = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        combined = keys[:, :1] ^ (keys[:, 1:] * np.uint64(0x9E3779B97F4A7C15))
        return candidate_pairs(combined, gid, max_bucket=2)  # star + chain for any group: linear

    def verify(self, pairs, text):
        return np.array([self.equal(text(int(i)), text(int(j))) for i, j in pairs], dtype=bool)

    def unit_keys(self, texts):
        keys = np.array([_exact_key(t) for t in texts], dtype=np.uint64).reshape(len(texts), 2)
        return keys

    def n_key_columns(self):
        return 2

    def equal(self, a: str, b: str) -> bool:
        return normalize_for_hash(a) == normalize_for_hash(b)


class FuzzyDedup(_DedupBase):
    """MinHash + LSH candidates verified by edit distance (see the module docstring)."""

    name = "fuzzy_dedup"
    removal_reason = "near_duplicate"

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, char_ngram: int = 5,
                 edit_threshold: float = 0.7, verify: str = "both", bands: int | None = None, rows: int | None = None,
                 seed: int = 1, max_bucket: int = 32, **kw):
        super().__init__(**kw)
        if verify not in ("both", "edit", "jaccard"):
            raise ValueError(f"verify must be both, edit or jaccard, got {verify!r}")
        self.verify_by = verify
        if bands is None or rows is None:
            # candidates are verified, so a missed pair costs more than a false one: weigh recall
            bands, rows = lsh_params(threshold, num_perm, fp_weight=0.05, fn_weight=0.95)
        if bands * rows > num_perm:
            raise ValueError(f"bands × rows = {bands * rows} exceeds num_perm {num_perm}")
        self.threshold, self.num_perm, self.ngram, self.char_ngram = threshold, num_perm, ngram, char_ngram
        self.edit_threshold, self.bands, self.rows, self.seed, self.max_bucket = edit_threshold, bands, rows, seed, max_bucket

    def unit_keys(self, texts):
        sig = MinHasher(self.num_perm, self.ngram, self.char_ngram, self.seed).signatures(texts)
        keys = band_keys(sig, self.bands, self.rows)
        keys[(sig == np.uint32(0xFFFFFFFF)).all(axis=1)] = 0  # no shingles: never a candidate (see reduce)
        return keys

    def n_key_columns(self):
        return self.bands

    def partition_count(self) -> int:
        return max(1, min(self.partitions, self.n_key_columns()))

    def partition_pairs(self, work, shards, offsets, g, P):
        cols = list(range(g, self.bands, P))  # this task's bands, from every shard
        parts, ids = [], []
        for i, p in enumerate(shards):
            k = np.load(work / f"keys-{p}.npy", mmap_mode="r")
            parts.append(np.asarray(k[:, cols]))
            ids.append(np.arange(offsets[i], offsets[i + 1], dtype=np.int64))
        keys = np.concatenate(parts) if parts else np.zeros((0, len(cols)), np.uint64)
        gid = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        valid = keys[:, 0] != 0 if keys.shape[1] else np.zeros(0, bool)
        return candidate_pairs(keys[valid], gid[valid], self.max_bucket)

    def verify(self, pairs, text):
        ok = np.ones(len(pairs), dtype=bool)
        if not len(pairs):
            return ok
        if self.verify_by in ("both", "jaccard"):
            hasher = MinHasher(self.num_perm, self.ngram, self.char_ngram, self.seed)
            shingles: dict[int, np.ndarray] = {}
            for k, (i, j) in enumerate(pairs.tolist()):
                for u in (i, j):
                    if u not in shingles:
                        shingles[u] = hasher.shingles(text(u))
                ok[k] = jaccard(shingles[i], shingles[j]) >= self.threshold
        if self.verify_by in ("both", "edit") and ok.any():
            from rapidfuzz.distance import Levenshtein
            from rapidfuzz.process import cpdist

            sel = np.nonzero(ok)[0]
            a = [normalize_for_hash(text(int(i))) for i in pairs[sel, 0]]
            b = [normalize_for_hash(text(int(j))) for j in pairs[sel, 1]]
            sims = cpdist(a, b, scorer=Levenshtein.normalized_similarity, score_cutoff=self.edit_threshold, workers=1)
            ok[sel] = np.asarray(sims) >= self.edit_threshold
        return ok

    def similar(self, a: str, b: str) -> bool:
        from rapidfuzz.distance import Levenshtein

        return Levenshtein.normalized_similarity(normalize_for_hash(a), normalize_for_hash(b),
                                                 score_cutoff=self.edit_threshold) >= self.edit_threshold


# ----------------------------------------------------------------------------- tasks (module level: picklable)
def _map_task(t: dict) -> dict:
    stage, work, out, part = t["stage"], Path(t["work"]), Path(t["out"]), t["part"]
    done = work / f"map-{part}.json"
    if done.exists():
        return json.loads(done.read_text())
    qw = PartWriter(out / "quarantine", part)
    quarantine = Quarantine(sink=quarantine_sink(qw))
    docs_tmp = work / f".docs-{part}.jsonl.tmp"
    offsets, unit_doc, unit_idx, texts, lengths, quality = [], [], [], [], [], []
    n = 0
    with open(docs_tmp, "wb") as f:
        for doc in read_shard(t["input"], quarantine):
            offsets.append(f.tell())
            f.write((json.dumps(doc.to_json(), ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))
            for k, u in enumerate(stage.units_of(doc)):
                unit_doc.append(n)
                unit_idx.append(k)
                texts.append(u)
                lengths.append(len(u))
                quality.append(float(doc.meta.get("quality", np.nan)) if isinstance(doc.meta.get("quality"), (int, float)) else np.nan)
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(docs_tmp, work / f"docs-{part}.jsonl")
    qw.close()
    keys = stage.unit_keys(texts) if texts else np.zeros((0, stage.n_key_columns()), dtype=np.uint64)
    np.save(work / f"keys-{part}.npy", keys)
    np.savez(work / f"units-{part}.npz", doc=np.array(unit_doc, dtype=np.int64), idx=np.array(unit_idx, dtype=np.int64),
             lengths=np.array(lengths, dtype=np.int64), quality=np.array(quality, dtype=np.float64),
             offsets=np.array(offsets, dtype=np.int64))
    rec = {"units": len(texts), "documents": n, "quarantined": quarantine.count}
    write_json_atomic(done, rec)
    return rec


def _reduce_task(t: dict) -> str:
    stage, work, g, P = t["stage"], Path(t["work"]), t["partition"], t["partitions"]
    path = work / f"pairs-{g:04d}.npy"
    if path.exists():
        return str(path)
    pairs = stage.partition_pairs(work, t["shards"], t["offsets"], g, P)
    tmp = work / f".pairs-{g:04d}.tmp.npy"
    np.save(tmp, pairs)
    os.replace(tmp, path)
    return str(path)


class _UnitTexts:
    """Random access to unit texts through the work copies of the shards."""

    def __init__(self, stage, work: Path, shards: list[str], offsets: list[int]):
        self.stage, self.work, self.shards = stage, work, shards
        self.offsets = np.asarray(offsets)
        self._units, self._files, self._cache = {}, {}, {}

    def __call__(self, gid: int) -> str:
        if gid in self._cache:
            return self._cache[gid]
        i = int(np.searchsorted(self.offsets, gid, side="right") - 1)
        p = self.shards[i]
        if p not in self._units:
            self._units[p] = dict(np.load(self.work / f"units-{p}.npz"))
            self._files[p] = open(self.work / f"docs-{p}.jsonl", "rb")
        u = self._units[p]
        local = gid - self.offsets[i]
        f = self._files[p]
        f.seek(int(u["offsets"][u["doc"][local]]))
        doc = json.loads(f.readline())
        text = doc["text"]
        if self.stage.level == "paragraph":
            s, e = paragraph_spans(text, self.stage.min_paragraph_chars)[u["idx"][local]]
            text = text[s:e]
        self._cache[gid] = text
        return text


def _verify_task(t: dict) -> np.ndarray:
    stage, work, pairs = t["stage"], Path(t["work"]), t["pairs"]
    path = work / f"verified-{t['chunk']:05d}.npy"
    if path.exists():
        return np.load(path)
    ok = stage.verify(pairs, _UnitTexts(stage, work, t["shards"], t["offsets"]))
    verified = pairs[ok]
    tmp = work / f".verified-{t['chunk']:05d}.tmp.npy"
    np.save(tmp, verified)
    os.replace(tmp, path)
    return verified


def _apply_task(t: dict) -> dict:
    stage, work, out, part, i = t["stage"], Path(t["work"]), Path(t["out"]), t["part"], t["index"]
    finished = ShardOutput.finished(out, part)
    if finished is not None:
        return finished
    offsets = t["offsets"]
    kept = np.load(work / f"kept-{part}.npy")
    units = np.load(work / f"units-{part}.npz")
    mapinfo = json.loads((work / f"map-{part}.json").read_text())
    base = offsets[i]
    # for every unit whose kept unit is another one: the id of the document holding the kept unit
    text_of = _UnitTexts(stage, work, t["shards"], offsets)
    removed_units: dict[int, list[tuple[int, int]]] = {}
    for local in np.nonzero(kept != base + np.arange(len(kept)))[0]:
        removed_units.setdefault(int(units["doc"][local]), []).append((int(units["idx"][local]), int(kept[local])))
    doc_id_cache: dict[int, str] = {}

    def doc_id_of(gid: int) -> str:
        if gid not in doc_id_cache:
            j = int(np.searchsorted(np.asarray(offsets), gid, side="right") - 1)
            p = t["shards"][j]
            u = text_of._units.get(p) or dict(np.load(work / f"units-{p}.npz"))
            text_of._units[p] = u
            with open(work / f"docs-{p}.jsonl", "rb") as f:
                f.seek(int(u["offsets"][u["doc"][gid - offsets[j]]]))
                doc_id_cache[gid] = json.loads(f.readline())["id"]
        return doc_id_cache[gid]

    shard = ShardOutput(out, part, paragraphs_removed=0)
    shard.counts.update({"in": mapinfo["documents"] + mapinfo["quarantined"], "quarantined": mapinfo["quarantined"]})
    with open(work / f"docs-{part}.jsonl", "rb") as f:
        for n, line in enumerate(f):
            doc = Document(**json.loads(line))
            shard.read(doc)
            gone = removed_units.get(n)
            if not gone:
                shard.keep(doc)
                continue
            dup_of = doc_id_of(gone[0][1])
            if stage.level == "document":
                shard.remove(doc, stage.name, stage.removal_reason, duplicate_of=dup_of)
                continue
            drop = {k for k, _ in gone}
            shard.counts["paragraphs_removed"] += len(drop)
            text = _without_paragraphs(doc.text, paragraph_spans(doc.text, stage.min_paragraph_chars), drop)
            if not text:
                shard.remove(doc, stage.name, "all_paragraphs_duplicated", duplicate_of=dup_of)
                continue
            meta = {**doc.meta, "paragraphs_removed": len(drop), "paragraph_duplicate_of": dup_of}
            shard.keep(replace(doc, text=text, meta=meta))
    return shard.close()


def _without_paragraphs(text: str, spans: list[tuple[int, int]], drop: set[int]) -> str:
    """``text`` without the paragraphs numbered in ``drop``, runs of blank lines closed up."""
    pieces, pos = [], 0
    for k, (s, e) in enumerate(spans):
        if k in drop:
            pieces.append(text[pos:s])
            pos = e
    pieces.append(text[pos:])
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", "".join(pieces)).strip()
