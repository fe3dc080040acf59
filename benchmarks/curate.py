"""Whole curation pipeline throughput: MB/s and MB/s per core on ../shared/data/corpus.

Runs `alaya data curate` with the default pipeline (normalize, language, filter, exact dedup, fuzzy dedup
at document and paragraph level, type) with 1 process and with all cores, each into a fresh folder, and
prints MB of input per second (overall and per core) and the time of each stage.
Run:  python benchmarks/curate.py [--processes 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from alaya.data.curate import run_curate

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", nargs="+", default=[str(CORPUS)])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = ap.parse_args()
    rows = []
    for p in args.processes:
        out = tempfile.mkdtemp(prefix=f"alaya-curate-{p}-")
        m = run_curate(None, args.input, out, processes=p)
        rows.append({"processes": p, "mb": m["mb_in"], "seconds": m["seconds"], "mb_per_s": m["mb_per_s"],
                     "mb_per_s_per_core": round(m["mb_per_s"] / p, 3), "docs_in": m["documents_in"],
                     "docs_out": m["documents_out"]})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\ncurate on {args.input} ({rows[0]['mb']} MB, {rows[0]['docs_in']} documents -> {rows[0]['docs_out']}), "
          f"{platform.machine()}")
    print(f"{'processes':>9}{'seconds':>9}{'MB/s':>8}{'MB/s per core':>15}")
    for r in rows:
        print(f"{r['processes']:>9}{r['seconds']:>9}{r['mb_per_s']:>8}{r['mb_per_s_per_core']:>15}")


if __name__ == "__main__":
    main()
