"""``alaya data curate``: a pipeline of stages from a YAML config, locally or on Ray, resumable.

Output folder::

    OUT/config.yaml                 the pipeline as run (a rerun with another config is refused)
    OUT/stages/NN-NAME/             one folder per stage (data/, removed/, quarantine/, manifest.json)
    OUT/stats.json                  tokens, documents and characters by language and type, quality scores
    OUT/mixture.json                sampling weights per source (``alaya pretrain data.mixture=...``)
    OUT/report/                     report.md and PNG charts
    OUT/manifest.json               every stage's counts, the curated data folder, time, MB/s

The curated documents are the last stage's ``data/`` (listed in manifest.json as ``output``).
"""
from __future__ import annotations

import bisect
import json
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from alaya.configfile import read_yaml_mapping, settings_changes
from alaya.data.documents import DEFAULT_SHARD_MB, Quarantine, expand_paths, plan_shards
from alaya.fileio import write_json_atomic
from alaya.data.engine import data_parts, finish_stage, make_engine, run_document_shard
from alaya.data.record import TokenCounter
from alaya.data.stages.base import CorpusStage
from alaya.data.mixture import ALAYA_RECIPE_LANG, ALAYA_RECIPE_TYPE, mixture_weights
from alaya.data.stages import build_stage

DEFAULT_PIPELINE: list[dict[str, Any]] = [
    {"stage": "normalize"},
    {"stage": "language"},
    {"stage": "filter"},
    {"stage": "exact_dedup"},
    {"stage": "fuzzy_dedup", "threshold": 0.8, "keep": "longest"},
    {"stage": "fuzzy_dedup", "level": "paragraph", "threshold": 0.8},
    {"stage": "type"},
]
"""The one curation pipeline: ``alaya data curate`` without ``pipeline:``, the quickstart and the curation ablation
all run it. Each stage's thresholds are its defaults (gopher 50 words, Chinese 50 characters, edit similarity
0.7, ...); of near-duplicate documents the longest copy is kept."""
QUALITY_BINS = 20
LENGTH_EDGES = [0] + [int(10 ** (k / 4)) for k in range(4, 29)]  # 10, 17, 31, ... 10^7 characters
CHARS_PER_TOKEN_ESTIMATE = {"en": 4.0, "zh": 1.4, "code": 3.2, "other": 3.0}


def load_pipeline_config(path: str | Path | None) -> dict:
    cfg: dict[str, Any] = {"pipeline": DEFAULT_PIPELINE, "mixture": {}, "report": True, "shard_mb": DEFAULT_SHARD_MB}
    if path:
        p = Path(path)
        loaded = read_yaml_mapping(p)
        unknown = set(loaded) - set(cfg)
        if unknown:
            raise ValueError(f"{p}: unknown keys {sorted(unknown)}; known: {', '.join(cfg)}")
        cfg.update(loaded)
    if not isinstance(cfg["pipeline"], list) or not cfg["pipeline"]:
        raise ValueError("pipeline must be a non-empty list of stages")
    if isinstance(cfg["shard_mb"], bool) or not isinstance(cfg["shard_mb"], (int, float)) or cfg["shard_mb"] <= 0:
        raise ValueError(f"shard_mb must be a positive number of megabytes, got {cfg['shard_mb']!r}")
    for entry in cfg["pipeline"]:
        build_stage(entry)  # fail on a bad stage before any work
    mixture_keys = {"lang", "type", "max_epochs", "total_tokens", "tokenizer"}
    bad = set(cfg["mixture"] or {}) - mixture_keys
    if bad:
        raise ValueError(f"unknown mixture keys {sorted(bad)}; known: {sorted(mixture_keys)}")
    return cfg


def run_stage(stage, engine, inputs: Sequence[str], out: Path, shard_mb: float = DEFAULT_SHARD_MB) -> dict:
    """One stage over its input shards into ``out`` (skipped when ``out/manifest.json`` exists). A large
    plain JSONL input is cut into line-aligned ranges of about ``shard_mb`` so processes share it."""
    manifest = out / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    inputs = plan_shards(inputs, int(shard_mb * 2**20))
    t0 = time.perf_counter()
    if isinstance(stage, CorpusStage):
        return stage.run(engine, list(inputs), out)
    tasks = [{"stage": stage, "input": src, "output": str(out), "part": f"{i:05d}"} for i, src in enumerate(inputs)]
    counts = engine.map(run_document_shard, tasks, desc=stage.name)
    return finish_stage(out, stage.name, counts, {"wall_seconds": round(time.perf_counter() - t0, 3)})


def run_curate(config: str | None, inputs: Sequence[str], output: str, engine: str = "local",
               processes: int | None = None, address: str | None = None) -> dict:
    cfg = load_pipeline_config(config)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    files = expand_paths(inputs)
    record = {"config": cfg, "inputs": files}
    cfg_path = out / "config.yaml"
    if cfg_path.exists():
        old = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        changed = settings_changes(old, json.loads(json.dumps(record)))
        if changed:
            raise ValueError(f"{out} was curated with another config or inputs ({'; '.join(changed)}); "
                             "use a new --output")
    else:
        cfg_path.write_text(yaml.safe_dump(json.loads(json.dumps(record)), sort_keys=False, allow_unicode=True), encoding="utf-8")
    final = out / "manifest.json"
    if final.exists():
        print(f"{out}: already finished; nothing to do", flush=True)
        return json.loads(final.read_text(encoding="utf-8"))
    eng = make_engine(engine, processes, address)
    t0 = time.perf_counter()
    manifests, current = [], files
    for k, entry in enumerate(cfg["pipeline"], 1):
        stage = build_stage(entry)
        stage_dir = out / "stages" / f"{k:02d}-{stage.name}"
        m = run_stage(stage, eng, current, stage_dir, cfg["shard_mb"])
        manifests.append(m)
        print(f"[{k}/{len(cfg['pipeline'])}] {stage.name}: in {m['in']}, kept {m['kept']}, removed {m['removed']}, "
              f"quarantined {m['quarantined']}", flush=True)
        current = data_parts(stage_dir)
    mix_cfg = cfg["mixture"] or {}
    stats = collect_stats(eng, current, mix_cfg.get("tokenizer"))
    write_json_atomic(out / "stats.json", stats)
    empty = _emptied_by(manifests, len(files))
    mixture = None
    if empty is None:
        types = mix_cfg.get("type", ALAYA_RECIPE_TYPE)  # null or "available": only the language shares are controlled
        mixture = mixture_weights(stats["tokens"], mix_cfg.get("lang", ALAYA_RECIPE_LANG),
                                  None if types in (None, "available") else types,
                                  mix_cfg.get("max_epochs", 4.0), mix_cfg.get("total_tokens"))
        mixture["token_count"] = stats["token_count"]
        write_json_atomic(out / "mixture.json", mixture)
    seconds = time.perf_counter() - t0
    mb = manifests[0]["bytes_in"] / 1e6 if manifests else 0.0
    summary = {"output": str(out / "stages" / f"{len(cfg['pipeline']):02d}-{manifests[-1]['stage']}" / "data"),
               "engine": engine, "stages": manifests, "documents_in": manifests[0]["in"] if manifests else 0,
               "documents_out": manifests[-1]["kept"] if manifests else 0, "seconds": round(seconds, 2),
               "mb_in": round(mb, 3), "mb_per_s": round(mb / seconds, 3) if seconds else None,
               "processes": getattr(eng, "processes", None)}
    if empty is not None:
        summary["empty_reason"] = empty
    if cfg.get("report", True) or empty is not None:
        from alaya.data.report import write_report

        summary["report"] = str(write_report(out, summary, stats, mixture))
    if empty is not None:  # no manifest: a rerun with another config or input is not refused as "finished"
        raise ValueError(f"{out}: {empty}; see {summary['report']}")
    write_json_atomic(final, summary)
    return summary


def _emptied_by(manifests: list[dict], inputs: int) -> str | None:
    """None when documents are left, else which stage removed the last of them."""
    if not manifests or manifests[-1]["kept"] > 0:
        return None if manifests else "no input documents"
    for k, m in enumerate(manifests, 1):
        if m["kept"] == 0:
            if m["in"] == 0:
                return f"no documents in {inputs} input file(s)"
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(m["reasons"].items(), key=lambda kv: -kv[1])) or "—"
            return (f"every document was removed: stage {k} '{m['stage']}' removed the last {m['in']} "
                    f"({reasons}); loosen its settings or check the input")
    return None


def _stats_task(t: dict) -> dict:
    from alaya.data.engine import read_shard

    count = TokenCounter(t["tokenizer"]) if t.get("tokenizer") else None
    out = {"tokens": {}, "documents": {}, "chars": {}, "quality_hist": [0] * QUALITY_BINS,
           "length_hist": [0] * len(LENGTH_EDGES)}
    batch: list = []

    def flush():
        counts = count([d.text for d in batch]) if count else None
        for k, d in enumerate(batch):
            lang = d.meta.get("lang", "other")
            src = f"{lang}-{'code' if lang == 'code' else d.meta.get('type', 'others')}"
            n = counts[k] if counts else int(round(len(d.text) / CHARS_PER_TOKEN_ESTIMATE.get(lang, 3.0)))
            out["tokens"][src] = out["tokens"].get(src, 0) + n
            out["documents"][src] = out["documents"].get(src, 0) + 1
            out["chars"][src] = out["chars"].get(src, 0) + len(d.text)
            if isinstance(d.meta.get("quality"), (int, float)):
                out["quality_hist"][min(QUALITY_BINS - 1, max(0, int(d.meta["quality"] * QUALITY_BINS)))] += 1
            out["length_hist"][bisect.bisect_right(LENGTH_EDGES, len(d.text)) - 1] += 1
        batch.clear()

    for d in read_shard(t["input"], Quarantine()):
        batch.append(d)
        if len(batch) >= 256:
            flush()
    flush()
    return out


def collect_stats(engine, parts: Sequence[str], tokenizer: str | None) -> dict:
    res = engine.map(_stats_task, [{"input": p, "tokenizer": tokenizer} for p in parts], desc="stats")
    total = {"tokens": {}, "documents": {}, "chars": {}, "quality_hist": [0] * QUALITY_BINS,
             "length_hist": [0] * len(LENGTH_EDGES), "length_edges": LENGTH_EDGES}
    for r in res:
        for key in ("tokens", "documents", "chars"):
            for k, v in r[key].items():
                total[key][k] = total[key].get(k, 0) + v
        for key in ("quality_hist", "length_hist"):
            total[key] = [a + b for a, b in zip(total[key], r[key])]
    total["token_count"] = "tokenizer" if tokenizer else "estimated from characters (chars per token: " + \
        ", ".join(f"{k} {v}" for k, v in CHARS_PER_TOKEN_ESTIMATE.items()) + ")"
    for key in ("tokens", "documents", "chars"):
        total[key] = dict(sorted(total[key].items()))
    return total


def run_single_stage(entry: dict, inputs: Sequence[str], output: str, engine: str = "local",
                     processes: int | None = None, address: str | None = None) -> dict:
    """One stage (its own subcommand) from inputs into ``output`` (a stage folder); resumable."""
    stage = build_stage(entry)
    files = expand_paths(inputs)
    return run_stage(stage, make_engine(engine, processes, address), files, Path(output))


def run_mix(inputs: Sequence[str], output: str, tokenizer: str | None = None, max_epochs: float = 4.0,
            total_tokens: float | None = None, processes: int | None = None) -> dict:
    """Token counts of curated documents → mixture.json (weights for ``alaya pretrain data.mixture``)."""
    files = expand_paths(inputs)
    stats = collect_stats(make_engine("local", processes), files, tokenizer)
    mixture = mixture_weights(stats["tokens"], ALAYA_RECIPE_LANG, ALAYA_RECIPE_TYPE, max_epochs, total_tokens)
    mixture["token_count"] = stats["token_count"]
    write_json_atomic(Path(output), mixture)
    return mixture
