"""``alaya sft``: supervised fine-tuning, full or LoRA, built over the one training loop (alaya.train.loop).

Run folder (docs/design.md, "Contracts"): ``config.yaml``, ``metrics.jsonl`` (step lines; eval lines with the
held-out loss and greedy ``samples``), ``data_report.json`` (per source: read, quarantined, too long,
truncated, held out, used; per category: target and achieved shares in examples and supervised tokens;
padding with and without packing), ``quarantine.jsonl``, ``checkpoints/``, and ``final/``: a PEFT adapter
folder for LoRA (plus the tokenizer files), a model folder for full fine-tuning.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from alaya.fileio import write_json_atomic, write_text_atomic
from alaya.model.hf import load_model
from alaya.model.lora import (DEFAULT_TARGETS, adapter_config, adapter_state_dict, add_lora, frozen_to,
                              save_adapter)
from alaya.sft.data import LOSS_AVERAGES, SFTBatches, eval_batches, load_sft_data, materialize_sources, padding_share
from alaya.sft.formats import CATEGORIES
from alaya.sft.template import LENGTH_POLICIES
from alaya.tokenizer import AlayaTokenizer
from alaya.train import distributed
from alaya.train.config import PRETRAIN_DEFAULTS, ConfigError, load_config, need
from alaya.train.builder import RESUME_FREE as BASE_RESUME_FREE
from alaya.train.builder import (OptimizerSection, TrainSection, check_fits, describe_batch, make_optimizer,
                                 place_model, training_attention)
from alaya.train.loop import TrainParts, autocast, run_training, save_full_model, start_run_dir

DEFAULT_SAMPLES = ["你好，你是谁？", "Who are you?", "What is the capital of France?", "请用一句话介绍一下长城。"]

SFT_DEFAULTS: dict = {
    "run_dir": "runs/sft",
    "seed": 0,
    "model": {},  # {path: DIR}: the model folder to fine-tune (ours, transformers' or llm-foundry's MPT)
    "method": "lora",  # lora | full
    "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": list(DEFAULT_TARGETS), "rslora": False},
    "data": {
        "recipe": None,  # a YAML file with `sources` (and `shares`) used where these are not set: configs/sft/data.yaml
        "sources": [],  # [{path, category, format?, fields?, max_epochs?, name?} or {generate: identity|refusals, ...}]
        "shares": None,  # {category: share}; default: the published recipe's (alaya.sft.formats.CATEGORIES)
        "max_epochs": 3.0,  # how often a source may repeat in one pass of the mixture
        "examples": None,  # examples per pass of the mixture; default: as many as the epoch caps allow
        "heldout_fraction": 0.02,
        "heldout_max": 64,
        "length_policy": "drop",  # drop | truncate_turns
        "last_turn_only": False,  # labels on the last assistant turn only
    },
    "optimizer": {"lr": 2.0e-4, "min_lr": 2.0e-5, "betas": [0.9, 0.95], "eps": 1.0e-8, "weight_decay": 0.0,
                  "grad_clip": 0.3},
    "schedule": {"warmup_steps": 10, "max_steps": 200},
    "checkpoint": {"every": 50, "keep": 2},
    # the training keys are pretraining's (one meaning each), plus packing
    # packing: several examples per row; pad_multiple: rows padded to a multiple of it (packed rows: seq_len),
    # so a run has a handful of shapes
    # loss_average: token (every supervised token weighs the same) or example (every example does)
    "train": {**PRETRAIN_DEFAULTS["train"], "packing": False, "pad_multiple": 128, "loss_average": "token"},
    "eval": {"every": 50, "samples": DEFAULT_SAMPLES, "max_new_tokens": 48},
    "log": dict(PRETRAIN_DEFAULTS["log"]),
}
# the keys pretraining may change on --resume, and the samples logged at each eval
RESUME_FREE = BASE_RESUME_FREE | {("eval", "samples"), ("eval", "max_new_tokens")}


def check_sft_config(cfg: dict) -> None:
    model = cfg["model"]
    need(isinstance(model, dict) and set(model) == {"path"} and model["path"],
         "model.path must name the model folder to fine-tune (and nothing else under model)")
    need(cfg["method"] in ("lora", "full"), f"method must be lora or full, got {cfg['method']!r}")
    lora = cfg["lora"]
    need(isinstance(lora["r"], int) and lora["r"] >= 1, f"lora.r must be a positive integer, got {lora['r']!r}")
    need(lora["alpha"] > 0, f"lora.alpha must be > 0, got {lora['alpha']!r}")
    need(0 <= lora["dropout"] < 1, f"lora.dropout must be in [0, 1), got {lora['dropout']!r}")
    need(isinstance(lora["target_modules"], list) and lora["target_modules"], "lora.target_modules must be a non-empty list")
    data = cfg["data"]
    if data["recipe"]:
        from alaya.configfile import read_yaml_mapping

        recipe = read_yaml_mapping(data["recipe"], ConfigError)
        if not data["sources"]:
            data["sources"] = recipe.get("sources") or []
        if data["shares"] is None:
            data["shares"] = recipe.get("shares")
    need(isinstance(data["sources"], list) and data["sources"], "data.sources is empty: list the instruction files, "
         "each as {path: FILE, category: NAME} (categories: " + ", ".join(CATEGORIES) + ")")
    need(data["length_policy"] in LENGTH_POLICIES, f"data.length_policy must be one of {LENGTH_POLICIES}, got {data['length_policy']!r}")
    need(0 <= data["heldout_fraction"] < 1, f"data.heldout_fraction must be in [0, 1), got {data['heldout_fraction']!r}")
    need(isinstance(cfg["eval"]["samples"], list), "eval.samples must be a list of prompts")
    pad = cfg["train"]["pad_multiple"]
    need(isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0,
         f"train.pad_multiple must be an integer >= 0, got {pad!r}")
    need(cfg["train"]["loss_average"] in LOSS_AVERAGES,
         f"train.loss_average must be one of {', '.join(LOSS_AVERAGES)}, got {cfg['train']['loss_average']!r}")


def _sampler(tok: AlayaTokenizer, prompts: list[str], max_new_tokens: int, dist: distributed.Dist, fsdp: bool,
             precision: str):
    """Greedy replies to a few prompts at every eval, as `alaya chat` gives them (alaya.infer.chat), in the
    run's precision (a bf16 LoRA run's frozen base is stored in bf16, its adapter in fp32)."""
    from alaya.infer.chat import chat_replies

    def samples(model: torch.nn.Module, step: int) -> dict:
        if not prompts or not (dist.main or fsdp):  # under FSDP every rank takes part in the forward passes
            return {}
        net = distributed.unwrap(model)
        was = net.training
        net.eval()
        with torch.no_grad(), autocast(dist.device, precision):
            replies = chat_replies(model if fsdp else net, tok, prompts, max_new_tokens, batch_size=1)
        net.train(was)
        return {"samples": {p: r.text for p, r in zip(prompts, replies)}}

    return samples


def prepare_lora(model: torch.nn.Module, lora: dict, train: TrainSection) -> list[str]:
    """The model as a LoRA run trains it: adapters on the targeted Linears (``lora:`` of the config), and
    with ``train.precision: bf16`` the frozen base stored in bf16 (under FSDP2 its policy gathers bf16
    itself). The adapted module names."""
    names = add_lora(model, lora["r"], lora["alpha"], lora["dropout"], lora["target_modules"], lora["rslora"])
    if train.precision == "bf16" and train.parallel != "fsdp":
        frozen_to(model, torch.bfloat16)
    return names


def _sft_data(cfg: dict, run_dir: Path, dist: distributed.Dist, tok: AlayaTokenizer, train: TrainSection):
    """The run's examples (generated sources written first), its report and quarantine files, the batch
    source and the held-out batches."""
    data_cfg = cfg["data"]
    sources = materialize_sources(data_cfg["sources"], run_dir / "generated", write=dist.main)
    distributed.barrier(dist)
    data = load_sft_data(sources, tok, train.seq_len, shares=data_cfg["shares"], max_epochs=data_cfg["max_epochs"],
                         examples=data_cfg["examples"], heldout_fraction=data_cfg["heldout_fraction"],
                         heldout_max=data_cfg["heldout_max"], policy=data_cfg["length_policy"],
                         last_turn_only=data_cfg["last_turn_only"], seed=cfg["seed"])
    packing = cfg["train"]["packing"]
    lengths = [len(e) for e in data.train]
    data.report["padding_share"] = {"one_example_per_row": round(padding_share(lengths, train.seq_len, False), 4),
                                    "packed": round(padding_share(lengths, train.seq_len, True), 4),
                                    "packing": packing}
    data.report["heldout_examples"] = len(data.heldout)
    data.report["quarantined"] = data.quarantine.count
    if dist.main:
        write_json_atomic(run_dir / "data_report.json", data.report)
        write_text_atomic(run_dir / "quarantine.jsonl", "".join(
            json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in data.quarantine.records))
        if data.quarantine.count:
            first = data.quarantine.records[0]
            print(f"{data.quarantine.count} malformed records quarantined (first: {first.file}:{first.line}: "
                  f"{first.reason}); see {run_dir / 'quarantine.jsonl'}", file=sys.stderr)
    batches = SFTBatches(data.train, train.seq_len, tok.pad_id, packing, cfg["seed"], cfg["train"]["pad_multiple"],
                         cfg["train"]["loss_average"])
    evals = eval_batches(data.heldout, train.micro_batch_size, tok.pad_id) or None
    return data, batches, evals


def _adapter_saver(cfg: dict, base: str, tok: AlayaTokenizer, dist: distributed.Dist):
    """How the final folder is written: a model folder (full) or a PEFT adapter with the tokenizer (LoRA)."""
    lora = cfg["lora"]

    def save_final(m: torch.nn.Module, folder: Path) -> None:
        if cfg["method"] == "full":
            save_full_model(m, folder, tok, dist)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(m, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if dist.main:
            acfg = adapter_config(lora["r"], lora["alpha"], lora["dropout"], lora["target_modules"], lora["rslora"],
                                  str(Path(base).resolve()))
            save_adapter(folder, acfg, adapter_state_dict(m, full))
            tok.save(folder)  # alaya chat BASE --adapter final finds the same tokenizer here
        distributed.barrier(dist)

    return save_final


def run_sft(config_path: str | None, overrides: list[str], resume: bool = False) -> dict | None:
    cfg = load_config(config_path, overrides, SFT_DEFAULTS, frozenset({"model", "data.shares"}), check_sft_config)
    train, optimizer, lora = TrainSection.of(cfg), OptimizerSection.of(cfg), cfg["lora"]
    dist = distributed.init(train.device)
    run_dir = Path(cfg["run_dir"])
    try:
        training_attention(train, dist)  # before any data work
        start_run_dir(run_dir, cfg, dist, resume, RESUME_FREE)
        base = str(cfg["model"]["path"])
        tok = AlayaTokenizer.load(base)
        model = load_model(base, dtype=torch.float32)
        mc = model.config
        check_fits(model, train)
        if tok.vocab_size > mc.vocab_size:
            raise ConfigError(f"{base}: the tokenizer has {tok.vocab_size} tokens, the model {mc.vocab_size}")
        data, batches, evals = _sft_data(cfg, run_dir, dist, tok, train)

        torch.manual_seed(cfg["seed"])  # the same adapter init on every rank
        flops = mc.flops_per_token(train.seq_len)
        if cfg["method"] == "lora":
            prepare_lora(model, lora, train)
            flops -= 2 * mc.num_parameters()  # no weight gradients for the frozen base
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        model = place_model(model, train, dist)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer(params, optimizer, dist.device)
        fsdp = train.parallel == "fsdp"
        save_final = _adapter_saver(cfg, base, tok, dist)
        rows = "packed" if cfg["train"]["packing"] else "one example per row"
        describe = (f"SFT ({cfg['method']}) of {base}: {mc.num_parameters() / 1e6:.2f} M parameters, "
                    f"{trainable / 1e6:.3f} M trained; {len(data.train)} examples per pass of the mixture, "
                    f"{len(data.heldout)} held out, {data.quarantine.count} quarantined; "
                    f"{describe_batch(train, dist, rows)}")
        parts = TrainParts(model=model, optimizer=opt, data=batches, evals=evals, params=params, name="sft",
                           describe=describe, flops_per_token=flops, save_final=save_final,
                           trainable_only_checkpoints=cfg["method"] == "lora",
                           on_eval=_sampler(tok, cfg["eval"]["samples"], cfg["eval"]["max_new_tokens"], dist, fsdp,
                                            train.precision),
                           extra_summary={"method": cfg["method"], "examples_per_pass": len(data.train),
                                          "trainable_parameters": trainable})
        summary = run_training(cfg, run_dir, dist, parts, resume)
        if summary is not None:
            summary["epochs"] = round(batches.epochs, 3)
        return summary
    finally:
        distributed.shutdown()
