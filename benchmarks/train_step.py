"""Training step tokens/s: `alaya pretrain`'s step (our MPT, Decoupled AdamW, clipping 0.3, autocast)
versus transformers' MptForCausalLM + torch.optim.AdamW (+ the same clipping) on the same config, batch
and precision, in one run; our MFU against the matmul peak measured in the same run; peak memory of each.

Each side runs in its own subprocess, so peak RSS (CPU) or max_memory_allocated (CUDA) is its own.
Run:  python benchmarks/train_step.py [--preset alaya-50m] [--precision bf16] [--compile]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch


def child(args) -> dict:
    from alaya.model.config import preset
    from alaya.model.mpt import AlayaForCausalLM
    from alaya.train.loop import autocast, train_step
    from alaya.train.builder import OptimizerSection, TrainSection, make_optimizer, place_model
    from alaya.train.config import PRETRAIN_DEFAULTS
    from alaya.train.distributed import Dist

    layers = {"n_layers": args.layers} if args.layers else {}
    cfg = preset(args.preset, max_seq_len=max(args.seq_len, preset(args.preset).max_seq_len), **layers)
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = AlayaForCausalLM(cfg).to(device)
    batch = torch.randint(4, cfg.vocab_size, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(1))
    if args.side == "alaya":  # as `alaya pretrain` builds it: place_model, make_optimizer
        train = TrainSection.of({"train": {**PRETRAIN_DEFAULTS["train"], "seq_len": args.seq_len,
                                           "micro_batch_size": args.batch, "precision": args.precision,
                                           "parallel": "none", "compile": args.compile, "attention": args.attention,
                                           "device": args.device}})
        model = place_model(ours, train, Dist(device=device))
        opt = make_optimizer(model.parameters(), OptimizerSection(lr=1e-4, min_lr=1e-5, betas=(0.9, 0.95), eps=1e-8,
                                                                  weight_decay=1e-5, grad_clip=0.3), device)
        print(f"attention: {model.attention}", file=sys.stderr)

        def step():
            train_step(model, opt, [{"input_ids": batch, "labels": batch}], 1e-4, 0.3, args.precision, device=device)
    else:
        from transformers import MptConfig, MptForCausalLM

        hf_cfg = MptConfig(d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, vocab_size=cfg.vocab_size,
                           max_seq_len=cfg.max_seq_len, no_bias=True,
                           attn_config={"alibi": True, "alibi_bias_max": cfg.alibi_bias_max})
        model = MptForCausalLM(hf_cfg).to(device)
        model.load_state_dict(ours.state_dict(), strict=False)
        del ours
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=1e-5)
        b = batch.to(device)

        def step():
            model.train()
            with autocast(device, args.precision):
                loss = model(input_ids=b, labels=b).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3)
            opt.step()
            opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    sync()
    dt = (time.perf_counter() - t0) / args.iters
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"side": args.side, "tokens_per_s": args.batch * args.seq_len / dt, "peak_bytes": peak,
            "flops_per_token": cfg.flops_per_token(args.seq_len), "parameters": cfg.num_parameters()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=None, help="the preset's width with this many layers")
    ap.add_argument("--preset", default="alaya-50m")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--compile", action="store_true", help="our side with train.compile=true")
    ap.add_argument("--attention", default="auto", choices=["auto", "sdpa", "flex"], help="our side's train.attention")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(child(args)))
        return
    from alaya.train.flops import measure_matmul_peak

    results = {}
    for side in ("alaya", "transformers"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--side", side]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    peak = measure_matmul_peak(args.device, args.precision, seconds=2.0)
    a, t = results["alaya"], results["transformers"]
    mfu_a = a["tokens_per_s"] * a["flops_per_token"] / peak
    mfu_t = t["tokens_per_s"] * t["flops_per_token"] / peak
    print(json.dumps({"alaya": a, "transformers": t, "matmul_peak_flops": peak}))
    print(f"\n{args.preset} ({a['parameters'] / 1e6:.1f} M params), batch {args.batch} x {args.seq_len}, {args.precision}"
          f"{', alaya compiled' if args.compile else ''}, {args.device} ({platform.machine()}, {torch.get_num_threads()} threads), "
          f"measured matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'':<14}{'tok/s':>9}{'MFU':>8}{'peak memory':>14}")
    print(f"{'alaya':<14}{a['tokens_per_s']:>9.0f}{100 * mfu_a:>7.1f}%{a['peak_bytes'] / 1e9:>12.2f} GB")
    print(f"{'transformers':<14}{t['tokens_per_s']:>9.0f}{100 * mfu_t:>7.1f}%{t['peak_bytes'] / 1e9:>12.2f} GB")
    print(f"ratio alaya / transformers: {a['tokens_per_s'] / t['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
