"""The one training loop, for ``alaya pretrain`` (train/pretrain.py) and ``alaya sft`` (sft/run.py).

A builder makes the parts (model, optimizer, a data source that draws global batches, held-out batches,
how to save the final folder) and hands them to :func:`run_training`, which owns everything a run shares:
checkpoints (DCP, atomic, the last K kept), exact resume, ``metrics.jsonl``, the tqdm bar, held-out loss,
``train.stop_after`` and DDP / FSDP2.

A batch is a dict ``{input_ids, labels[, attention_mask][, segment_ids]}`` of [B, T] tensors; ``labels``
are shifted inside (position t+1 is predicted at t) and -100 is not trained on. The loss of an optimizer
step is the sum of the supervised tokens' cross-entropy over the whole global batch (every micro-batch of
every rank) divided by the number of supervised tokens in it, so gradient accumulation and data
parallelism give the gradient of one big batch, whatever the padding and the length of each example.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from alaya.configfile import settings_changes
from alaya.fileio import write_text_atomic
from alaya.train import distributed
from alaya.train.batch import with_host_layout
from alaya.train.builder import RunSections
from alaya.train.checkpoint import checkpoint_dirs, load_latest, save_checkpoint
from alaya.train.config import ConfigError, dump_config
from alaya.train.flops import measure_matmul_peak, mfu
from alaya.train.optim import cosine_lr, set_lr

IGNORE = -100


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def _grad_sync(model: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce of a DDP / FSDP2 model on all but the last accumulated micro-batch."""
    if enabled:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def restore():
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        return restore()
    return contextlib.nullcontext()


def supervised_tokens(batch: dict) -> int:
    """Tokens that carry a loss: labels[:, 1:] that are not -100."""
    return with_host_layout(batch)["supervised"]


def loss_weight(batch: dict) -> float:
    """What the batch's summed loss is divided by, summed over the step: its supervised tokens, or the sum of
    its ``loss_weights`` (SFT with train.loss_average=example: the number of examples)."""
    return with_host_layout(batch)["loss_weight"]


def real_tokens(batch: dict) -> int:
    """Tokens that are not padding (what tokens/s and MFU count)."""
    return with_host_layout(batch)["real_tokens"]


def _supervised_ce(model: torch.nn.Module, batch: dict, device: torch.device, precision: str) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy (fp32) of each supervised token, in the order of ``logits_index``, and the
    batch's layout. Everything about the layout comes from the host (alaya.train.batch): nothing here waits
    for the device."""
    layout = with_host_layout(batch)
    kwargs = {k: batch[k].to(device, non_blocking=True) for k in ("attention_mask", "segment_ids") if k in batch}
    if "real_index" in layout:
        kwargs["real_index"] = layout["real_index"].to(device, non_blocking=True)
    ids = batch["input_ids"].to(device, non_blocking=True)
    with autocast(device, precision):
        if layout["next_all"]:  # pretraining: every position but the last; a slice, not a gather
            logits = model(ids, **kwargs)[0][:, :-1].flatten(0, 1)
        else:
            logits, _ = model(ids, logits_at=layout["logits_index"].to(device, non_blocking=True), **kwargs)
    return F.cross_entropy(logits.float(), layout["targets"].to(device, non_blocking=True), reduction="none"), layout


def loss_sum(model: torch.nn.Module, batch: dict, device: torch.device, precision: str) -> torch.Tensor:
    """Summed next-token cross-entropy of the batch's supervised tokens (fp32), each weighted by its
    ``loss_weights`` when the batch has them."""
    ce, layout = _supervised_ce(model, batch, device, precision)
    if "target_weights" in layout:
        ce = ce * layout["target_weights"].to(ce.device, non_blocking=True)
    return ce.sum()


@torch.no_grad()
def row_losses(model: torch.nn.Module, batch: dict, device: torch.device, precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the summed cross-entropy of its supervised tokens and their count (the batched scorer of
    screening and evaluation)."""
    ce, layout = _supervised_ce(model, batch, device, precision)
    B, T = batch["labels"].shape
    row = layout["logits_index"] // T  # the row of each supervised token, in the logits' order
    sums = torch.zeros(B, dtype=torch.float32).index_add_(0, row, ce.cpu())
    return sums, torch.bincount(row, minlength=B)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[dict],
    lr: float,
    grad_clip: float,
    precision: str,
    device: torch.device | None = None,
    dist: distributed.Dist | None = None,
    params: list[torch.nn.Parameter] | None = None,
    read: bool = True,
) -> tuple[float | torch.Tensor, float | torch.Tensor, int]:
    """One optimizer step over this rank's micro-batches; returns (global loss, grad norm, global supervised
    tokens). ``model`` may be wrapped (DDP, FSDP2); then pass ``device`` and ``dist``. ``params``: those that
    are clipped (default: all of the model's that train). ``read=False``: the loss and the norm stay on the
    device as tensors, and the step waits for the device nowhere (the batch's layout comes from the host:
    alaya.train.batch); the loop reads them only for a metrics line."""
    device = device or model.device
    dist = dist or distributed.Dist(device=device)
    model.train()
    set_lr(optimizer, lr)
    n_global = distributed.all_sum(float(sum(supervised_tokens(b) for b in micro_batches)), dist)
    weighted = any("loss_weights" in b for b in micro_batches)
    weight = distributed.all_sum(sum(loss_weight(b) for b in micro_batches), dist) if weighted else n_global
    # DDP and FSDP2 average the ranks' gradients; scaling by the world size turns that into their sum
    scale = dist.world / max(weight, 1e-12) if weight else 0.0
    total = None  # the summed loss stays on the device: one read at the end of the step, not one per micro-batch
    for i, batch in enumerate(micro_batches):
        with _grad_sync(model, i == len(micro_batches) - 1):
            s = loss_sum(model, batch, device, precision)
            (s * scale).backward()
        total = s.detach().double() if total is None else total + s.detach().double()
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if not read:
        if dist.world > 1:
            torch.distributed.all_reduce(total)
        return total / max(weight, 1e-12), norm.detach(), int(n_global)
    return distributed.all_sum(float(total), dist) / max(weight, 1e-12), float(norm), int(n_global)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: list[dict], precision: str,
                  device: torch.device | None = None) -> float:
    """Token-weighted mean next-token loss over held-out batches (every rank evaluates all of them)."""
    device = device or model.device
    model.eval()
    total, n = 0.0, 0
    for b in batches:
        total += float(loss_sum(model, b, device, precision))
        n += supervised_tokens(b)
    return total / max(n, 1)


class BatchSource(Protocol):
    """Draws the global batch of each step; its state restores the exact batches after a resume."""

    def global_batch(self, micro_batch: int, world: int, accum: int, rank: int) -> list[dict]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class TrainParts:
    """What a builder hands to :func:`run_training`."""

    model: torch.nn.Module  # wrapped for DDP / FSDP2 already, compiled if asked
    optimizer: torch.optim.Optimizer
    data: BatchSource
    save_final: Callable[[torch.nn.Module, Path], None]  # every rank calls it
    flops_per_token: float
    evals: list[dict] | None = None
    params: list[torch.nn.Parameter] | None = None  # the trained ones (clipping); default all that train
    trainable_only_checkpoints: bool = False  # LoRA: checkpoints hold the adapter, not the frozen base
    on_eval: Callable[[torch.nn.Module, int], dict] | None = None  # extra fields for an eval line (samples)
    name: str = "train"
    describe: str = ""
    extra_summary: dict = field(default_factory=dict)


def log_main(dist: distributed.Dist, msg: str) -> None:
    """A line on stderr from the main rank only."""
    if dist.main:
        print(msg, file=sys.stderr, flush=True)



def metrics_file(run_dir: Path, resume_step: int | None) -> Path:
    """metrics.jsonl, cut back to the checkpoint's step when resuming (the steps after it are redone)."""
    path = run_dir / "metrics.jsonl"
    if resume_step is not None and path.exists():
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by the kill
            if rec.get("step", 0) <= resume_step:
                kept.append(line)
        write_text_atomic(path, "".join(l + "\n" for l in kept))
    return path


def _resume_state(run_dir: Path, dist: distributed.Dist, parts: TrainParts, ckpt_options: dict | None):
    """Model, optimizer, sampler and RNG from the newest good checkpoint: (step, tokens, the step resumed
    from), or (0, 0, None) when the run has none yet."""
    found = load_latest(run_dir, parts.model, parts.optimizer, options=ckpt_options)
    if found is None:
        log_main(dist, f"no checkpoint in {run_dir}; starting from step 0")
        return 0, 0, None
    state, path = found
    parts.data.load_state_dict(state["sampler"])
    log_main(dist, f"resumed from {path} (step {state['step']}, {state['tokens']} tokens)")
    return state["step"], state["tokens"], state["step"]


def _open_metrics(run_dir: Path, dist: distributed.Dist, resume: bool, resumed: int | None):
    """metrics.jsonl for appending on the main rank (a fresh run starts it anew; a resumed one cuts it back to
    the checkpoint's step); None on the other ranks."""
    if not dist.main:
        return None
    path = metrics_file(run_dir, resumed if resume else None)
    if not resume and path.exists():
        path.unlink()
    return open(path, "a", encoding="utf-8")


def run_training(cfg: dict, run_dir: Path, dist: distributed.Dist, parts: TrainParts, resume: bool) -> dict | None:
    """Train to ``schedule.max_steps`` (or ``train.stop_after``); the summary on rank 0, None elsewhere."""
    sections = RunSections.of(cfg)
    train, optimizer, schedule = sections.train, sections.optimizer, sections.schedule
    model, opt = parts.model, parts.optimizer
    ckpt_options = {"ignore_frozen_params": True} if parts.trainable_only_checkpoints else None
    step, tokens, resumed = _resume_state(run_dir, dist, parts, ckpt_options) if resume else (0, 0, None)
    metrics = _open_metrics(run_dir, dist, resume, resumed)

    def log(rec: dict) -> None:
        if metrics is not None:
            metrics.write(json.dumps(rec, ensure_ascii=False) + "\n")
            metrics.flush()

    def evaluate(step: int) -> dict:
        rec: dict = {"step": step, "tokens": tokens}
        if parts.evals:
            loss = evaluate_loss(model, parts.evals, train.precision, device=dist.device)
            rec.update(eval_loss=round(loss, 6), eval_ppl=round(math.exp(min(loss, 50)), 3))
        if parts.on_eval is not None:
            rec.update(parts.on_eval(model, step))
        if len(rec) > 2:
            log(rec)
        return rec

    if resumed is not None:
        log({"event": "resume", "step": step, "tokens": tokens, "time": time.time()})
    peak = (train.peak_tflops * 1e12) if train.peak_tflops else measure_matmul_peak(dist.device, train.precision)
    log_main(dist, parts.describe)
    bar = tqdm(total=schedule.max_steps, initial=step, desc=parts.name, unit=" steps", mininterval=1.0,
               disable=not (dist.main and sections.log.progress))
    last, last_eval = {}, {}
    interval = [0, 0.0]  # tokens and seconds of the steps since the loss was last read
    try:
        if step == 0:  # the starting point of the held-out curve
            evaluate(0)
        while step < schedule.max_steps:
            t0 = time.perf_counter()
            micro = [with_host_layout(b) for b in
                     parts.data.global_batch(train.micro_batch_size, dist.world, train.grad_accum, dist.rank)]
            step += 1
            lr = cosine_lr(step, optimizer.lr, optimizer.min_lr, schedule.warmup_steps, schedule.max_steps)
            # the loss and the norm are read (a device sync) only for a metrics line and at the run's last steps
            read = (sections.log.due(step, schedule.max_steps)
                    or (train.stop_after is not None and step >= train.stop_after))
            loss, norm, supervised = train_step(model, opt, micro, lr, optimizer.grad_clip, train.precision,
                                                device=dist.device, dist=dist, params=parts.params, read=read)
            n = int(distributed.all_sum(float(sum(real_tokens(b) for b in micro)), dist))
            tokens += n
            interval[0] += n
            interval[1] += time.perf_counter() - t0  # on a read step this includes the wait for the device
            if read:
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {step}; lower optimizer.lr or use fp32")
                tps = interval[0] / interval[1]
                interval = [0, 0.0]
                last = {"step": step, "loss": round(loss, 6), "lr": lr, "grad_norm": round(norm, 6), "tokens": tokens,
                        "supervised_tokens": supervised, "tokens_per_s": round(tps, 1),
                        "mfu": round(mfu(tps / dist.world, parts.flops_per_token, peak), 4), "time": time.time()}
                log(last)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}", mfu=f"{100 * last['mfu']:.1f}%")
            bar.update(1)
            if sections.eval.due(step, schedule.max_steps):
                last_eval = evaluate(step)
            if sections.checkpoint.due(step, schedule.max_steps):
                save_checkpoint(run_dir, model, opt, {"step": step, "tokens": tokens,
                                                      "sampler": parts.data.state_dict(), "config": cfg},
                                keep=sections.checkpoint.keep, options=ckpt_options)
            if train.stop_after is not None and step >= train.stop_after and step < schedule.max_steps:
                log_main(dist, f"stopping after step {step} (train.stop_after)")
                distributed.barrier(dist)  # leave together: tearing gloo down under a busy peer can abort it
                return {"run_dir": str(run_dir), "stopped": True, **last} if dist.main else None
        bar.close()
        final = run_dir / "final"
        parts.save_final(model, final)
        distributed.barrier(dist)  # leave together: tearing gloo down under a busy peer can abort it
        if not dist.main:
            return None
        return {"run_dir": str(run_dir), "final": str(final), **last, **parts.extra_summary,
                **{k: v for k, v in last_eval.items() if k not in ("step", "tokens")}}
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()


def start_run_dir(run_dir: Path, cfg: dict, dist: distributed.Dist, resume: bool, resume_free: set) -> None:
    """Refuse to overwrite a run without --resume, or to resume it with settings that change it; write
    the resolved config.yaml."""
    if checkpoint_dirs(run_dir) and not resume:
        raise ConfigError(f"{run_dir} already holds checkpoints; pass --resume to continue it, or set run_dir")
    old = run_dir / "config.yaml"
    if resume and old.exists():
        changed = settings_changes(yaml.safe_load(old.read_text(encoding="utf-8")), cfg, resume_free)
        if changed:
            free = ", ".join(sorted(".".join(k) for k in resume_free))
            raise ConfigError("--resume with a config that changes the run: " + "; ".join(changed)
                              + f" (only {free} may change)")
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, run_dir / "config.yaml")
    distributed.barrier(dist)


def save_full_model(model: torch.nn.Module, folder: Path, tokenizer, dist: distributed.Dist) -> None:
    """The trained network (gathered from every rank under FSDP2) as a model folder; every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from alaya.model.hf import save_model
    from alaya.model.mpt import AlayaForCausalLM

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.main:
        inner = distributed.unwrap(model)
        clean = AlayaForCausalLM(inner.config)
        clean.load_state_dict({k: v.float() for k, v in full.items()})
        save_model(clean, folder, tokenizer=tokenizer)
    distributed.barrier(dist)
