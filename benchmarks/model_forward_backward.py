"""Training forward+backward tokens/s: Alaya's MPT versus transformers' MptForCausalLM, same run.

Same config, same weights, same batch and precision (fp32, and bf16 autocast). Prints a table and the
ratio ours / transformers. Run:  python benchmarks/model_forward_backward.py [--preset alaya-50m]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from transformers import MptConfig, MptForCausalLM

from alaya.model.config import preset
from alaya.model.mpt import AlayaForCausalLM
from alaya.train.loop import autocast


def step_fn(model, ids, precision, theirs):
    with autocast(ids.device, precision):  # the training loop's own precision switch
        if theirs:
            loss = model(input_ids=ids, labels=ids).loss
        else:
            loss = model(ids, labels=ids)[1]
    loss.backward()
    model.zero_grad(set_to_none=True)


def measure(model, ids, precision, theirs, warmup, iters):
    model.train()
    for _ in range(warmup):
        step_fn(model, ids, precision, theirs)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step_fn(model, ids, precision, theirs)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    return ids.numel() * iters / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="alaya-50m")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    cfg = preset(args.preset)
    torch.manual_seed(0)
    ours = AlayaForCausalLM(cfg).to(args.device)
    hf_cfg = MptConfig(d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, vocab_size=cfg.vocab_size,
                       max_seq_len=cfg.max_seq_len, attn_config={"alibi": True, "alibi_bias_max": cfg.alibi_bias_max})
    theirs = MptForCausalLM(hf_cfg).to(args.device)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len), device=args.device)
    results = []
    for precision in ("fp32", "bf16"):
        row = {"precision": precision}
        for name, model, flag in (("alaya", ours, False), ("transformers", theirs, True)):
            row[name] = measure(model, ids, precision, flag, args.warmup, args.iters)
        row["ratio"] = row["alaya"] / row["transformers"]
        results.append(row)
    print(f"# {args.preset} ({cfg.num_parameters() / 1e6:.1f} M params), batch {args.batch} x seq {args.seq_len}, "
          f"device {args.device}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'precision':<10}{'alaya tok/s':>14}{'transformers tok/s':>20}{'ratio':>8}")
    for r in results:
        print(f"{r['precision']:<10}{r['alaya']:>14.0f}{r['transformers']:>20.0f}{r['ratio']:>8.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
