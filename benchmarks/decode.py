"""Decode tokens/s: Alaya's batched KV-cache generation (what `alaya infer` runs) versus transformers'
`generate` on the same model folder and prompts, in the same run; and, at batch 1, the fraction of the
memory-bandwidth bound reached (every decoded token reads all weights once: bound = read bandwidth /
weight bytes; the read bandwidth is measured here, in this run, by summing a large tensor).

Greedy, a fixed number of new tokens (end of sequence never stops a row), same prompts for both.
Run:  python benchmarks/decode.py [--preset alaya-50m] [--new-tokens 128] [--batches 1 8]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import numpy as np
import torch
from transformers import MptForCausalLM

from alaya.infer.generate import GenerationConfig, generate
from alaya.infer.cpu_path import use_fastest_cpu_path
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="alaya-50m")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on GPUs that support it, else fp32 (as alaya infer)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dtype = resolve_dtype(args.dtype, args.device)
    torch.manual_seed(0)
    folder = tempfile.mkdtemp(prefix="alaya-decode-")
    save_model(AlayaForCausalLM(preset(args.preset)), folder)
    ours = load_model(folder, device=args.device, dtype=dtype).eval()
    relayout_for_decoding(ours)  # what alaya infer/chat/serve do after loading
    use_fastest_cpu_path(ours)
    theirs = MptForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device).eval()
    V = ours.config.vocab_size
    n_params = ours.config.num_parameters()
    weight_bytes = n_params * torch.finfo(dtype).bits // 8
    bandwidth = read_bandwidth(args.device)
    cfg = GenerationConfig(max_new_tokens=args.new_tokens, temperature=0, eos_token_id=-1)
    rows = []
    for B in args.batches:
        g = torch.Generator().manual_seed(B)
        # mixed prompt lengths (left padding for both), the longest prompt_len
        lens = [args.prompt_len - (i * 7) % max(1, args.prompt_len // 2) for i in range(B)]
        prompts = [torch.randint(4, V, (n,), generator=g).tolist() for n in lens]
        ids = torch.full((B, args.prompt_len), 2, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, args.prompt_len - len(p):] = torch.tensor(p)
            mask[i, args.prompt_len - len(p):] = 1
        ids, mask = ids.to(args.device), mask.to(args.device)

        def run_ours():
            return generate(ours, prompts, cfg)

        def run_theirs():
            with torch.inference_mode():
                return theirs.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                       min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=2,
                                       eos_token_id=2, bad_words_ids=[[3]])

        run_ours(), run_theirs()  # warm-up
        # alternate the two, so a slower spell of a shared machine falls on both; best of each
        t_ours = t_theirs = float("inf")
        for _ in range(args.repeats):
            t_ours = min(t_ours, timed(run_ours, args.device)[1])
            t_theirs = min(t_theirs, timed(run_theirs, args.device)[1])
        ours_tps, theirs_tps = B * args.new_tokens / t_ours, B * args.new_tokens / t_theirs
        row = {"batch": B, "alaya_tok_s": round(ours_tps, 1), "transformers_tok_s": round(theirs_tps, 1),
               "ratio": round(ours_tps / theirs_tps, 2)}
        if B == 1:
            bound = bandwidth / weight_bytes
            row["bandwidth_bound_tok_s"] = round(bound, 1)
            row["fraction_of_bound"] = round(ours_tps / bound, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{args.preset} ({n_params / 1e6:.1f} M params, {dtype}), prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens, greedy, {args.device} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; alaya decodes with {'the compiled CPU kernels' if ours.cpu_kernels else 'torch'}), read bandwidth {bandwidth / 1e9:.1f} GB/s, weights {weight_bytes / 1e6:.0f} MB")
    print(f"{'batch':>5} {'alaya tok/s':>12} {'transformers tok/s':>19} {'ratio':>6} {'of bandwidth bound':>19}")
    for r in rows:
        frac = f"{100 * r['fraction_of_bound']:.0f} %" if "fraction_of_bound" in r else ""
        print(f"{r['batch']:>5} {r['alaya_tok_s']:>12} {r['transformers_tok_s']:>19} {r['ratio']:>5}x {frac:>19}")


if __name__ == "__main__":
    main()
