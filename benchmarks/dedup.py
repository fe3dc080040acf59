"""Document-level fuzzy dedup: our MinHash + LSH versus datasketch (MinHash + MinHashLSH), same run.

Documents: real text from ../shared/data/corpus (English, Chinese, code), cut into documents of about
``--doc-chars`` characters, plus injected near-duplicates: copies with a few words (English, code) or
characters (Chinese) replaced, deleted or inserted, so their true Jaccard spreads from about 0.5 to 1.
Both sides use the same shingles (word 5-grams; character 5-grams for Chinese, after the same
normalisation), num_perm 128 and threshold 0.8.

Speed: documents/s from text to candidate pairs (signatures + LSH), one process each, after each side has
run once on 200 documents (the one-time start-up is printed apart). Quality: against
exact Jaccard of the shingle sets: recall of the true pairs (J ≥ 0.8) among the injected ones, precision of
what each side reports (datasketch: LSH candidates; ours: after edit-distance verification, the
pipeline's output). Memory: peak RSS of our signatures + band keys + candidates for ``--memory-docs``
short documents, in a subprocess.

Run:  python benchmarks/dedup.py [--docs 20000] [--memory-docs 1000000]
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from alaya.data.dedup.lsh import candidate_pairs
from alaya.data.dedup.minhash import MinHasher, band_keys, is_cjk, jaccard, lsh_params, normalize_for_hash

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus"
WORD = re.compile(r"\w+")


def real_documents(n: int, doc_chars: int, seed: int) -> list[str]:
    if not CORPUS.is_dir():
        raise SystemExit(f"{CORPUS} not found: this benchmark needs the shared corpus")
    pieces = []
    for f in sorted(CORPUS.glob("*.jsonl")):
        for line in open(f, encoding="utf-8"):
            text = json.loads(line)["text"]
            for i in range(0, len(text) - doc_chars // 2, doc_chars):
                pieces.append(text[i : i + doc_chars])
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pieces), size=min(n, len(pieces)), replace=False)
    return [pieces[i] for i in idx]


def near_copy(text: str, rng: np.random.Generator) -> str:
    """Replace, delete or insert a few units (words, or characters for Chinese)."""
    cjk = is_cjk(normalize_for_hash(text))
    units = list(text) if cjk else text.split(" ")
    k = int(rng.integers(1, 4)) * (3 if cjk else 1)
    for _ in range(k):
        j = int(rng.integers(len(units)))
        op = rng.integers(3)
        if op == 0:
            units[j] = "替" if cjk else "replaced"
        elif op == 1 and len(units) > 2:
            del units[j]
        else:
            units.insert(j, "插" if cjk else "inserted")
    return ("" if cjk else " ").join(units)


def shingle_strings(text: str, k: int = 5) -> set[bytes]:
    """The same shingles as MinHasher, as strings for datasketch."""
    t = normalize_for_hash(text)
    if is_cjk(t):
        chars = [c for c in t if ord(c) > 32]
        units = chars
    else:
        units = WORD.findall(t)
    if len(units) < k:
        return {" ".join(units).encode()}
    return {"\x1f".join(units[i : i + k]).encode() for i in range(len(units) - k + 1)}


def ours(texts: list[str], threshold: float, num_perm: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    b, r = lsh_params(threshold, num_perm, fp_weight=0.05, fn_weight=0.95)  # as FuzzyDedup: recall first
    sig = MinHasher(num_perm).signatures(texts)
    pairs = candidate_pairs(band_keys(sig, b, r))
    return pairs, time.perf_counter() - t0


def datasketch_side(texts: list[str], threshold: float, num_perm: int) -> tuple[set, float]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    pairs = set()
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingle_strings(t)))
        for j in lsh.query(m):
            pairs.add((min(i, j), max(i, j)))
        lsh.insert(i, m)
    return pairs, time.perf_counter() - t0


def memory_child(n: int, doc_chars: int) -> None:
    texts = real_documents(n, doc_chars, seed=3)
    while len(texts) < n:  # the corpus has fewer pieces: reuse them shifted by one character (still distinct text)
        texts += [t[1:] + t[:1] for t in texts[: n - len(texts)]]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    pairs, _ = ours(texts, 0.8, 128)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"docs": n, "peak_rss_gb": peak * 1024 / 1e9, "texts_rss_gb": base * 1024 / 1e9,
                      "seconds": dt, "candidate_pairs": int(len(pairs))}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--doc-chars", type=int, default=600)
    ap.add_argument("--dup-fraction", type=float, default=0.1)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--edit-threshold", type=float, default=0.7)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--memory-docs", type=int, default=1_000_000)
    ap.add_argument("--memory-doc-chars", type=int, default=160)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_docs, args.memory_doc_chars)
        return
    rng = np.random.default_rng(0)
    base = real_documents(args.docs, args.doc_chars, seed=1)
    n_dup = int(len(base) * args.dup_fraction)
    src = rng.choice(len(base), size=n_dup, replace=False)
    texts = base + [near_copy(base[i], rng) for i in src]
    injected = [(int(i), len(base) + k) for k, i in enumerate(src)]

    # one-time start-up, reported apart: loading the compiled kernels (numba's cache; the first run on a
    # machine compiles them) and building the folding tables; datasketch's imports and hash set-up
    _, startup_ours = ours(texts[:200], args.threshold, args.num_perm)
    _, startup_ds = datasketch_side(texts[:200], args.threshold, args.num_perm)
    our_pairs, t_ours = ours(texts, args.threshold, args.num_perm)
    ds_pairs, t_ds = datasketch_side(texts, args.threshold, args.num_perm)

    # verification of our candidates (the pipeline's next step, verify: both), timed separately
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cpdist

    h = MinHasher(args.num_perm)
    t0 = time.perf_counter()
    norm = [normalize_for_hash(t) for t in texts]
    sims = cpdist([norm[i] for i in our_pairs[:, 0]], [norm[j] for j in our_pairs[:, 1]],
                  scorer=Levenshtein.normalized_similarity, score_cutoff=args.edit_threshold, workers=1)
    edit_ok = [tuple(p) for p, s in zip(our_pairs.tolist(), sims) if s >= args.edit_threshold]
    t_edit = time.perf_counter() - t0
    sh: dict[int, np.ndarray] = {}
    verified = set()
    for i, j in edit_ok:
        for k in (i, j):
            if k not in sh:
                sh[k] = h.shingles(texts[k])
        if jaccard(sh[i], sh[j]) >= args.threshold:
            verified.add((i, j))
    t_verify = time.perf_counter() - t0
    edit_only = set(edit_ok)

    cache: dict[int, np.ndarray] = {}

    def J(i: int, j: int) -> float:
        for k in (i, j):
            if k not in cache:
                cache[k] = h.shingles(texts[k])
        return jaccard(cache[i], cache[j])

    truth = {p for p in injected if J(*p) >= args.threshold}
    found_ours = {tuple(p) for p in our_pairs.tolist()}

    def prec(pairs: set) -> float:
        return sum(J(i, j) >= args.threshold for i, j in pairs) / len(pairs) if pairs else 1.0

    def rec(pairs: set) -> float:
        return len(truth & pairs) / len(truth) if truth else 1.0

    rows = {
        "datasketch": {"docs_per_s": len(texts) / t_ds, "candidates": len(ds_pairs), "precision": prec(ds_pairs), "recall": rec(ds_pairs)},
        "alaya_lsh": {"docs_per_s": len(texts) / t_ours, "candidates": len(found_ours), "precision": prec(found_ours), "recall": rec(found_ours)},
        "alaya_edit": {"docs_per_s": len(texts) / (t_ours + t_edit), "candidates": len(edit_only),
                       "precision": prec(edit_only), "recall": rec(edit_only)},
        "alaya_verified": {"docs_per_s": len(texts) / (t_ours + t_verify), "candidates": len(verified),
                           "precision": prec(verified), "recall": rec(verified)},
    }
    mem = subprocess.run([sys.executable, __file__, "--memory-child", "--memory-docs", str(args.memory_docs),
                          "--memory-doc-chars", str(args.memory_doc_chars)], capture_output=True, text=True, check=True)
    memory = json.loads(mem.stdout.strip().splitlines()[-1])
    print(json.dumps({"rows": rows, "startup_s": {"alaya": startup_ours, "datasketch": startup_ds}, "true_pairs": len(truth), "injected": len(injected), "memory": memory}))
    b, r = lsh_params(args.threshold, args.num_perm, fp_weight=0.05, fn_weight=0.95)
    print(f"\n{len(texts)} documents (~{args.doc_chars} characters of real en/zh/code text, {len(injected)} injected "
          f"near-duplicates, {len(truth)} with Jaccard >= {args.threshold}); num_perm {args.num_perm}, {b} bands x {r} rows; "
          f"{platform.machine()}, one process each")
    print(f"{'':<36}{'docs/s':>10}{'pairs':>8}{'precision':>11}{'recall':>8}")
    for name, label in (("datasketch", "datasketch MinHash + MinHashLSH"), ("alaya_lsh", "alaya MinHash + LSH"),
                        ("alaya_edit", f"alaya + edit similarity >= {args.edit_threshold}"),
                        ("alaya_verified", "alaya + edit + exact Jaccard")):
        x = rows[name]
        print(f"{label:<36}{x['docs_per_s']:>10.0f}{x['candidates']:>8}{x['precision']:>11.3f}{x['recall']:>8.3f}")
    print(f"speed ratio (MinHash + LSH): {rows['alaya_lsh']['docs_per_s'] / rows['datasketch']['docs_per_s']:.1f}x "
          f"(after a one-time start-up of {startup_ours:.2f} s for alaya, {startup_ds:.2f} s for datasketch, not counted)")
    print(f"memory: {memory['docs']:,} documents of ~{args.memory_doc_chars} characters: peak RSS "
          f"{memory['peak_rss_gb']:.2f} GB (texts alone {memory['texts_rss_gb']:.2f} GB), {memory['seconds']:.1f} s")


if __name__ == "__main__":
    main()
