"""``alaya pretrain``: the run folder, data, model, optimizer and the loop, in one place.

Run folder (docs/design.md, "Contracts"): ``config.yaml`` (resolved), ``metrics.jsonl`` (a line per step, eval
lines, ``{"event": "resume"}`` lines), ``checkpoints/step-N``, ``final/`` (a model folder), and when the
data were raw documents, ``tokenizer/`` and ``tokens/``. The same code runs in one process and under
torchrun (DDP or FSDP2); every rank draws the same global batch and trains on its slice.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from alaya.model.config import preset
from alaya.model.hf import load_model
from alaya.model.mpt import AlayaForCausalLM
from alaya.tokenizer import HELDOUT_FRACTION, AlayaTokenizer
from alaya.train import distributed
from alaya.train.config import ConfigError, load_config
from alaya.train.data import MixtureSampler
from alaya.train.builder import (RESUME_FREE, OptimizerSection, TrainSection, check_fits, describe_batch, make_optimizer,
                                 place_model, training_attention)
from alaya.train.loop import TrainParts, log_main, run_training, save_full_model, start_run_dir
from alaya.tokenizer.shards import INDEX, tokenize_to_shards
from alaya.train.shards import TokenShards



def prepare_data(cfg: dict, run_dir: Path, dist: distributed.Dist, vocab_size: int) -> tuple[Path, Path]:
    """The token-shard folder and tokenizer folder of the run; raw documents are tokenized first."""
    path = cfg["data"]["path"]
    paths = path if isinstance(path, list) else [path]
    if len(paths) == 1 and (Path(str(paths[0])) / INDEX).is_file():
        data = Path(paths[0])
        tok_dir = Path(cfg["tokenizer"] or json.loads((data / INDEX).read_text(encoding="utf-8"))["tokenizer"])
        return data, tok_dir
    tok_dir = Path(cfg["tokenizer"]) if cfg["tokenizer"] else run_dir / "tokenizer"
    data = run_dir / "tokens"
    if dist.main:
        if not (tok_dir / "tokenizer.json").is_file():
            from alaya.tokenizer import train_tokenizer_on_documents

            log_main(dist, f"training a {vocab_size}-token tokenizer on {paths} into {tok_dir}")
            train_tokenizer_on_documents([str(p) for p in paths], tok_dir, vocab_size=vocab_size,
                                         progress=cfg["log"]["progress"])
        if not (data / INDEX).is_file():
            log_main(dist, f"tokenizing {paths} into {data}")
            tokenize_to_shards([str(p) for p in paths], tok_dir, data, heldout_fraction=HELDOUT_FRACTION,
                               progress=cfg["log"]["progress"])
    distributed.barrier(dist)
    return data, tok_dir


def build_model(cfg: dict) -> AlayaForCausalLM:
    m = dict(cfg["model"])
    if "path" in m:
        path = m.pop("path")
        if m:
            raise ConfigError(f"model.path is set; model fields {sorted(m)} cannot change a trained model")
        return load_model(path)
    name = m.pop("preset")
    return AlayaForCausalLM(preset(name, **m))


def eval_windows(folder: Path, seq_len: int, limit: int) -> torch.Tensor | None:
    try:
        held = TokenShards(folder, "heldout")
    except ValueError:
        return None
    rows = []
    per_source = max(1, limit // len(held.sources))
    for src in held.sources.values():
        for arr in src.shards:
            n = min(len(arr) // seq_len, per_source - sum(1 for r in rows if r[0] == src.name))
            rows += [(src.name, arr[i * seq_len : (i + 1) * seq_len]) for i in range(max(0, n))]
    if not rows:
        return None
    return torch.stack([torch.from_numpy(r[1].astype("int64")) for r in rows[:limit]])


def run_pretrain(config_path: str | None, overrides: list[str], resume: bool = False) -> dict | None:
    cfg = load_config(config_path, overrides)
    train, optimizer = TrainSection.of(cfg), OptimizerSection.of(cfg)
    dist = distributed.init(train.device)
    run_dir = Path(cfg["run_dir"])
    try:
        training_attention(train, dist)  # before any data work
        start_run_dir(run_dir, cfg, dist, resume, RESUME_FREE)
        torch.manual_seed(cfg["seed"])  # the same initial weights on every rank
        model = build_model(cfg)
        model_cfg = model.config
        check_fits(model, train)
        data_dir, tok_dir = prepare_data(cfg, run_dir, dist, model_cfg.vocab_size)
        shards = TokenShards(data_dir, "train")
        if shards.vocab_size > model_cfg.vocab_size:
            raise ConfigError(f"the data's tokenizer has {shards.vocab_size} tokens but model vocab_size is {model_cfg.vocab_size}")
        weights = cfg["data"]["weights"]
        if cfg["data"]["mixture"]:
            weights = json.loads(Path(cfg["data"]["mixture"]).read_text(encoding="utf-8"))["weights"]
        sampler = MixtureSampler(shards.sources, weights, train.seq_len, cfg["seed"])
        windows = eval_windows(data_dir, train.seq_len, cfg["eval"]["windows"])
        evals = None if windows is None else [{"input_ids": w, "labels": w} for w in windows.split(8)]

        model = place_model(model, train, dist)
        opt = make_optimizer(model.parameters(), optimizer, dist.device)
        describe = (f"{model_cfg.num_parameters() / 1e6:.2f} M parameters, {dist.world} process(es) ({train.parallel}), "
                    f"{describe_batch(train, dist)}, sources {sampler.weights}")
        parts = TrainParts(model=model, optimizer=opt, data=sampler, evals=evals, name="pretrain", describe=describe,
                           flops_per_token=model_cfg.flops_per_token(train.seq_len),
                           save_final=lambda m, folder: save_full_model(m, folder, AlayaTokenizer.load(tok_dir), dist))
        return run_training(cfg, run_dir, dist, parts, resume)
    finally:
        distributed.shutdown()
