"""The ``alaya model init`` and ``alaya model info`` subcommands: their parsers and the calls they make (no logic)."""
from __future__ import annotations

import argparse
import json

from alaya.configfile import nested_overrides


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


def add_parsers(sub, formatter) -> None:
    m = sub.add_parser("model", help="create or inspect model folders")
    msub = m.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    mi = msub.add_parser("init", formatter_class=formatter, help="write a freshly initialised model folder",
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
    mf = msub.add_parser("info", formatter_class=formatter, help="config, parameter and FLOP counts",
                         epilog="examples:\n  alaya model info alaya-7b\n  alaya model info ./alaya-quickstart/model")
    mf.add_argument("model", help="a preset name or a model folder")
    mf.set_defaults(func=cmd_model_info)


def cmd_merge(args: argparse.Namespace) -> int:
    from alaya.model.merge import merge_to_folder

    names = merge_to_folder(args.model_path, args.adapter_path, args.output, dtype=args.dtype)
    print(f"wrote {args.output}: the adapter merged into {len(names)} layers")
    return 0


def add_merge_parser(sub, formatter) -> None:
    """``alaya merge`` (listed after ``alaya sft`` in ``alaya --help``)."""
    mg = sub.add_parser("merge", formatter_class=formatter, help="merge a LoRA adapter into a model folder",
                        description="Write MODEL with the adapter folded into its weights as a new model folder (any folder\n"
                                    "`alaya` reads; transformers, vLLM and the exporters read the result without peft).",
                        epilog="example:\n  alaya merge alaya-quickstart/pretrain/final runs/sft/final chat-model")
    mg.add_argument("model_path", metavar="MODEL_PATH")
    mg.add_argument("adapter_path", metavar="ADAPTER_PATH")
    mg.add_argument("output", metavar="OUTPUT")
    mg.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    mg.set_defaults(func=cmd_merge)
