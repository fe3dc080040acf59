"""The one way `alaya pretrain` and `alaya sft` build their training parts from a run config: typed views of the
config sections, the model placed, wrapped (DDP / FSDP2) and compiled, the optimizer, the line that
describes the run. Each command keeps only what is its own: pretraining its data and model, SFT its data,
LoRA and adapter folders (as torchtitan builds its parts from one config).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from alaya.model.flex import resolve_attention
from alaya.train import distributed
from alaya.train.config import ConfigError
from alaya.train.optim import DecoupledAdamW

# keys that may differ between a run and its resumption without changing what is computed (SFT adds its own)
RESUME_FREE = frozenset({("train", "stop_after"), ("log", "progress"), ("log", "every"), ("train", "compile"),
                         ("train", "attention"),
                         ("checkpoint", "keep"), ("train", "peak_tflops")})


def _section(cls, values: dict):
    return cls(**{f.name: values[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class TrainSection:
    """``train:`` of a run config (the keys pretraining and SFT share)."""

    seq_len: int
    micro_batch_size: int
    grad_accum: int
    precision: str  # fp32 | bf16 (autocast; FSDP2 gets bf16 parameters)
    parallel: str  # auto | none | ddp | fsdp
    activation_checkpointing: bool
    compile: bool
    attention: str  # auto | sdpa | flex
    device: str | None
    peak_tflops: float | None
    stop_after: int | None

    @classmethod
    def of(cls, cfg: dict) -> "TrainSection":
        return _section(cls, cfg["train"])

    def global_rows(self, world: int) -> int:
        return self.micro_batch_size * world * self.grad_accum


@dataclass(frozen=True)
class OptimizerSection:
    """``optimizer:`` of a run config: Decoupled AdamW and its clipping."""

    lr: float
    min_lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    grad_clip: float

    @classmethod
    def of(cls, cfg: dict) -> "OptimizerSection":
        values = dict(cfg["optimizer"])
        values["betas"] = tuple(values["betas"])
        return _section(cls, values)


@dataclass(frozen=True)
class ScheduleSection:
    """``schedule:``: linear warmup, then cosine to ``optimizer.min_lr`` at ``max_steps``."""

    warmup_steps: int
    max_steps: int

    @classmethod
    def of(cls, cfg: dict) -> "ScheduleSection":
        return _section(cls, cfg["schedule"])


@dataclass(frozen=True)
class PeriodSection:
    """``checkpoint:``, ``eval:`` or ``log:``: every how many steps (and the section's own switch)."""

    every: int
    keep: int | None = None  # checkpoint: how many to keep
    progress: bool = True  # log: the progress bar

    @classmethod
    def of(cls, cfg: dict, name: str) -> "PeriodSection":
        return cls(**{k: v for k, v in cfg[name].items() if k in ("every", "keep", "progress")})

    def due(self, step: int, last: int) -> bool:
        """Whether ``step`` is one of this section's steps (the last step always is)."""
        return step % self.every == 0 or step == last


@dataclass(frozen=True)
class RunSections:
    """Every section of a run config the training loop reads, typed."""

    train: TrainSection
    optimizer: OptimizerSection
    schedule: ScheduleSection
    checkpoint: PeriodSection
    eval: PeriodSection
    log: PeriodSection

    @classmethod
    def of(cls, cfg: dict) -> "RunSections":
        return cls(TrainSection.of(cfg), OptimizerSection.of(cfg), ScheduleSection.of(cfg),
                   PeriodSection.of(cfg, "checkpoint"), PeriodSection.of(cfg, "eval"), PeriodSection.of(cfg, "log"))


def compile_for_training(model: torch.nn.Module) -> None:
    """``train.compile``: torch.compile each transformer block in place (regional compilation, as torchtune
    and torchtitan do): the blocks share one code, so the block is compiled once and every layer reuses it,
    where compiling the whole model traces every layer. The blocks then take the whole [B, T] batch (their
    shapes must not follow the real-token count). Random ops (LoRA dropout) go through PyTorch's own kernels
    (inductor's fallback_random), so a compiled block draws the masks an eager block draws from the same RNG
    state over the same shapes (with padding, eager runs on the real tokens only: other shapes, other
    draws)."""
    net = distributed.unwrap(model)
    for block in net.transformer.blocks:
        block.compile(options={"fallback_random": True})
    net.blocks_compiled = True


def check_fits(model: torch.nn.Module, train: TrainSection) -> None:
    """The run's sequences fit the model's context (a ConfigError naming the key otherwise)."""
    ctx = model.config.max_seq_len
    if train.seq_len > ctx:
        raise ConfigError(f"train.seq_len {train.seq_len} exceeds the model's max_seq_len {ctx}")


def training_attention(train: TrainSection, dist: distributed.Dist) -> str:
    """``train.attention`` resolved for this process's device (a ConfigError naming the key when it cannot
    run here); the commands ask before any data work, so a wrong choice fails in a second."""
    try:
        return resolve_attention(train.attention, dist.device, training=True)
    except ValueError as e:
        raise ConfigError(f"train.attention: {e}") from None


def place_model(model: torch.nn.Module, train: TrainSection, dist: distributed.Dist) -> torch.nn.Module:
    """The model as the loop trains it: activation checkpointing, on the device, wrapped for DDP / FSDP2 (with
    the precision's policy) and compiled when asked. Returns the wrapped model."""
    check_fits(model, train)
    model.activation_checkpointing = train.activation_checkpointing
    model.attention = training_attention(train, dist)
    model.to(dist.device)
    if train.compile:  # before wrapping: the blocks are compiled, then DDP / FSDP2 wrap them
        compile_for_training(model)
    return distributed.wrap(model, train.parallel, dist, train.precision)


def make_optimizer(params, optimizer: OptimizerSection, device: torch.device | None = None) -> DecoupledAdamW:
    """Decoupled AdamW over ``params``; on CUDA with torch's fused Adam kernel (one launch for all parameters,
    as torchtitan runs it), elsewhere torch's default (multi-tensor on accelerators, per tensor on the CPU).
    The update is the same either way (tests/train/test_optim.py)."""
    fused = {"fused": True} if device is not None and device.type == "cuda" else {}
    return DecoupledAdamW(params, lr=optimizer.lr, betas=optimizer.betas, eps=optimizer.eps,
                          weight_decay=optimizer.weight_decay, **fused)


def describe_batch(train: TrainSection, dist: distributed.Dist, rows: str | None = None) -> str:
    """The global batch, precision and attention for the run's first log line: ``global batch R × T, bf16,
    attention flex`` (windows of T tokens), or with ``rows`` (what a row holds) ``global batch R rows × ≤T
    (rows), ...``."""
    n = train.global_rows(dist.world)
    shape = f"{n} × {train.seq_len}" if rows is None else f"{n} rows × ≤{train.seq_len} ({rows})"
    compiled = ", compiled blocks" if train.compile else ""
    return (f"global batch {shape}, {train.precision}, attention "
            f"{training_attention(train, dist)}{compiled}")
