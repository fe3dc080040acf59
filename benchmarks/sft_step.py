"""LoRA SFT step throughput: `alaya sft`'s step (our MPT + our LoRA, Decoupled AdamW, clipping 0.3) versus
transformers' MptForCausalLM + peft LoRA + torch AdamW (+ the same clipping), on the same model, the same
real instruction data (LLaMA-Factory's Alpaca en/zh demos from ../shared/data, or $ALAYA_DATA), the same
batches and precision; and our packed rows versus our padded rows.

tokens/s counts real (non-padding) tokens. Each side runs in its own subprocess (its own peak RSS / CUDA
memory); sides alternate and the best of --repeats runs is kept. Before timing, each side runs --warmup steps
and one step of every batch shape the timed steps meet (compiling a shape is a one-off cost of a run; its
time is printed apart).
Run:  python benchmarks/sft_step.py [--preset alaya-10m] [--precision bf16] [--seq-len 512] [--batch 4]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from machine import DATA, cpu_model  # noqa: E402 (benchmarks/machine.py)
ALPACA = [DATA / "lf_alpaca_en_demo" / "alpaca_en_demo.json", DATA / "lf_alpaca_zh_demo" / "alpaca_zh_demo.json"]



def build(args):
    """Model, tokenizer and the batches (the same on every side: same seed, same data)."""
    from alaya.data.documents import Quarantine
    from alaya.model.config import preset
    from alaya.model.mpt import AlayaForCausalLM
    from alaya.sft.data import SFTBatches
    from alaya.sft.formats import read_examples
    from alaya.sft.template import TooLong, encode_example
    from alaya.tokenizer import train_tokenizer

    examples = list(read_examples([str(p) for p in ALPACA], Quarantine()))
    layers = {"n_layers": args.layers} if args.layers else {}
    cfg = preset(args.preset, max_seq_len=max(args.seq_len, preset(args.preset).max_seq_len), **layers)
    tok = train_tokenizer((t for ex in examples for _, t in ex.turns), vocab_size=cfg.vocab_size, show_progress=False)
    encs = []
    for ex in examples:
        try:
            encs.append(encode_example(tok, ex, args.seq_len))
        except TooLong:
            pass
    torch.manual_seed(0)
    model = AlayaForCausalLM(cfg)
    stream = SFTBatches(encs, args.seq_len, tok.pad_id, packing=args.packed, seed=0, pad_multiple=args.pad_multiple)
    n = args.warmup + args.iters
    batches = [stream.global_batch(args.batch, 1, 1, 0)[0] for _ in range(n)]
    return cfg, model, batches


def child(args) -> dict:
    from alaya.train.loop import autocast, real_tokens, train_step

    cfg, ours, batches = build(args)
    device = torch.device(args.device)
    lora = dict(r=16, alpha=32, dropout=0.05, targets=["Wqkv", "out_proj", "up_proj", "down_proj"])
    if args.side == "alaya":  # as `alaya sft` builds it: prepare_lora, place_model, make_optimizer
        from alaya.sft.run import prepare_lora
        from alaya.train.builder import OptimizerSection, TrainSection, make_optimizer, place_model
        from alaya.train.config import PRETRAIN_DEFAULTS
        from alaya.train.distributed import Dist

        train = TrainSection.of({"train": {**PRETRAIN_DEFAULTS["train"], "seq_len": args.seq_len,
                                           "micro_batch_size": args.batch, "precision": args.precision,
                                           "parallel": "none", "compile": args.compile, "attention": args.attention,
                                           "device": args.device}})
        prepare_lora(ours, {"r": lora["r"], "alpha": lora["alpha"], "dropout": lora["dropout"],
                            "target_modules": lora["targets"], "rslora": False}, train)
        model = place_model(ours, train, Dist(device=device))
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(params, OptimizerSection(lr=2e-4, min_lr=2e-5, betas=(0.9, 0.95), eps=1e-8,
                                                      weight_decay=0.0, grad_clip=0.3), device)
        print(f"attention: {model.attention}", file=sys.stderr)

        def step(b):
            train_step(model, opt, [b], 2e-4, 0.3, args.precision, device=device, params=params)
    else:
        import peft
        from transformers import MptConfig, MptForCausalLM

        hf_cfg = MptConfig(d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, vocab_size=cfg.vocab_size,
                           max_seq_len=cfg.max_seq_len, no_bias=True,
                           attn_config={"alibi": True, "alibi_bias_max": cfg.alibi_bias_max})
        base = MptForCausalLM(hf_cfg)
        base.load_state_dict(ours.state_dict(), strict=False)
        del ours
        model = peft.get_peft_model(base, peft.LoraConfig(r=lora["r"], lora_alpha=lora["alpha"],
                                                          lora_dropout=lora["dropout"], target_modules=lora["targets"],
                                                          task_type="CAUSAL_LM")).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)

        def step(b):
            model.train()
            with autocast(device, args.precision):
                loss = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                             labels=b["labels"].to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.3)
            opt.step()
            opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # the warm-up also runs one step of every batch shape the timed steps will meet: a real run compiles each
    # bucketed shape once (FlexAttention's kernel, compiled blocks, cuDNN's graphs), so its steady speed is
    # what the timed steps measure; that one-off cost is reported apart
    warm, shapes = list(batches[: args.warmup]), {tuple(b["input_ids"].shape) for b in batches[: args.warmup]}
    for b in batches[args.warmup :]:
        if tuple(b["input_ids"].shape) not in shapes:
            warm.append(b)
            shapes.add(tuple(b["input_ids"].shape))
    t0 = time.perf_counter()
    for b in warm:
        step(b)
    sync()
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for b in batches[args.warmup :]:
        step(b)
    sync()
    dt = time.perf_counter() - t0
    real = sum(real_tokens(b) for b in batches[args.warmup :])
    rows = sum(b["input_ids"].numel() for b in batches[args.warmup :])
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"side": args.side, "packed": args.packed, "attention": getattr(model, "attention", None),
            "tokens_per_s": real / dt, "padding_share": 1 - real / rows, "shapes": len(shapes),
            "warmup_s": round(warmup_s, 2), "warmup_steps": len(warm),
            "peak_bytes": peak, "parameters": cfg.num_parameters()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=None, help="the preset's width with this many layers")
    ap.add_argument("--preset", default="alaya-10m")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--pad-multiple", type=int, default=0,
                    help="rows padded to a multiple of this (alaya sft's train.pad_multiple, 128 by default there); "
                         "0, the default here: each batch as long as its longest row, as docs/benchmarks.md measured")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="our side with train.compile=true")
    ap.add_argument("--attention", default="auto", choices=["auto", "sdpa", "flex"], help="our side's train.attention")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--packed", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(child(args)))
        return
    if not all(p.is_file() for p in ALPACA):
        sys.exit(f"skipped: the Alpaca demo sets are not at {DATA} (set ALAYA_DATA)")
    runs = {("alaya", False): [], ("alaya", True): [], ("transformers+peft", False): []}
    for _ in range(args.repeats):  # alternate the sides, keep each side's best
        for side, packed in runs:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--side", "alaya" if side == "alaya" else "hf"]
            cmd += ["--packed"] if packed else []
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(out.stderr[-3000:])
            runs[(side, packed)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {k: max(v, key=lambda r: r["tokens_per_s"]) for k, v in runs.items()}
    pad, pack, hf = best[("alaya", False)], best[("alaya", True)], best[("transformers+peft", False)]
    print(json.dumps({f"{k[0]}{' packed' if k[1] else ''}": v for k, v in best.items()}))
    print(f"\n{args.preset} ({pad['parameters'] / 1e6:.1f} M params), LoRA r 16 on Wqkv/out_proj/up_proj/down_proj, "
          f"batch {args.batch} x <= {args.seq_len}, {args.precision}{', alaya compiled' if args.compile else ''}, "
          f"attention {pad.get('attention')}, "
          f"{args.device} ({cpu_model()}, {torch.get_num_threads()} threads), Alpaca en+zh demo examples, "
          f"best of {args.repeats}")
    print(f"{'':<28}{'real tok/s':>11}{'padding':>9}{'peak memory':>14}{'shapes':>8}{'warm-up':>10}")
    for name, r in (("alaya, padded rows", pad), ("alaya, packed rows", pack), ("transformers + peft, padded", hf)):
        print(f"{name:<28}{r['tokens_per_s']:>11.0f}{100 * r['padding_share']:>8.1f}%{r['peak_bytes'] / 1e9:>12.2f} GB"
              f"{r['shapes']:>8}{r['warmup_s']:>9.1f}s")
    print("warm-up: the steps before timing, one of them for each batch shape the timed steps meet (a run "
          "compiles each shape once)")
    print(f"ratio alaya / transformers+peft (same padded batches): {pad['tokens_per_s'] / hf['tokens_per_s']:.2f}x")
    print(f"ratio alaya packed / transformers+peft padded: {pack['tokens_per_s'] / hf['tokens_per_s']:.2f}x")
    print(f"packed / padded (alaya): {pack['tokens_per_s'] / pad['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
