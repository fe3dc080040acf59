"""The ``alaya pretrain``, ``alaya plot``, ``alaya plan`` and ``alaya data tokenize`` subcommands: their parsers and the calls they make (no logic)."""
from __future__ import annotations

import argparse
import json


def cmd_pretrain(args: argparse.Namespace) -> int:
    from alaya.train.pretrain import run_pretrain

    summary = run_pretrain(args.config, args.overrides, resume=args.resume)
    if summary:
        print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from alaya.train.plot import plot_run

    out = plot_run(args.run_dir, args.output)
    print(f"wrote {out}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from alaya.train.plan import format_plan, plan

    p = plan(args.model, gpus=args.gpus, seq_len=args.seq_len, micro_batch=args.micro_batch,
             gpu_memory_gb=args.gpu_memory_gb, peak_tflops=args.peak_tflops, mfu=args.mfu,
             tokens=args.tokens, grad_accum=args.grad_accum)
    print(json.dumps(p, indent=1) if args.json else format_plan(p))
    return 0


def add_parsers(sub, formatter) -> None:
    pt = sub.add_parser("pretrain", formatter_class=formatter, help="pretrain an MPT model from a YAML config",
                        description="Train with the published recipe: Decoupled AdamW, warmup + cosine, clipping, bf16, checkpoints.\n"
                                    "The run folder gets config.yaml, metrics.jsonl, checkpoints/ and final/ (a model folder).\n"
                                    "Several processes: torchrun --nproc_per_node N -m alaya.cli pretrain ... (DDP or FSDP2).",
                        epilog="examples:\n  alaya pretrain --config configs/pretrain/tiny.yaml\n"
                               "  alaya pretrain --config configs/pretrain/tiny.yaml schedule.max_steps=50 model.d_model=192\n"
                               "  alaya pretrain --config configs/pretrain/tiny.yaml --resume\n"
                               "  torchrun --nproc_per_node 2 -m alaya.cli pretrain --config configs/pretrain/tiny.yaml train.parallel=fsdp")
    pt.add_argument("--config", required=True, help="a YAML run config")
    pt.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides like train.seq_len=512 model.n_layers=4")
    pt.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in run_dir")
    pt.set_defaults(func=cmd_pretrain)



def add_tool_parsers(sub, formatter) -> None:
    """``alaya plot`` and ``alaya plan``."""
    pl = sub.add_parser("plot", formatter_class=formatter, help="draw a run's loss curve as PNG",
                        epilog="example:\n  alaya plot runs/tiny            # writes runs/tiny/loss.png")
    pl.add_argument("run_dir", metavar="RUN_DIR")
    pl.add_argument("--output", default=None, help="PNG path (default: RUN_DIR/loss.png)")
    pl.set_defaults(func=cmd_plot)

    pn = sub.add_parser("plan", formatter_class=formatter, help="memory per GPU and step time of a training setup",
                        description="Memory per GPU (parameters, gradients, optimizer state, activations with and without activation\n"
                                    "checkpointing; replicated (DDP) and FSDP-sharded) and the expected step time at a given MFU.",
                        epilog="examples:\n  alaya plan --model alaya-7b --gpus 8\n  alaya plan --model alaya-7b --gpus 64 --seq-len 2048 --micro-batch 2 --mfu 0.45")
    pn.add_argument("--model", default="alaya-7b", help="a preset or a model folder")
    pn.add_argument("--gpus", type=int, default=8)
    pn.add_argument("--seq-len", type=int, default=None, help="default: the model's max_seq_len")
    pn.add_argument("--micro-batch", type=int, default=4)
    pn.add_argument("--grad-accum", type=int, default=1)
    pn.add_argument("--gpu-memory-gb", type=float, default=80.0)
    pn.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak per GPU (default: H100 SXM, %(default)s)")
    pn.add_argument("--mfu", type=float, default=0.4)
    pn.add_argument("--tokens", type=float, default=None, help="total training tokens, for the run's duration")
    pn.add_argument("--json", action="store_true")
    pn.set_defaults(func=cmd_plan)
