"""Whole curation pipeline throughput: MB/s and MB/s per core on ../shared/data/corpus.

Runs `alaya data curate` with the default pipeline (normalize, language, filter, exact dedup, fuzzy dedup
at document and paragraph level, type) with 1 process and with all cores, each into a fresh folder, and
prints MB of input per second (overall and per core) and the time of each stage. ``--one-file`` first
joins the inputs into one JSONL file (the case of a corpus delivered as one big file), ``--shard-mb`` sets
the size of the ranges such a file is cut into.
Run:  python benchmarks/curate.py [--processes 1 2] [--one-file --shard-mb 4]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from alaya.data.curate import run_curate
from alaya.data.documents import read_documents

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", default=[str(CORPUS)])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    ap.add_argument("--one-file", action="store_true", help="join the inputs into one JSONL file first")
    ap.add_argument("--shard-mb", type=float, default=None, help="the pipeline's shard_mb (default: its own)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="alaya-curate-"))
    if args.one_file:
        joined = work / "corpus.jsonl"
        with open(joined, "w", encoding="utf-8") as f:
            for d in read_documents(args.input):
                f.write(json.dumps({"id": d.id, "text": d.text, "meta": d.meta}, ensure_ascii=False) + "\n")
        args.input = [str(joined)]
    config = None
    if args.shard_mb is not None:
        config = work / "curate.yaml"
        config.write_text(f"shard_mb: {args.shard_mb}\n", encoding="utf-8")
    rows = []
    for p in args.processes:
        out = tempfile.mkdtemp(prefix=f"alaya-curate-{p}-")
        m = run_curate(str(config) if config else None, args.input, out, processes=p)
        rows.append({"processes": p, "mb": m["mb_in"], "seconds": m["seconds"], "mb_per_s": m["mb_per_s"],
                     "mb_per_s_per_core": round(m["mb_per_s"] / p, 3), "docs_in": m["documents_in"],
                     "docs_out": m["documents_out"]})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\ncurate on {args.input} ({rows[0]['mb']} MB, {rows[0]['docs_in']} documents -> {rows[0]['docs_out']}), "
          f"{platform.machine()}, first stage in {m['stages'][0]['shards']} shards")
    print(f"{'processes':>9}{'seconds':>9}{'MB/s':>8}{'MB/s per core':>15}")
    for r in rows:
        print(f"{r['processes']:>9}{r['seconds']:>9}{r['mb_per_s']:>8}{r['mb_per_s_per_core']:>15}")


if __name__ == "__main__":
    main()
