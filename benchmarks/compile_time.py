"""train.compile: the time to the first training step, and the steady step, with each transformer block
compiled on its own (what train.compile does: alaya.train.builder.compile_for_training) against the whole
model compiled (what it did before), in one run, each in a fresh process (no compile cache shared; inductor's
on-disk cache is pointed at an empty folder per process).

Run:  python benchmarks/compile_time.py [--preset alaya-10m] [--layers 12] [--seq-len 256] [--batch 4]
On a GPU, the issue's case: --preset alaya-50m --layers 12 --seq-len 2048 --precision bf16
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

MODES = ("whole model", "each block")


def child(args) -> dict:
    from alaya.model.config import preset
    from alaya.model.mpt import AlayaForCausalLM
    from alaya.train.builder import compile_for_training
    from alaya.train.loop import train_step
    from alaya.train.optim import DecoupledAdamW

    widths = {k: v for k, v in (("d_model", args.d_model), ("n_heads", args.n_heads), ("vocab_size", args.vocab)) if v}
    cfg = preset(args.preset, n_layers=args.layers, max_seq_len=max(args.seq_len, preset(args.preset).max_seq_len),
                 **widths)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = AlayaForCausalLM(cfg).to(device)
    if args.mode == "whole model":
        model.compile(options={"fallback_random": True})
    else:
        compile_for_training(model)
    opt = DecoupledAdamW(model.parameters(), lr=1e-4, weight_decay=1e-5)
    batch = torch.randint(4, cfg.vocab_size, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(1))
    micro = [{"input_ids": batch, "labels": batch}]

    def step():
        train_step(model, opt, micro, 1e-4, 0.3, args.precision, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    step()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    dt = (time.perf_counter() - t0) / args.iters
    return {"mode": args.mode, "first_step_s": first, "tokens_per_s": args.batch * args.seq_len / dt,
            "parameters": cfg.num_parameters()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="alaya-10m")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-model", type=int, default=None, help="the preset's width, or this")
    ap.add_argument("--n-heads", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=None)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                    help="what to compile (default: both, side by side)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(child(args)))
        return
    results = {}
    for mode in args.modes:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--mode", mode], capture_output=True,
                                 text=True, env=env)
            if out.returncode:
                sys.exit(f"{mode}: failed\n{out.stderr[-3000:]}")
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    from machine import cpu_model

    where = torch.cuda.get_device_name(0) if args.device == "cuda" else f"{cpu_model()}, {torch.get_num_threads()} threads"
    any_run = next(iter(results.values()))
    head = (f"{args.preset} width{f' {args.d_model}' if args.d_model else ''}, {args.layers} layers "
            f"({any_run['parameters'] / 1e6:.1f} M params), batch "
            f"{args.batch} x {args.seq_len}, {args.precision}, {where}, torch {torch.__version__}, {datetime.date.today()}")
    print(head)
    print(f"{'train.compile':<14}{'first step':>12}{'steady tok/s':>14}")
    for mode, r in results.items():
        print(f"{mode:<14}{r['first_step_s']:>11.1f}s{r['tokens_per_s']:>14.0f}")
    print(json.dumps({"compile": results}))
    if len(results) == 2:
        whole, blocks = results["whole model"], results["each block"]
        print(f"first step, each block / whole model: {blocks['first_step_s'] / whole['first_step_s']:.2f}x; "
              f"steady step: {blocks['tokens_per_s'] / whole['tokens_per_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": head, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
