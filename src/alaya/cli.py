"""The ``alaya`` command: parses arguments and calls one function per subcommand; no logic here."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def cmd_quickstart(args: argparse.Namespace) -> int:
    from alaya.quickstart import run_quickstart

    run_quickstart(workdir=args.workdir, corpus=args.corpus, model_preset=args.preset, steps=args.steps,
                   sft_steps=args.sft_steps, fast=args.fast, seed=args.seed, restart=args.restart, data_dir=args.data_dir)
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
    q.add_argument("--sft-steps", type=int, default=None, help="SFT steps (default: 600, --fast 30)")
    q.add_argument("--fast", action="store_true", help="few steps and a short evaluation: a check that everything runs")
    q.add_argument("--restart", action="store_true", help="delete the work folder's outputs and start over")
    q.add_argument("--data-dir", default=None, help="benchmark sets for the multiple-choice slice (default: $ALAYA_DATA, else ../shared/data)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_quickstart)

    from alaya.data.commands import add_parsers as add_data_parsers
    from alaya.eval.commands import add_parsers as add_eval_parsers
    from alaya.export.commands import add_parsers as add_export_parsers
    from alaya.infer.commands import add_parsers as add_infer_parsers
    from alaya.model.commands import add_merge_parser
    from alaya.model.commands import add_parsers as add_model_parsers
    from alaya.sft.commands import add_parsers as add_sft_parsers
    from alaya.train.commands import add_parsers as add_train_parsers
    from alaya.train.commands import add_tool_parsers
    from alaya.tokenizer.commands import add_parsers as add_tokenizer_parsers
    from alaya.tokenizer.commands import add_tokenize_parser

    # one parser-building function per room, beside the commands it parses, in the order `alaya --help` lists them
    add_tokenizer_parsers(sub, _formatter)
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


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def with_default_action(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``alaya ROOM ARGS...`` is ``alaya ROOM ACTION ARGS...`` when ROOM's parser names a default action
    (``set_defaults(default_action=...)``) and ARGS does not start with one of its actions: ``alaya sft
    --config F`` is ``alaya sft train --config F``, the published command line."""
    room = _subcommands(parser).get(argv[0]) if argv else None
    default = room.get_default("default_action") if room is not None else None
    if default and len(argv) >= 2 and argv[1] not in _subcommands(room) and argv[1] not in ("-h", "--help"):
        return [argv[0], default, *argv[1:]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_default_action(parser, list(sys.argv[1:] if argv is None else argv)))
    try:
        return args.func(args)
    # the project's errors are ValueError subclasses (ConfigError, CheckpointError, ...) or missing files; a
    # KeyError or TypeError is a bug and keeps its traceback
    except (FileNotFoundError, ValueError, NotImplementedError, FloatingPointError) as e:
        print(f"alaya: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
