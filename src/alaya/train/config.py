"""Run configs (docs/design.md, "Contracts"): a YAML file, ``key.sub=value`` overrides, defaults, checks.

The one config loader for ``alaya pretrain`` and ``alaya sft`` (its defaults: alaya.sft.run.SFT_DEFAULTS). Every section is a plain dict;
a key the defaults do not know is an error naming it (a typo never silently does nothing), except under
``model`` (any MptConfig field, checked by the model config) and ``data.weights`` (source names).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from alaya.configfile import ConfigError, parse_override, read_yaml_mapping  # noqa: F401 (re-exported)

PRETRAIN_DEFAULTS: dict[str, Any] = {
    "run_dir": "runs/pretrain",
    "seed": 0,
    "model": {},  # {preset: NAME, FIELD: value, ...} or {path: DIR}; empty means {preset: alaya-tiny}
    "tokenizer": None,  # a tokenizer folder; default: the data's (recorded in its index.json)
    "data": {
        "path": None,  # a folder written by `alaya data tokenize`
        "weights": None,  # {source: weight}; default: proportional to each source's tokens
        "mixture": None,  # a mixture.json from `alaya data curate` ({"weights": {...}}), instead of weights
    },
    "optimizer": {"lr": 1.2e-4, "min_lr": 1.2e-5, "betas": [0.9, 0.95], "eps": 1.0e-8, "weight_decay": 1.0e-5,
                  "grad_clip": 0.3},
    "schedule": {"warmup_steps": 100, "max_steps": 1000},
    "checkpoint": {"every": 100, "keep": 3},
    "train": {
        "seq_len": 2048,
        "micro_batch_size": 4,
        "grad_accum": 1,
        "precision": "bf16",  # fp32 | bf16 (autocast)
        "parallel": "auto",  # auto (ddp when launched by torchrun with several processes) | none | ddp | fsdp
        "activation_checkpointing": False,
        "compile": False,  # torch.compile each transformer block (compiled once, reused by every layer)
        "attention": "auto",  # auto (flex on CUDA, sdpa elsewhere) | sdpa | flex (alaya.model.flex)
        "device": None,  # default: cuda when present
        "peak_tflops": None,  # for MFU; default: measured matmul peak of this device at start
        "stop_after": None,  # end the process after this step (as if killed), for tests and time-boxed jobs
    },
    "eval": {"every": 100, "windows": 32},
    "log": {"every": 1, "progress": True},
}


def _merge(base: dict, new: dict, where: str, open_keys: set[str]) -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        path = f"{where}.{key}" if where else key
        if key not in base and where not in open_keys:
            raise ConfigError(f"unknown config key '{path}'; known: {', '.join(sorted(base))}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value, path, open_keys)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(
    path: str | Path | None,
    overrides: Sequence[str] = (),
    defaults: dict[str, Any] = PRETRAIN_DEFAULTS,
    open_keys: frozenset[str] = frozenset({"model", "data.weights"}),
    check: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Defaults, then the YAML file, then the overrides (in order), then the checks (the shared ones of
    every run config, and ``check``: those of the command; default: pretraining's)."""
    cfg = copy.deepcopy(defaults)
    if path is not None:
        loaded = read_yaml_mapping(path, ConfigError)
        cfg = _merge(cfg, loaded, "", set(open_keys))
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        try:
            cfg = _merge(cfg, nested, "", set(open_keys))
        except ConfigError as e:
            raise ConfigError(f"override '{text}': {e}") from None
    check_run_config(cfg)
    (check or check_pretrain_config)(cfg)
    return cfg


def need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def check_run_config(cfg: dict) -> None:
    """The checks of the keys every run config shares (docs/design.md, "Contracts")."""
    train, schedule, opt, ckpt = cfg["train"], cfg["schedule"], cfg["optimizer"], cfg["checkpoint"]
    need(train["precision"] in ("fp32", "bf16"), f"train.precision must be fp32 or bf16, got {train['precision']!r}")
    need(train["parallel"] in ("auto", "none", "ddp", "fsdp"), f"train.parallel must be auto, none, ddp or fsdp, got {train['parallel']!r}")
    need(train["attention"] in ("auto", "sdpa", "flex"),
         f"train.attention must be auto, sdpa or flex, got {train['attention']!r}")
    for key in ("seq_len", "micro_batch_size", "grad_accum"):
        need(isinstance(train[key], int) and train[key] >= 1, f"train.{key} must be a positive integer, got {train[key]!r}")
    need(isinstance(schedule["max_steps"], int) and schedule["max_steps"] >= 1, f"schedule.max_steps must be >= 1, got {schedule['max_steps']!r}")
    need(isinstance(schedule["warmup_steps"], int) and 0 <= schedule["warmup_steps"] <= schedule["max_steps"],
         f"schedule.warmup_steps must be in [0, max_steps], got {schedule['warmup_steps']!r}")
    need(0 < opt["min_lr"] <= opt["lr"], f"optimizer.min_lr must be in (0, lr], got {opt['min_lr']!r} (lr {opt['lr']!r})")
    need(len(opt["betas"]) == 2 and all(0 <= b < 1 for b in opt["betas"]), f"optimizer.betas must be two numbers in [0, 1), got {opt['betas']!r}")
    need(opt["grad_clip"] > 0, f"optimizer.grad_clip must be > 0, got {opt['grad_clip']!r}")
    need(isinstance(ckpt["every"], int) and ckpt["every"] >= 1, f"checkpoint.every must be >= 1, got {ckpt['every']!r}")
    need(isinstance(ckpt["keep"], int) and ckpt["keep"] >= 1, f"checkpoint.keep must be >= 1, got {ckpt['keep']!r}")
    for section in ("eval", "log"):
        every = cfg[section]["every"]
        need(isinstance(every, int) and every >= 1, f"{section}.every must be >= 1, got {every!r}")


def check_pretrain_config(cfg: dict) -> None:
    m = cfg["model"]
    if isinstance(m, dict) and "preset" not in m and "path" not in m:
        m["preset"] = "alaya-tiny"
    need(isinstance(m, dict) and (("preset" in m) != ("path" in m)),
         "model needs exactly one of model.preset (a preset name) or model.path (a model folder)")
    need(cfg["data"]["path"] is not None, "data.path is not set: a folder written by `alaya data tokenize`")
    need(not (cfg["data"]["weights"] and cfg["data"]["mixture"]), "set data.weights or data.mixture, not both")


def dump_config(cfg: dict, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
