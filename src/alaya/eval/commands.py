"""The ``alaya eval`` subcommand: its parser and the calls it makes (no logic)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_eval(args: argparse.Namespace) -> int:
    from alaya.eval.results import compare, compare_table, markdown_table, write_outputs
    from alaya.eval.run import EvalSettings, run_eval

    settings = EvalSettings(shots=args.shots, limit=args.limit, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, data_dir=Path(args.data_dir) if args.data_dir else None,
                            progress=not args.no_progress)
    if args.compare:
        if args.model_path:
            raise ValueError("give either MODEL_PATH or --compare A B, not both")
        a, b = args.compare
        runs = []
        for name in (a, b):
            out = Path(args.output) / Path(name).name if args.output else None
            runs.append(run_eval(name, args.task, args.adapter, settings, None, args.device, args.dtype, args.quantize,
                                 args.decode_path, args.attention))
            if out:
                write_outputs(out, runs[-1]["results"], runs[-1]["samples"])
        diffs = compare(runs[0]["results"], runs[0]["samples"], runs[1]["results"], runs[1]["samples"])
        table = compare_table(diffs, a, b)
        print(table)
        if args.output:
            from alaya.fileio import write_json_atomic, write_text_atomic

            write_json_atomic(Path(args.output) / "compare.json", {"a": a, "b": b, "tasks": diffs})
            write_text_atomic(Path(args.output) / "compare.md", table)
        return 0
    if not args.model_path:
        raise ValueError("alaya eval needs MODEL_PATH (or --compare A B)")
    run = run_eval(args.model_path, args.task, args.adapter, settings, args.output, args.device, args.dtype,
                   args.quantize, args.decode_path, args.attention)
    print(markdown_table(run["results"]))
    if args.output:
        print(f"wrote {args.output}/results.json, samples.jsonl, results.md", file=sys.stderr)
    return 0


def add_parsers(sub, formatter) -> None:
    from alaya.eval.run import TASKS
    from alaya.infer.commands import add_decode_path_arg

    listing = "\n".join(f"  {name:<14} {info.about} (default shots: {info.shots})" for name, info in TASKS.items())
    e = sub.add_parser("eval", formatter_class=formatter, help="evaluate a model folder on benchmarks (offline)",
                       description="Evaluate a model folder (with an adapter applied) on the benchmark sets in --data-dir:\n"
                                   "multiple choice by log-likelihood, generation with exact match, perplexity, chat\n"
                                   "behaviour. Writes results.json in lm-evaluation-harness's layout, samples.jsonl and\n"
                                   "results.md to --output. TASK may be NAME, NAME:SUBJECT,... or NAME=PATH.\n\ntasks:\n" + listing,
                       epilog="examples:\n  alaya eval alaya-quickstart/model --task mmlu:anatomy,astronomy ceval --limit 20\n"
                              "  alaya eval base --adapter runs/sft/final --task identity refusal over_refusal\n"
                              "  alaya eval model --task perplexity=heldout.jsonl gsm8k --limit 50 --output eval-out\n"
                              "  alaya eval --compare base-a base-b --task arc_easy --limit 200")
    e.add_argument("model_path", nargs="?", metavar="MODEL_PATH")
    e.add_argument("--task", nargs="+", required=True, metavar="TASK")
    e.add_argument("--adapter", default=None, help="a PEFT adapter folder applied to the model")
    e.add_argument("--shots", type=int, default=None, help="few-shot examples (default: each task's own)")
    e.add_argument("--limit", type=int, default=None, help="at most N items per subject (quick runs)")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--max-new-tokens", type=int, default=256, help="generation tasks (capped at half the context)")
    e.add_argument("--output", default=None, help="folder for results.json, samples.jsonl, results.md")
    e.add_argument("--data-dir", default=None, help="the benchmark sets (default: $ALAYA_DATA or ../shared/data)")
    e.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                   help="evaluate two model folders on the same items and print the paired differences")
    e.add_argument("--device", default=None)
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    e.add_argument("--quantize", default="none", choices=["none", "int8"], help="int8: weight-only int8 on CPU")
    add_decode_path_arg(e)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval)
