"""CPU fp32 decoding: matrix products through numpy's BLAS when it is the faster one on this machine.

Decoding multiplies one row per sequence by every weight matrix: matrix-vector products bound by memory
bandwidth. PyTorch's CPU wheels call MKL for them; numpy's wheels ship OpenBLAS. On AMD processors MKL
takes a generic code path, and OpenBLAS's kernel for these shapes runs 1.5 to 3 times faster (measured on
the 2-core EPYC: one pass over alaya-50m's weights at batch 1, 11-12 ms with torch, 7.5-8.2 ms with numpy). On
other machines it may be the other way round, so :func:`use_fastest_blas` measures both on the model's own
matrices, then on whole decoding steps at a realistic context length, and switches only when numpy wins
clearly on both.

The switch changes which library multiplies, not what is multiplied: same fp32 weights (shared memory,
no copy), same shapes; results agree to float rounding (tests compare logits and greedy output with
transformers). While numpy's BLAS runs the products, PyTorch's own thread pool is kept to one thread
during the decode steps (:func:`decode_threads`), because two thread pools spinning on the same cores slow
each other down several-fold.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alaya.model.mpt import AlayaForCausalLM


def blas_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` (no bias) computed by numpy for CPU fp32 tensors without autograd."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return F.linear(x, weight)
    rows = x.reshape(-1, x.shape[-1])
    out = np.matmul(rows.detach().numpy(), weight.detach().t().numpy())
    return torch.from_numpy(out).view(*x.shape[:-1], weight.shape[0])


class BlasLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters and state-dict names) that multiplies with :func:`blas_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = blas_linear(x, self.weight)
        return out if self.bias is None else out + self.bias


def _pass_seconds(fn, weights: list[torch.Tensor], repeats: int = 5) -> float:
    xs = {w.shape[1]: torch.randn(1, w.shape[1]) for w in weights}
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms the caches and thread pools
        t0 = time.perf_counter()
        for w in weights:
            fn(xs[w.shape[1]], w)
        best = min(best, time.perf_counter() - t0)
    return best


def _sample_weights(model: AlayaForCausalLM, budget_bytes: int = 512 * 2**20) -> list[torch.Tensor]:
    """The matrices to time: the blocks' in order, then the tied head, up to ``budget_bytes`` (at least
    one block's), so a 7B model is judged on a block's worth of reads rather than all 28 GB."""
    head = model.transformer.wte.weight
    picked, total = [], 0
    for block in model.transformer.blocks:
        mats = [p for p in block.parameters() if p.ndim == 2]
        size = sum(m.numel() * m.element_size() for m in mats)
        if picked and total + size > budget_bytes:
            break
        picked += mats
        total += size
    if total + head.numel() * head.element_size() <= budget_bytes:
        picked.append(head)
    return picked


@torch.no_grad()
def use_fastest_blas(model: AlayaForCausalLM, margin: float = 1.15) -> bool:
    """Route the model's CPU fp32 matrix products to numpy's BLAS if one pass over its weights at batch 1 is
    at least ``margin`` times faster there. Returns whether it switched (``model.blas``)."""
    w = model.transformer.wte.weight
    if model.blas:
        return True
    if w.device.type != "cpu" or w.dtype != torch.float32:
        return False
    weights = _sample_weights(model)
    with decode_threads():
        t_numpy = _pass_seconds(blas_linear, weights)
    t_torch = _pass_seconds(F.linear, weights)
    if t_torch < margin * t_numpy:
        return False
    # the products are faster; confirm on whole decoding steps at a realistic context length, because in
    # numpy mode the rest of the step (attention over the KV cache above all) runs on one torch thread
    step_torch = _decode_step_seconds(model)
    switch_to_numpy_blas(model)
    with decode_threads():
        step_numpy = _decode_step_seconds(model)
    if step_torch < margin * step_numpy:
        switch_to_torch(model)
        return False
    return True


@torch.inference_mode()
def _decode_step_seconds(model: AlayaForCausalLM, steps: int = 3) -> float:
    """Best time of one-token decoding steps with a KV cache holding min(context / 2, 1024) positions (zeros:
    the cost does not depend on the values)."""
    context = max(1, min(model.config.max_seq_len // 2, 1024))
    cache = model.new_cache(1, context + steps + 1)
    cache.keys.zero_()
    cache.values.zero_()
    cache.length = context
    mask = torch.ones(1, context + steps + 1, dtype=torch.bool)
    tok = torch.full((1, 1), 4, dtype=torch.long)
    best = float("inf")
    for i in range(steps + 1):  # the first step warms up
        t0 = time.perf_counter()
        model(tok, attention_mask=mask[:, : context + i + 1], cache=cache)
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def switch_to_numpy_blas(model: AlayaForCausalLM) -> None:
    """Every ``nn.Linear`` of the model becomes a :class:`BlasLinear` (same parameters), and the tied head
    multiplies with :func:`blas_linear`."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = BlasLinear
    model.head_linear = blas_linear
    model.blas = True


def switch_to_torch(model: AlayaForCausalLM) -> None:
    """Undo :func:`switch_to_numpy_blas`."""
    for module in model.modules():
        if type(module) is BlasLinear:
            module.__class__ = nn.Linear
    model.head_linear = F.linear
    model.blas = False


_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextlib.contextmanager
def decode_threads(enabled: bool = True) -> Iterator[None]:
    """One PyTorch thread inside the block (numpy's BLAS keeps its own threads). Nested or overlapping
    blocks (two decoders alive at once) share the setting; the last one out restores the old count."""
    global _threads_users, _threads_before
    if not enabled:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
            torch.set_num_threads(1)
        _threads_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)
