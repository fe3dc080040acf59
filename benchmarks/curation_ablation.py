"""The recipe's central claim, measured: does curation make a better model?

From raw public text in ../shared/data (the labelled bilingual sample `corpus/` plus raw web pages from C4 and
Weibo chat, with the near-duplicates and low-quality pages raw text has; duplicates of some pages are added as
a crawler would see them: mirrors with a changed footer), the same small model is trained with the same seed
for the same number of tokens on
  (a) raw        the raw documents, sampled in proportion to their tokens
  (a') raw-mixed the raw documents, only labelled by language (nothing removed) and sampled at the recipe's
                 language shares, as (b)-(d) are: what curation changes beyond the mixing
  (b) curated    after `alaya data curate` (normalize, language, filters, quality classifier, exact + fuzzy
                 dedup of documents and paragraphs, type), sampled at the recipe's language shares
  (c) no-fuzzy   (b) without the two fuzzy-dedup stages
  (d) no-quality (b) without the quality stage
then evaluated with `alaya eval` on the same clean held-out text (encyclopedia, books and news documents held
out of every variant before anything runs): bits per byte by language, and ARC-Easy (0-shot) as one
multiple-choice slice. Every variant uses one tokenizer (trained on the held-in clean text), so bits per byte
compare the models, not the tokenizers. The table shows the mean over seeds and each difference to (a) with
its spread (min..max over seeds). It records what it shows, whatever it shows.

Run:  python benchmarks/curation_ablation.py [--steps 300] [--seeds 0 1] [--docs-per-file 400] [--work DIR]
      [--variants raw raw-mixed ...] [--merge EARLIER/ablation.json]   (add variants to an earlier run's table)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import DATA, cpu_model  # noqa: E402 (benchmarks/machine.py)
HELDOUT_TYPES = ("encyclopedia", "books", "news")



def _heldout(doc_id: str) -> bool:
    return int(hashlib.blake2b(doc_id.encode(), digest_size=8).hexdigest(), 16) % 10 == 0


def build_raw(work: Path, per_file: int, seed: int) -> tuple[Path, Path, dict]:
    """raw.jsonl (what every variant starts from) and heldout.jsonl (clean text none of them sees)."""
    rng = random.Random(seed)
    raw, held, counts = [], [], {"corpus": 0, "web": 0, "mirrors": 0, "heldout": 0}
    for f in sorted((DATA / "corpus").glob("*.jsonl")):
        for n, line in enumerate(open(f, encoding="utf-8")):
            if n >= per_file:
                break
            d = json.loads(line)
            if d["meta"].get("type") in HELDOUT_TYPES and d["meta"]["lang"] != "code" and _heldout(d["id"]):
                held.append({"id": d["id"], "text": d["text"][:3000], "meta": d["meta"]})
                continue
            raw.append(d)
    counts["corpus"], counts["heldout"] = len(raw), len(held)
    for n, line in enumerate(open(DATA / "lf_c4_demo" / "c4_demo.jsonl", encoding="utf-8")):
        text = json.loads(line).get("text", "")
        raw.append({"id": f"c4/{n}", "text": text, "meta": {"source": "c4"}})
        counts["web"] += 1
    lccc = DATA / "lccc_toy" / "toy_data.json"  # Weibo conversations, characters separated by spaces
    if lccc.is_file():
        splits = json.loads(lccc.read_text(encoding="utf-8"))
        convs = [c for rows in splits.values() if isinstance(rows, list) for c in rows]
        for k, conv in enumerate(convs[: 4 * per_file]):
            if isinstance(conv, list) and all(isinstance(x, str) for x in conv):
                text = "\n".join("".join(u.split()) for u in conv)
                raw.append({"id": f"lccc/{k}", "text": text, "meta": {"source": "lccc"}})
                counts["web"] += 1
    # mirrors: a web crawl sees the same page on several hosts, with another footer or a changed line
    pages = [d for d in raw if len(d["text"]) > 400]
    for k, d in enumerate(rng.sample(pages, min(len(pages) // 4, 600))):
        for copy in range(rng.randint(1, 3)):
            footer = rng.choice(["\n\nShare this page: Facebook | Twitter | Email", "\n\n© All rights reserved.",
                                 "\n\n本文转载自网络，如有侵权请联系删除。", "\n\n点击阅读原文"])
            raw.append({"id": f"mirror/{k}/{copy}", "text": d["text"] + footer, "meta": dict(d["meta"], source="mirror")})
            counts["mirrors"] += 1
    rng.shuffle(raw)
    raw_path, held_path = work / "raw.jsonl", work / "heldout.jsonl"
    raw_path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in raw), encoding="utf-8")
    held_path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in held), encoding="utf-8")
    return raw_path, held_path, counts


def curate(work: Path, raw: Path, name: str, stages: list[dict]) -> tuple[Path, dict]:
    import yaml

    from alaya.data.curate import run_curate

    cfg = work / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({"pipeline": stages, "mixture": {"type": "available", "max_epochs": 4},
                                   "report": False}), encoding="utf-8")
    summary = run_curate(str(cfg), [str(raw)], str(work / name))
    return Path(summary["output"]), summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--docs-per-file", type=int, default=400)
    ap.add_argument("--preset", default="alaya-tiny")
    ap.add_argument("--arc-limit", type=int, default=300)
    ap.add_argument("--work", default=None)
    ap.add_argument("--variants", nargs="+", default=["raw", "raw-mixed", "curated", "no-fuzzy", "no-quality"])
    ap.add_argument("--merge", default=None, help="an earlier run's ablation.json: its variants not run now join the table")
    args = ap.parse_args()
    if not (DATA / "corpus").is_dir() or not (DATA / "lf_c4_demo").is_dir():
        sys.exit(f"skipped: corpus/ and lf_c4_demo/ not found under {DATA} (set ALAYA_DATA)")
    from alaya.data.curate import DEFAULT_PIPELINE
    from alaya.data.stages.quality import train_quality
    from alaya.eval.run import EvalSettings, run_eval
    from alaya.model.config import preset
    from alaya.tokenizer import train_tokenizer_on_documents
    from alaya.train.pretrain import run_pretrain
    from alaya.tokenizer.shards import tokenize_to_shards

    t0 = time.time()
    work = Path(args.work or tempfile.mkdtemp(prefix="curation-ablation-"))
    work.mkdir(parents=True, exist_ok=True)
    raw, held, counts = build_raw(work, args.docs_per_file, 0)
    print(f"raw corpus: {counts}  ({work})", flush=True)
    # the quality classifier: fit = encyclopedia, books, academic of corpus/ (held-in); unfit = raw web pages
    fit = work / "fit.jsonl"
    unfit = work / "unfit.jsonl"
    docs = [json.loads(l) for l in open(raw, encoding="utf-8")]
    fit.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs
                           if d["meta"].get("type") in ("encyclopedia", "books", "academic")), encoding="utf-8")
    unfit.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs
                             if d["meta"].get("source") in ("c4", "lccc")), encoding="utf-8")
    qm = train_quality([str(fit)], [str(unfit)], str(work / "quality-model"), held_out=0.2, seed=0)
    print(f"quality classifier: {json.dumps({k: qm[k] for k in qm if k in ('precision', 'recall', 'roc_auc')})}", flush=True)
    quality = {"stage": "quality", "model": str(work / "quality-model"), "mode": "threshold", "threshold": 0.5,
               "langs": ["en", "zh"]}
    full = list(DEFAULT_PIPELINE)  # the one curation pipeline, with the trained quality classifier after the filters
    full.insert(next(i for i, x in enumerate(full) if x["stage"] == "filter") + 1, quality)
    every = {"raw": None,
                "raw-mixed": [{"stage": "language", "keep": ["en", "zh", "code", "other"]}],
                "curated": full,
                "no-fuzzy": [x for x in full if x.get("stage") != "fuzzy_dedup"],
                "no-quality": [x for x in full if x.get("stage") != "quality"]}
    variants = {n: every[n] for n in args.variants}
    cfg = preset(args.preset)
    data, kept = {}, {}
    for name, stages in variants.items():
        if stages is None:
            data[name], kept[name] = raw, counts["corpus"] + counts["web"] + counts["mirrors"]
            continue
        data[name], summary = curate(work, raw, name, stages)
        kept[name] = summary["documents_out"]
        print(f"{name}: {summary['documents_in']} -> {summary['documents_out']} documents", flush=True)
    tok = work / "tokenizer"
    if "curated" not in data:  # the tokenizer is always the one of the curated text
        data["curated"], _ = curate(work, raw, "curated", full)
    if not (tok / "tokenizer.json").is_file():
        train_tokenizer_on_documents([str(data["curated"])], tok, vocab_size=cfg.vocab_size, progress=False)
    results: dict[str, list[dict]] = {n: [] for n in variants}
    for name in variants:
        shards = work / f"tokens-{name}"
        # raw text has no language labels: the same language stage labels it (and removes nothing: keep all)
        group = ("lang",) if name != "raw" else ()
        tokenize_to_shards([str(data[name])], tok, shards, group_by=group, heldout_fraction=0.0, progress=False)
        weights = None
        if name != "raw":
            mixture = json.loads((work / name / "mixture.json").read_text(encoding="utf-8"))["weights"]
            weights = {}
            for src, w in mixture.items():
                weights[src.partition("-")[0]] = weights.get(src.partition("-")[0], 0.0) + w
        for seed in args.seeds:
            run = work / f"run-{name}-{seed}"
            over = [f"run_dir={run}", f"seed={seed}", f"model.preset={args.preset}", f"data.path={shards}",
                    f"tokenizer={tok}", "optimizer.lr=3.0e-3", "optimizer.min_lr=3.0e-4",
                    f"schedule.warmup_steps={max(1, args.steps // 10)}", f"schedule.max_steps={args.steps}",
                    f"train.seq_len={min(256, cfg.max_seq_len)}", "train.micro_batch_size=16", "train.precision=fp32",
                    f"checkpoint.every={args.steps}", "checkpoint.keep=1", f"eval.every={args.steps}",
                    "log.progress=false"]
            if weights:
                over.append("data.weights={" + ", ".join(f"{k}: {v}" for k, v in weights.items()) + "}")
            run_pretrain(None, over)
            out = run_eval(str(run / "final"), [f"perplexity={held}", "arc_easy"], device="cpu", dtype="float32",
                           settings=EvalSettings(shots=0, limit=args.arc_limit, data_dir=DATA, progress=False))
            r = out["results"]["results"]
            row = {"bpb": r["perplexity"]["bits_per_byte,none"], "arc_easy": r["arc_easy"]["acc,none"]}
            for lang in ("en", "zh"):
                if f"perplexity_{lang}" in r:
                    row[f"bpb_{lang}"] = r[f"perplexity_{lang}"]["bits_per_byte,none"]
            results[name].append(row)
            print(f"{name} seed {seed}: {json.dumps({k: round(v, 4) for k, v in row.items()})}", flush=True)
    if args.merge:
        earlier = json.loads(Path(args.merge).read_text(encoding="utf-8"))
        for name, rows in earlier["results"].items():
            if name not in results:
                results[name], kept[name] = rows, earlier["kept"][name]
        results = {n: results[n] for n in every if n in results}
    print_table(results, kept, args, time.time() - t0)
    (work / "ablation.json").write_text(json.dumps({"results": results, "kept": kept, "args": vars(args)}, indent=1))


def print_table(results: dict, kept: dict, args, seconds: float) -> None:
    metrics = ["bpb", "bpb_en", "bpb_zh", "arc_easy"]
    print(f"\ncuration ablation: {args.preset}, {args.steps} steps × 16 × 256 tokens, seeds {args.seeds}, "
          f"{cpu_model()}, {time.strftime('%Y-%m-%d')}, {seconds / 60:.1f} min")
    print("bits per byte on clean held-out text (lower is better); ARC-Easy accuracy (chance 0.25); "
          "difference to raw: mean (min..max over seeds)")
    print("| variant | documents | " + " | ".join(metrics) + " | " + " | ".join(f"Δ{m} vs raw" for m in metrics) + " |")
    print("|---|---:|" + "---:|" * (2 * len(metrics)))
    base = results["raw"]
    for name, rows in results.items():
        cells = [f"{statistics.mean(r[m] for r in rows):.4f}" if all(m in r for r in rows) else "—" for m in metrics]
        deltas = []
        for m in metrics:
            if name == "raw" or not all(m in r for r in rows + base):
                deltas.append("—")
                continue
            d = [r[m] - b[m] for r, b in zip(rows, base)]  # the same seed against the same seed
            deltas.append(f"{statistics.mean(d):+.4f} ({min(d):+.4f}..{max(d):+.4f})")
        print(f"| {name} | {kept[name]} | " + " | ".join(cells) + " | " + " | ".join(deltas) + " |")


if __name__ == "__main__":
    main()
