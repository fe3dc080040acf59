"""The ``alaya`` command: parses arguments and calls one function per subcommand; no logic here."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from alaya.quickstart import run_quickstart

    run_quickstart(workdir=args.workdir, corpus=args.corpus, model_preset=args.preset, steps=args.steps,
                   sft_steps=args.sft_steps, fast=args.fast, seed=args.seed, restart=args.restart, data_dir=args.data_dir)
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from alaya.tokenizer import train_tokenizer_on_documents

    report = train_tokenizer_on_documents(args.input, args.output, vocab_size=args.vocab_size,
                                          min_frequency=args.min_frequency, heldout_fraction=args.heldout_fraction)
    for line in report["quarantine_examples"]:
        print(f"skipped {line}", file=sys.stderr)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alaya", formatter_class=_formatter,
        description="Alaya: the bilingual LLM recipe (corpus -> tokenizer -> MPT pretraining -> use).",
        epilog="example:\n  alaya quickstart --workdir alaya-quickstart\n\nEvery subcommand explains itself: alaya SUBCOMMAND --help",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("quickstart", formatter_class=_formatter,
                       help="the whole recipe on the built-in corpus: curate, tokenizer, pretrain, SFT, merge, infer, eval",
                       description="From a raw bilingual corpus to a chat model that knows who it is, each step by the code of its\n"
                                   "own command: curate -> tokenizer -> token shards -> pretrain -> built-in SFT data -> LoRA SFT\n"
                                   "-> merge -> batch inference on sample prompts -> evaluation, then a summary and what to run next.\n"
                                   "A rerun skips finished steps (their outputs are checked) and resumes an interrupted one.",
                       epilog="examples:\n  alaya quickstart\n  alaya quickstart --fast --workdir /tmp/qs\n"
                              "  alaya quickstart --corpus ../shared/data/corpus --workdir qs-corpus\n"
                              "  alaya quickstart --restart")
    q.add_argument("--workdir", default="alaya-quickstart", help="where everything is written (default: %(default)s)")
    q.add_argument("--corpus", nargs="+", default=["builtin:demo"], help="JSONL/Parquet/text files, folders, globs or builtin:demo (default)")
    q.add_argument("--preset", default="alaya-tiny", help="model preset (default: %(default)s)")
    q.add_argument("--steps", type=int, default=None, help="pretraining steps (default: 600, --fast 40)")
    q.add_argument("--sft-steps", type=int, default=None, help="SFT steps (default: 300, --fast 30)")
    q.add_argument("--fast", action="store_true", help="few steps and a short evaluation: a check that everything runs")
    q.add_argument("--restart", action="store_true", help="delete the work folder's outputs and start over")
    q.add_argument("--data-dir", default=None, help="benchmark sets for the multiple-choice slice (default: $ALAYA_DATA, else ../shared/data)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_quickstart)

    t = sub.add_parser("tokenizer", help="train the byte-level BPE tokenizer")
    tsub = t.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    tt = tsub.add_parser("train", formatter_class=_formatter, help="train on JSONL/Parquet/text",
                         description="Train byte-level BPE (<unk>=0, <s>=1, </s>=2, <pad>=3; digits split) with exactly --vocab-size tokens.\n"
                                     "Writes tokenizer.json, tokenizer_config.json (with the chat template), special_tokens_map.json\n"
                                     "and training_report.json (characters per token on held-out documents by language).",
                         epilog="examples:\n  alaya tokenizer train --input builtin:demo --output tok --vocab-size 8192\n"
                                "  alaya tokenizer train --input ../shared/data/corpus --output tok60k")
    tt.add_argument("--input", nargs="+", required=True, help="files, folders, globs, or builtin:demo")
    tt.add_argument("--output", required=True, help="output folder")
    tt.add_argument("--vocab-size", type=int, default=60160, help="exact vocabulary size (default: %(default)s)")
    tt.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge (default: %(default)s)")
    tt.add_argument("--heldout-fraction", type=float, default=0.02,
                    help="share of documents held out for statistics, by a stable hash of their id, the same "
                         "documents `alaya data tokenize` holds out (default: %(default)s; 0: none)")
    tt.set_defaults(func=cmd_tokenizer_train)

    from alaya.data.commands import add_parsers as add_data_parsers
    from alaya.eval.commands import add_parsers as add_eval_parsers
    from alaya.export.commands import add_parsers as add_export_parsers
    from alaya.infer.commands import add_parsers as add_infer_parsers
    from alaya.model.commands import add_merge_parser
    from alaya.model.commands import add_parsers as add_model_parsers
    from alaya.sft.commands import add_parsers as add_sft_parsers
    from alaya.train.commands import add_parsers as add_train_parsers
    from alaya.train.commands import add_tokenize_parser, add_tool_parsers

    # one parser-building function per room, beside the commands it parses, in the order `alaya --help` lists them
    add_infer_parsers(sub, _formatter)
    add_train_parsers(sub, _formatter)
    add_sft_parsers(sub, _formatter)
    add_merge_parser(sub, _formatter)
    add_eval_parsers(sub, _formatter)
    add_data_parsers(sub, _formatter, tokenize=add_tokenize_parser)
    add_tool_parsers(sub, _formatter)
    add_model_parsers(sub, _formatter)
    add_export_parsers(sub, _formatter)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from alaya.sft.commands import normalize_argv

    args = build_parser().parse_args(normalize_argv(list(sys.argv[1:] if argv is None else argv)))
    try:
        return args.func(args)
    # the project's errors are ValueError subclasses (ConfigError, CheckpointError, ...) or missing files; a
    # KeyError or TypeError is a bug and keeps its traceback
    except (FileNotFoundError, ValueError, NotImplementedError, FloatingPointError) as e:
        print(f"alaya: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
