"""Decode tokens/s: Alaya's batched KV-cache generation (what `alaya infer` runs), in fp32 and with
``--quantize int8``, versus transformers' `generate` (fp32) and CTranslate2 (fp32 and int8, when installed) on
the same model folder and prompts, in the same run; and, at batch 1, each side's fraction of the
memory-bandwidth bound for its own bytes per weight (every decoded token reads all weights once: bound = read
bandwidth / weight bytes). The read bandwidth is measured here, in this run, by summing a large tensor, in
several rounds spread over the run; the median is the bound and the spread is printed.

Greedy, a fixed number of new tokens (end of sequence never stops a row), same prompts for every side; each
side warmed up, the sides alternated, best of --repeats.
Run:  python benchmarks/decode.py [--preset alaya-50m] [--new-tokens 128] [--batches 1 8]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from transformers import MptForCausalLM

from alaya.infer.generate import GenerationConfig, generate
from alaya.infer.backends import DECODE_PATHS, GraphBackend, choose_backend
from alaya.infer.cpu_path import relayout_for_decoding
from alaya.infer.loading import resolve_dtype
from alaya.model.config import preset
from alaya.model.hf import load_model, save_model
from alaya.model.mpt import AlayaForCausalLM


def read_bandwidth(device: str, gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s for streaming reads of a tensor much larger than the caches (best of a few). On CPU the
    tensor's memory comes from numpy, which asks for transparent huge pages, as the CPU decoding path's
    weights do: without them the bound comes out lower and the fraction reached looks better than it is."""
    n = int(gib * 2**30 / 4)
    x = torch.from_numpy(np.ones(n, dtype=np.float32)) if device == "cpu" else torch.ones(n, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x.sum()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best


def timed(fn, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def bandwidth_rounds(device: str, rounds: list[float]) -> None:
    """One more measurement of the read bandwidth (called between the sides, so it samples the whole run)."""
    rounds.append(read_bandwidth(device, repeats=3))


def new_bucket_cost(backend, prompts: list[list[int]], cfg: GenerationConfig, device: str) -> float | None:
    """Seconds a new capacity bucket's first call takes over its second (on CUDA: its graph recording; the
    compiled step is reused), with the prompts lengthened into the next bucket; None when the model's
    context holds one bucket only."""
    n = cfg.max_new_tokens
    cap = backend.capacity(max(len(p) for p in prompts) + n)
    longer = [p * (cap // len(p) + 1) for p in prompts]
    longer = [p[: cap + 1 - n] for p in longer]
    if backend.capacity(cap + 1) == cap or cap + 1 > backend.model.config.max_seq_len:
        return None
    first = timed(lambda: generate(backend, longer, cfg), device)[1]
    again = timed(lambda: generate(backend, longer, cfg), device)[1]
    return round(first - again, 3)


def ctranslate2_side(folder: str, quantization: str):
    """A generate function for CTranslate2 on the exported folder, or None without the package."""
    try:
        import ctranslate2
    except ImportError:
        return None
    from alaya.export.ctranslate2 import export_ctranslate2

    out = tempfile.mkdtemp(prefix=f"alaya-ct2-{quantization}-")
    export_ctranslate2(folder, out, quantization=None if quantization == "float32" else quantization, force=True)
    gen = ctranslate2.Generator(out, device="cpu", compute_type=quantization, inter_threads=1,
                                intra_threads=torch.get_num_threads())
    vocab = json.load(open(f"{out}/vocabulary.json", encoding="utf-8"))

    def run(prompts, n):
        return gen.generate_batch([[vocab[i] for i in p] for p in prompts], max_length=n, min_length=n,
                                  sampling_topk=1, include_prompt_in_result=False, end_token=[])
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=None, help="the preset's width with this many layers")
    ap.add_argument("--preset", default="alaya-50m")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on GPUs that support it, else fp32 (as alaya infer)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ctranslate2", action="store_true", help="leave out the CTranslate2 columns")
    ap.add_argument("--decode-path", default="auto", choices=DECODE_PATHS, help="as alaya infer --decode-path")
    ap.add_argument("--graphs", action="store_true",
                    help="add the static-cache compiled side (--decode-path graphs); always there on CUDA")
    args = ap.parse_args()
    from machine import cpu_model

    from alaya.infer.int8 import quantize_model, weight_bytes

    dtype = resolve_dtype(args.dtype, args.device)
    cpu = args.device == "cpu" and dtype == torch.float32
    torch.manual_seed(0)
    folder = tempfile.mkdtemp(prefix="alaya-decode-")
    model = AlayaForCausalLM(preset(args.preset, **({"n_layers": args.layers} if args.layers else {})))
    from alaya.tokenizer import train_tokenizer  # a real tokenizer folder, which the CTranslate2 export reads

    tok = train_tokenizer(["decode benchmark text"], vocab_size=model.config.vocab_size, show_progress=False)
    save_model(model, folder, tokenizer=tok)
    sides = {}
    ours = load_model(folder, device=args.device, dtype=dtype).eval().requires_grad_(False)
    relayout_for_decoding(ours)  # what alaya infer/chat/serve do after loading
    # on CUDA the "alaya" side is today's path (torch) and "alaya graphs" the CUDA-graph one, side by side
    backend = choose_backend(ours, "torch" if args.device.startswith("cuda") else args.decode_path)
    sides["alaya"] = (backend, weight_bytes(ours))
    if args.graphs or args.device.startswith("cuda"):
        mine = load_model(folder, device=args.device, dtype=dtype).eval().requires_grad_(False)
        sides["alaya graphs"] = (GraphBackend(mine), weight_bytes(mine))
    if cpu:
        q8 = quantize_model(load_model(folder, device="cpu", dtype=torch.float32).eval().requires_grad_(False))
        sides["alaya int8"] = (choose_backend(q8, args.decode_path), weight_bytes(q8))
    theirs = MptForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device).eval()
    V = ours.config.vocab_size
    n_params = ours.config.num_parameters()
    ct2 = {}
    if cpu and not args.no_ctranslate2:
        for q in ("float32", "int8"):
            run = ctranslate2_side(folder, q)
            if run is not None:
                ct2[f"ctranslate2 {'int8' if q == 'int8' else 'fp32'}"] = (run, n_params * (4 if q == "float32" else 1))
    rounds: list[float] = []
    bandwidth_rounds(args.device, rounds)
    # transformers' min_new_tokens keeps its eos (2) from coming out, as bad_words_ids does 3: ours bans both
    cfg = GenerationConfig(max_new_tokens=args.new_tokens, temperature=0, eos_token_id=-1, banned_token_ids=[2, 3])
    rows = []
    for B in args.batches:
        g = torch.Generator().manual_seed(B)
        # mixed prompt lengths (left padding for transformers), the longest prompt_len
        lens = [args.prompt_len - (i * 7) % max(1, args.prompt_len // 2) for i in range(B)]
        prompts = [torch.randint(4, V, (n,), generator=g).tolist() for n in lens]
        ids = torch.full((B, args.prompt_len), 2, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, args.prompt_len - len(p):] = torch.tensor(p)
            mask[i, args.prompt_len - len(p):] = 1
        ids, mask = ids.to(args.device), mask.to(args.device)
        runs = {name: (lambda m=m: generate(m, prompts, cfg)) for name, (m, _) in sides.items()}

        def run_theirs():
            with torch.inference_mode():
                return theirs.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                       min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=2,
                                       eos_token_id=2, bad_words_ids=[[3]])
        runs["transformers"] = run_theirs
        for name, (run, _) in ct2.items():
            runs[name] = (lambda run=run: run(prompts, args.new_tokens))
        firsts, outputs = {}, {}
        for name, fn in runs.items():  # warm-up (the graphs side compiles, and on CUDA captures, its bucket here)
            outputs[name], firsts[name] = timed(fn, args.device)
            if name == "alaya graphs":
                print(f"batch {B}: the graphs side's first call (compile + capture + decode) took "
                      f"{firsts[name]:.1f} s", flush=True)
        bucket = (new_bucket_cost(sides["alaya graphs"][0], prompts, cfg, args.device) if "alaya graphs" in sides
                  else None)
        # alternate the sides, so a slower spell of a shared machine falls on all; best of each
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                best[name] = min(best[name], timed(fn, args.device)[1])
            bandwidth_rounds(args.device, rounds)
        row = {"batch": B, **{f"{name} tok/s": round(B * args.new_tokens / t, 1) for name, t in best.items()}}
        theirs_tokens = outputs["transformers"][:, args.prompt_len:].tolist()
        row["greedy rows equal to transformers"] = {
            name: sum(a == b for a, b in zip(outputs[name], theirs_tokens)) for name in sides if name != "alaya int8"}
        if "alaya graphs" in firsts:
            row["alaya graphs first call s"] = round(firsts["alaya graphs"], 2)
            row["alaya graphs new bucket s"] = bucket
        rows.append(row)
        print(json.dumps(row), flush=True)
    bw = float(np.median(rounds))
    bytes_of = {**{n: b for n, (_, b) in sides.items()}, "transformers": n_params * torch.finfo(dtype).bits // 8,
                **{n: b for n, (_, b) in ct2.items()}}
    names = [n for n in rows[0] if n.endswith(" tok/s")]
    print(f"\n{args.preset} ({n_params / 1e6:.1f} M params), prompt {args.prompt_len}, {args.new_tokens} new tokens, "
          f"greedy, {args.device} ({cpu_model()}, {torch.get_num_threads()} threads; alaya decodes with "
          f"{'the compiled CPU kernels' if backend.name == 'kernels' else 'torch'}"
          f"{'; alaya graphs: a static cache, one compiled step' if 'alaya graphs' in sides else ''})")
    print(f"read bandwidth: median {bw / 1e9:.1f} GB/s over {len(rounds)} rounds (spread {min(rounds) / 1e9:.1f}-"
          f"{max(rounds) / 1e9:.1f}); weights: " + ", ".join(f"{n} {b / 1e6:.0f} MB" for n, b in bytes_of.items()))
    print(f"{'batch':>5} " + " ".join(f"{n:>19}" for n in names))
    for r in rows:
        print(f"{r['batch']:>5} " + " ".join(f"{r[n]:>19}" for n in names))
    for r in rows:
        ref = r.get("transformers tok/s")
        ratios = {n: r[n] / ref for n in names if ref and n != "transformers tok/s"}
        if "ctranslate2 int8 tok/s" in r:
            ratios["alaya int8 / ctranslate2 int8"] = r.get("alaya int8 tok/s", 0) / r["ctranslate2 int8 tok/s"]
        print(f"batch {r['batch']}: " + ", ".join(f"{n.replace(' tok/s', '')} {v:.2f}x" for n, v in ratios.items())
              + " (x transformers fp32 unless named)")
        if r["batch"] == 1:
            shares = {n.replace(" tok/s", ""): round(100 * r[n] / (bw / bytes_of[n.replace(" tok/s", "")]), 1)
                      for n in names}
            print("  fraction of the bandwidth bound for its own bytes: "
                  + ", ".join(f"{n} {v:.0f} %" for n, v in shares.items()))
            print(json.dumps({"bound": {"batch": 1, "read_GBps": round(bw / 1e9, 1), "percent": shares}}), flush=True)
        print(f"  greedy rows token for token equal to transformers' (of {r['batch']}): " + ", ".join(
            f"{n} {k}" for n, k in r["greedy rows equal to transformers"].items())
              + (" (bf16: near-tied logits of a random model may differ in the last bit)" if dtype != torch.float32
                 else ""))
        if r.get("alaya graphs first call s") is not None:
            extra = r["alaya graphs new bucket s"]
            print(f"  alaya graphs: first call {r['alaya graphs first call s']} s (compile + capture + decode); "
                  + (f"a new capacity bucket's first call {extra:+.2f} s over its later calls (its graph recording)"
                     if extra is not None else "the model's context is one bucket: no second bucket to time"))


if __name__ == "__main__":
    main()
