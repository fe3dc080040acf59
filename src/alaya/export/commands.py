"""The ``alaya export gguf`` and ``alaya export ctranslate2`` subcommands: their parsers and calls (no logic)."""
from __future__ import annotations

import argparse


def cmd_export_gguf(args: argparse.Namespace) -> int:
    from alaya.export.gguf import export_gguf

    out = export_gguf(args.model, args.output, type=args.type, adapter=args.adapter, force=args.force)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {args.type})")
    return 0


def cmd_export_ctranslate2(args: argparse.Namespace) -> int:
    from alaya.export.ctranslate2 import export_ctranslate2

    out = export_ctranslate2(args.model, args.output, quantization=args.quantization, adapter=args.adapter,
                             force=args.force)
    print(f"wrote {out} ({args.quantization or 'float32'})")
    return 0


def add_parsers(sub, formatter) -> None:
    e = sub.add_parser("export", help="export a model to GGUF (llama.cpp, Ollama) or CTranslate2")
    esub = e.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    g = esub.add_parser("gguf", formatter_class=formatter, help="one .gguf file for llama.cpp / Ollama",
                        description="Write the model (an adapter merged first) as GGUF with llama.cpp's MPT "
                                    "metadata, the BPE tokenizer with its merges, and the chat template.",
                        epilog="examples:\n  alaya export gguf alaya-quickstart/model alaya.gguf\n"
                               "  alaya export gguf alaya-quickstart/model alaya-q8.gguf --type q8_0\n"
                               "  llama-cli -m alaya.gguf -p '你好' -n 64   # llama.cpp")
    g.add_argument("model", help="a model folder")
    g.add_argument("output", help="the .gguf file to write")
    g.add_argument("--type", default="f16", choices=["f16", "q8_0", "f32"], help="matrix type (default: f16)")
    g.add_argument("--adapter", default=None, help="a LoRA adapter folder, merged before export")
    g.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    g.set_defaults(func=cmd_export_gguf)
    c = esub.add_parser("ctranslate2", formatter_class=formatter, help="a CTranslate2 model folder",
                        description="Write a CTranslate2 model folder (ctranslate2.Generator loads it).",
                        epilog="examples:\n  alaya export ctranslate2 alaya-quickstart/model alaya-ct2 --quantization int8")
    c.add_argument("model", help="a model folder")
    c.add_argument("output", help="the folder to write")
    c.add_argument("--quantization", default=None, choices=["int8", "int8_float32", "int8_float16", "int8_bfloat16",
                                                             "float16", "bfloat16", "float32"],
                   help="weight type (default: float32)")
    c.add_argument("--adapter", default=None, help="a LoRA adapter folder, merged before export")
    c.add_argument("--force", action="store_true", help="overwrite a non-empty OUTPUT folder")
    c.set_defaults(func=cmd_export_ctranslate2)
