"""The ``alaya tokenizer train`` and ``alaya data tokenize`` subcommands: their parsers and the calls they make
(no logic)."""
from __future__ import annotations

import argparse
import json
import sys


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from alaya.tokenizer import train_tokenizer_on_documents

    report = train_tokenizer_on_documents(args.input, args.output, vocab_size=args.vocab_size,
                                          min_frequency=args.min_frequency, heldout_fraction=args.heldout_fraction)
    for line in report["quarantine_examples"]:
        print(f"skipped {line}", file=sys.stderr)
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def cmd_data_tokenize(args: argparse.Namespace) -> int:
    from alaya.tokenizer.shards import tokenize_to_shards

    index = tokenize_to_shards(args.input, args.tokenizer, args.output, group_by=args.group_by,
                               heldout_fraction=args.heldout_fraction, shard_tokens=args.shard_tokens,
                               processes=args.processes, shard_mb=args.shard_mb, engine=args.engine,
                               address=args.ray_address)
    summary = {name: {sp: v[sp]["tokens"] for sp in v} for name, v in index["sources"].items()}
    print(json.dumps({"output": args.output, "documents": index["documents"], "quarantined": index["quarantined"],
                      "tokens": summary}, indent=1))
    return 0


def add_parsers(sub, formatter) -> None:
    t = sub.add_parser("tokenizer", help="train the byte-level BPE tokenizer")
    tsub = t.add_subparsers(dest="tokenizer_command", required=True, metavar="ACTION")
    tt = tsub.add_parser("train", formatter_class=formatter, help="train on JSONL/Parquet/text",
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


def add_tokenize_parser(dsub, formatter) -> None:
    """``alaya data tokenize``: documents to token shards is tokenizing, so it is defined here, in the tokenizer's
    room (the data room is upstream of the tokenizer); the command line hangs it under ``alaya data``."""
    tk = dsub.add_parser("tokenize", formatter_class=formatter, help="documents to uint16 token shards for pretraining",
                         description="Tokenize documents (JSONL/Parquet/text, builtin:demo) into memory-mapped token shards grouped by\n"
                                     "mixture source (meta fields, default lang-type), documents separated by </s>, with index.json.\n"
                                     "Parallel over input files (a large plain JSONL file is cut into line-aligned ranges, --shard-mb),\n"
                                     "deterministic, resumable (a rerun skips finished tasks).",
                         epilog="examples:\n  alaya data tokenize --input ../shared/data/corpus --tokenizer tok --output tokens\n"
                                "  alaya data tokenize --input curated/data --tokenizer tok --output tokens --group-by lang")
    tk.add_argument("--input", nargs="+", required=True)
    tk.add_argument("--tokenizer", required=True, help="a tokenizer folder (or a model folder with one)")
    tk.add_argument("--output", required=True)
    tk.add_argument("--group-by", nargs="*", default=["lang", "type"], help="meta fields naming the source (default: lang type)")
    tk.add_argument("--heldout-fraction", type=float, default=0.02,  # alaya.tokenizer.HELDOUT_FRACTION, the one rule
                    help="documents held out for perplexity, by a stable hash of their id (default: %(default)s)")
    tk.add_argument("--shard-tokens", type=int, default=1 << 27, help="tokens per shard file (default: %(default)s)")
    tk.add_argument("--shard-mb", type=float, default=64,
                    help="a plain JSONL input above 1.5x this many MB is split at line starts over processes (default: %(default)s)")
    tk.add_argument("--processes", type=int, default=None, help="worker processes / Ray CPUs (default: one per core)")
    tk.add_argument("--engine", default="local", choices=["local", "ray"], help="local processes (default) or Ray, as curation")
    tk.add_argument("--ray-address", default=None, help="a Ray cluster ('auto' inside one); default: a local Ray")
    tk.set_defaults(func=cmd_data_tokenize)
