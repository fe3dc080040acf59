"""``alaya plan``: memory per GPU and step time of a training setup, before renting the GPUs.

Memory per GPU, in bytes, for N parameters on G GPUs (fp32 master weights, bf16 autocast as the recipe):

* parameters 4N, gradients 4N, optimizer state 8N (Adam's two moments), each divided by G under FSDP;
  FSDP also holds the all-gathered fp32 parameters of the block being computed and of the next one;
* activations for a micro-batch of b sequences of s tokens (h = d_model, a = heads, V = vocabulary,
  e = bytes per activation element: 2 in bf16, 4 in fp32), counted from what this model's backward keeps:
  per block 16·s·b·h·e (block input, LN outputs, q/k/v, attention output, FFN input/GELU in and out), the
  ALiBi bias a·s²·e once, the final norm and head inputs 2·s·b·h·e, the fp32 log-softmax 4·s·b·V, and in
  bf16 the weights' bf16 copies 2N made by autocast. With activation checkpointing a block keeps only its
  fp32 input (4·s·b·h) and one block is recomputed at a time.

:func:`measure_saved_activation_bytes` counts what autograd really keeps for a model on this machine; a
test checks the formula against it. Step time = 6N+12·L·h·s FLOPs per token × tokens per step /
(G × peak × MFU).
"""
from __future__ import annotations

from pathlib import Path

import torch

from alaya.model.config import ModelConfig, PRESETS, preset

GB = 1e9


def activation_bytes(cfg: ModelConfig, seq_len: int, micro_batch: int, precision: str = "bf16",
                     checkpointing: bool = False) -> int:
    """Bytes autograd keeps from the forward for the backward, for one micro-batch on one GPU."""
    e = 2 if precision == "bf16" else 4
    s, b, h, L, V = seq_len, micro_batch, cfg.d_model, cfg.n_layers, cfg.vocab_size
    sbh = s * b * h
    block = 16 * sbh * e
    shared = cfg.n_heads * s * s * e + 2 * sbh * e + 4 * (s - 1) * b * V
    casts = 2 * (cfg.num_parameters() - V * h) if precision == "bf16" else 0  # bf16 copies of block weights
    head_cast = 2 * V * h if precision == "bf16" else 0
    if checkpointing:
        return L * sbh * 4 + shared + head_cast
    return L * block + shared + casts + head_cast


def peak_activation_bytes(cfg: ModelConfig, seq_len: int, micro_batch: int, precision: str = "bf16",
                          checkpointing: bool = False) -> int:
    """Saved activations plus, with checkpointing, the one block recomputed during the backward."""
    saved = activation_bytes(cfg, seq_len, micro_batch, precision, checkpointing)
    if checkpointing:
        e = 2 if precision == "bf16" else 4
        saved += 16 * seq_len * micro_batch * cfg.d_model * e
    return saved


def measure_saved_activation_bytes(model, ids: torch.Tensor, precision: str = "fp32",
                                   checkpointing: bool = False) -> int:
    """Bytes of the distinct tensors autograd saves in one forward (parameters and their views excluded)."""
    from alaya.train.loop import autocast

    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        if st.data_ptr() not in param_storages:
            seen[st.data_ptr()] = st.nbytes()
        return t

    model.train()
    model.activation_checkpointing = checkpointing
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast(ids.device, precision):
            model(ids, labels=ids)
    return sum(seen.values())


def plan(model: str, gpus: int = 8, seq_len: int | None = None, micro_batch: int = 4, grad_accum: int = 1,
         gpu_memory_gb: float = 80.0, peak_tflops: float = 989.0, mfu: float = 0.4,
         tokens: float | None = None, precision: str = "bf16") -> dict:
    if gpus < 1 or micro_batch < 1:
        raise ValueError("--gpus and --micro-batch must be at least 1")
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {mfu}")
    if model in PRESETS:
        cfg = preset(model)
    else:
        from alaya.model.hf import read_config

        cfg = read_config(Path(model))
    s = seq_len or cfg.max_seq_len
    N = cfg.num_parameters()
    states = {"parameters": 4 * N, "gradients": 4 * N, "optimizer": 8 * N}
    block_params = 12 * cfg.d_model**2
    rows = {}
    for strategy in ("ddp", "fsdp"):
        shard = gpus if strategy == "fsdp" else 1
        base = {k: v / shard for k, v in states.items()}
        gathered = 2 * 4 * block_params if strategy == "fsdp" and gpus > 1 else 0  # current + prefetched block
        for ckpt in (False, True):
            act = peak_activation_bytes(cfg, s, micro_batch, precision, ckpt)
            total = sum(base.values()) + gathered + act
            rows[f"{strategy}{'+ckpt' if ckpt else ''}"] = {
                **{k: round(v / GB, 2) for k, v in base.items()}, "fsdp_gather": round(gathered / GB, 2),
                "activations": round(act / GB, 2), "total": round(total / GB, 2),
                "fits": total <= gpu_memory_gb * GB * 0.92,  # ~8 % for the allocator, CUDA context, buffers
            }
    flops_tok = cfg.flops_per_token(s)
    tokens_per_step = micro_batch * s * gpus * grad_accum
    step_s = flops_tok * tokens_per_step / (gpus * peak_tflops * 1e12 * mfu)
    out = {"model": cfg.name or model, "parameters": N, "gpus": gpus, "seq_len": s, "micro_batch": micro_batch,
           "grad_accum": grad_accum, "precision": precision, "gpu_memory_gb": gpu_memory_gb, "memory_gb": rows,
           "flops_per_token": flops_tok, "tokens_per_step": tokens_per_step, "step_seconds": round(step_s, 3),
           "tokens_per_second": round(tokens_per_step / step_s), "mfu": mfu, "peak_tflops": peak_tflops}
    if tokens:
        out["days_for_tokens"] = round(tokens / out["tokens_per_second"] / 86400, 2)
    return out


def format_plan(p: dict) -> str:
    lines = [f"{p['model']}: {p['parameters'] / 1e9:.2f} B parameters, {p['gpus']} GPUs × {p['gpu_memory_gb']:.0f} GB, "
             f"seq {p['seq_len']}, micro-batch {p['micro_batch']}, {p['precision']}",
             "", f"{'memory per GPU (GB)':<20}{'params':>8}{'grads':>8}{'optim':>8}{'gather':>8}{'activ.':>8}{'total':>8}  fits"]
    for name, r in p["memory_gb"].items():
        lines.append(f"{name:<20}{r['parameters']:>8}{r['gradients']:>8}{r['optimizer']:>8}{r['fsdp_gather']:>8}"
                     f"{r['activations']:>8}{r['total']:>8}  {'yes' if r['fits'] else 'no'}")
    lines += ["", f"{p['flops_per_token'] / 1e9:.1f} GFLOP per token; {p['tokens_per_step']} tokens per step → "
                  f"{p['step_seconds']} s per step, {p['tokens_per_second']:,} tokens/s at {100 * p['mfu']:.0f} % MFU "
                  f"of {p['peak_tflops']} TFLOP/s"]
    if "days_for_tokens" in p:
        lines.append(f"{p['days_for_tokens']} days for the requested tokens")
    return "\n".join(lines)
