"""The ``alaya sft ...`` subcommands: their parsers and the calls they make (no logic)."""
from __future__ import annotations

import argparse
import json


def cmd_sft_train(args: argparse.Namespace) -> int:
    from alaya.sft.run import run_sft

    summary = run_sft(args.config, args.overrides, resume=args.resume)
    if summary:
        print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_sft_identity(args: argparse.Namespace) -> int:
    from alaya.sft.identity import Identity, write_identity_data

    ident = Identity(name=args.name, name_zh=args.name_zh, developer=args.developer, developer_zh=args.developer_zh)
    counts = write_identity_data(args.output, ident, examples=args.examples, seed=args.seed,
                                 templates=args.templates, heldout=args.heldout_output)
    print(json.dumps(counts, ensure_ascii=False, indent=1))
    return 0


def cmd_sft_refusals(args: argparse.Namespace) -> int:
    from alaya.sft.refusals import write_refusal_data

    counts = write_refusal_data(args.input, args.output, benign_output=args.benign_output,
                                heldout_fraction=args.heldout_fraction, seed=args.seed, templates=args.templates)
    print(json.dumps(counts, ensure_ascii=False, indent=1))
    return 0


def cmd_sft_builtin(args: argparse.Namespace) -> int:
    from alaya.sft.builtin import write_builtin_sft

    print(json.dumps(write_builtin_sft(args.output, seed=args.seed), ensure_ascii=False, indent=1))
    return 0


def cmd_sft_screen(args: argparse.Namespace) -> int:
    from alaya.sft.screen import Thresholds, screen_examples

    th = Thresholds(**dict(_kv(o) for o in args.set))
    counts = screen_examples(args.model, args.input, args.output, thresholds=th, review_share=args.review_share,
                             batch_size=args.batch_size, device=args.device, seq_len=args.seq_len, fmt=args.format)
    print(json.dumps(counts, ensure_ascii=False, indent=1))
    return 0


def cmd_sft_screen_apply(args: argparse.Namespace) -> int:
    from alaya.sft.screen import apply_review

    counts = apply_review(args.screened, args.decisions, args.output)
    print(json.dumps(counts, ensure_ascii=False, indent=1))
    return 0


def _kv(text: str) -> tuple[str, float]:
    """``--set name=value`` (a threshold): the one key=value reader (alaya.configfile), the value a number."""
    from alaya.configfile import parse_override

    keys, value = parse_override(text)
    if len(keys) != 1 or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"--set '{text}' must look like name=NUMBER")
    return keys[0], float(value)


def add_parsers(sub, formatter) -> None:
    s = sub.add_parser("sft", formatter_class=formatter, help="supervised fine-tuning (LoRA or full) and its data",
                       description="Fine-tune a model folder on instruction and dialogue data in the published prompt format.\n"
                                   "`alaya sft --config FILE` trains (the same as `alaya sft train`); the other actions make data.",
                       epilog="examples:\n  alaya sft --config configs/sft/tiny-lora.yaml model.path=alaya-quickstart/pretrain/final\n"
                              "  alaya sft identity --output identity.jsonl\n"
                              "  alaya sft refusals --input ../shared/data/xsafety ../shared/data/flames --output refusals.jsonl\n"
                              "  alaya sft screen --model base --input sft.jsonl --output screened")
    s.set_defaults(default_action="train")  # `alaya sft --config F` (alaya.cli.with_default_action)
    ssub = s.add_subparsers(dest="sft_command", required=True, metavar="ACTION")
    tr = ssub.add_parser("train", formatter_class=formatter, help="fine-tune from a YAML config (default action)",
                         description="LoRA (r 16, alpha 32, dropout 0.05 by default) or full fine-tuning over the project's one\n"
                                     "training loop: checkpoints, exact --resume, metrics.jsonl, torchrun DDP/FSDP2.\n"
                                     "final/ is a PEFT adapter folder (LoRA) or a model folder (full).",
                         epilog="examples:\n  alaya sft --config configs/sft/tiny-lora.yaml model.path=alaya-quickstart/pretrain/final\n"
                                "  alaya sft --config configs/sft/tiny-full.yaml model.path=m train.packing=true\n"
                                "  alaya sft --config configs/sft/tiny-lora.yaml model.path=m --resume")
    tr.add_argument("--config", required=True, help="a YAML run config")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides like lora.r=8 train.packing=true")
    tr.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in run_dir")
    tr.set_defaults(func=cmd_sft_train)

    idn = ssub.add_parser("identity", formatter_class=formatter, help="self-awareness dialogues (zh + en)",
                          description="Identity dialogues in Chinese and English, single and multi-turn, from templates and their\n"
                                      "recombination; phrasings held out of training are written to --heldout-output.",
                          epilog="example:\n  alaya sft identity --output identity.jsonl --name Alaya --name-zh 元识")
    idn.add_argument("--output", required=True, help="JSONL of OpenAI-style messages")
    idn.add_argument("--heldout-output", default=None, help="held-out questions (default: OUTPUT with .heldout.jsonl)")
    idn.add_argument("--name", default="Alaya")
    idn.add_argument("--name-zh", default="元识")
    idn.add_argument("--developer", default="DataCanvas (九章云极)")
    idn.add_argument("--developer-zh", default="九章云极 DataCanvas")
    idn.add_argument("--examples", type=int, default=4000)
    idn.add_argument("--templates", nargs="*", default=[], help="extra alpaca files with {{name}} / {{author}} (lf_identity)")
    idn.add_argument("--seed", type=int, default=0)
    idn.set_defaults(func=cmd_sft_identity)

    rf = ssub.add_parser("refusals", formatter_class=formatter, help="red-team prompts with refusals, and benign look-alikes",
                         description="Pairs red-team prompts (XSafety CSV folders, Flames JSONL, or JSONL with 'prompt') with refusals\n"
                                     "that say why and offer a safe alternative, per language and harm category; writes benign\n"
                                     "look-alike prompts with helpful answers; held-out splits of both for evaluation.",
                         epilog="example:\n  alaya sft refusals --input ../shared/data/xsafety ../shared/data/flames --output refusals.jsonl")
    rf.add_argument("--input", nargs="+", required=True)
    rf.add_argument("--output", required=True)
    rf.add_argument("--benign-output", default=None, help="default: OUTPUT with .benign.jsonl")
    rf.add_argument("--heldout-fraction", type=float, default=0.1)
    rf.add_argument("--templates", default=None, help="a YAML/JSON file of refusal templates per language and category")
    rf.add_argument("--seed", type=int, default=0)
    rf.set_defaults(func=cmd_sft_refusals)

    bi = ssub.add_parser("builtin", formatter_class=formatter, help="instruction data in six categories from the built-in corpus",
                         description="Writes general.jsonl (translation, Python docstring questions, news continuation and headlines),\n"
                                     "reasoning.jsonl (arithmetic word problems, step by step), role_play.jsonl (multi-turn) and\n"
                                     "red_team.jsonl (prompts for `generate: refusals`), in both languages, with no download.",
                         epilog="example:\n  alaya sft builtin --output sft-data")
    bi.add_argument("--output", required=True, help="a folder")
    bi.add_argument("--seed", type=int, default=0)
    bi.set_defaults(func=cmd_sft_builtin)

    sc = ssub.add_parser("screen", formatter_class=formatter, help="score examples with a model, drop by thresholds, queue for review",
                         description="Scores every example: IFD = loss(answer | question) / loss(answer), response perplexity,\n"
                                     "length ratio, language consistency, repetition, translationese. Drops by thresholds with\n"
                                     "the reason and writes a review queue (JSONL, CSV, Label Studio tasks). `alaya sft screen\n"
                                     "apply` reads the reviewers' decisions back.",
                         epilog="examples:\n  alaya sft screen --model base --input sft.jsonl --output screened --set max_ifd=1.0\n"
                                "  alaya sft screen apply screened decisions.csv --output final.jsonl")
    sc.add_argument("screen_action", nargs="?", choices=["run", "apply"], default="run", help=argparse.SUPPRESS)
    sc.add_argument("screened", nargs="?", help=argparse.SUPPRESS)
    sc.add_argument("decisions", nargs="?", help=argparse.SUPPRESS)
    sc.add_argument("--model", default=None, help="the scoring model folder")
    sc.add_argument("--input", nargs="+", default=None)
    sc.add_argument("--output", required=True)
    sc.add_argument("--format", default=None, choices=["alpaca", "sharegpt", "openai"])
    sc.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="thresholds: max_ifd, max_ppl, min_length_ratio, max_length_ratio, max_repetition, max_translationese")
    sc.add_argument("--review-share", type=float, default=1.0, help="share of kept examples queued for people (default: all)")
    sc.add_argument("--batch-size", type=int, default=8)
    sc.add_argument("--seq-len", type=int, default=None)
    sc.add_argument("--device", default=None)
    sc.set_defaults(func=_screen_dispatch)


def _screen_dispatch(args: argparse.Namespace) -> int:
    if args.screen_action == "apply":
        if not (args.screened and args.decisions):
            raise ValueError("usage: alaya sft screen apply SCREENED_DIR DECISIONS_FILE --output FILE")
        return cmd_sft_screen_apply(args)
    if not (args.model and args.input):
        raise ValueError("alaya sft screen needs --model and --input")
    return cmd_sft_screen(args)
