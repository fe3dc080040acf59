"""Decoding backends: what runs the network while :class:`alaya.infer.generate.BatchDecoder` decodes.

Loading (:func:`alaya.infer.loading.load_for_inference`) returns one, and everything that decodes (batch
inference, chat, the server, evaluation) hands it to the decoder. A backend owns how the products run; the
model file (:mod:`alaya.model.mpt`) stays the network alone.

- ``torch`` (:class:`TorchBackend`): the model's own forward, on any device and dtype.
- ``kernels`` (:class:`KernelsBackend`): CPU, fp32 or int8 weights (:mod:`alaya.infer.int8`). One-token
  decoding steps of up to ``FEW_ROWS`` rows run whole in :class:`~alaya.infer.cpu_decode.FusedDecodeStep`;
  the other products (prefill, larger batches) run in the compiled few-rows kernel or numpy's BLAS, through
  :class:`~alaya.infer.cpu_path.KernelLinear` modules put in the place of the model's Linears (same
  parameters, same state dict). PyTorch's own threads are held to one while it decodes.

Which one: :func:`choose_backend` with the setting ``--decode-path`` (``auto``, ``torch``, ``kernels``,
``measure``). ``auto`` on a CPU fp32/int8 model uses the measurement kept for this machine and model shape
(:mod:`alaya.infer.cpu_path`), measuring once when there is none; anywhere else it is ``torch``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import ContextManager

import numpy as np
import torch
from torch import nn

from alaya.infer.cpu_decode import FusedDecodeStep
from alaya.infer.cpu_path import (KernelHead, KernelLinear, decode_threads, kernels_cached, read_choice, remember_choice,
                                  replace_modules, store_row_major)
from alaya.infer.int8 import set_kernels
from alaya.model.mpt import AlayaForCausalLM, KVCache, TiedHead

DECODE_PATHS = ("auto", "torch", "kernels", "measure")


class Steps:
    """One decoding run's calls: the prefill of the padded prompts, then one token per row per step. ``mask``
    [B, capacity] is the decoder's attention mask, written by the decoder as rows advance or finish."""

    def __init__(self, model: AlayaForCausalLM, mask: torch.Tensor, cache: KVCache):
        self.model, self.mask, self.cache = model, mask, cache

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, 1, V] of the last prompt position; the cache then holds the prompts."""
        logits, _ = self.model(ids, attention_mask=self.mask[:, : ids.shape[1]], cache=self.cache, last_token_only=True)
        return logits

    def step(self, tokens: list[int]) -> torch.Tensor:
        """Logits [B, 1, V] after feeding one token per row at the cache's next position."""
        tok = torch.tensor(tokens, device=self.mask.device)[:, None]
        logits, _ = self.model(tok, attention_mask=self.mask[:, : self.cache.length + 1], cache=self.cache)
        return logits


class TorchBackend:
    """The model's own forward, on any device and dtype."""

    name = "torch"

    def __init__(self, model: AlayaForCausalLM):
        self.model = model

    def threads(self) -> ContextManager:
        return contextlib.nullcontext()

    def start(self, mask: torch.Tensor, cache: KVCache) -> Steps:
        return Steps(self.model, mask, cache)

    def close(self) -> None:
        """Give the model back as it was given (nothing to undo here)."""

    def describe(self) -> str:
        return f"torch ({self.model.device.type})"


class _FusedSteps(Steps):
    """:class:`Steps` whose one-token steps run in the compiled whole-network step; the decoder's mask is
    read through numpy (the same memory)."""

    def __init__(self, model: AlayaForCausalLM, mask: torch.Tensor, cache: KVCache, fused: FusedDecodeStep):
        super().__init__(model, mask, cache)
        self.fused, self.mask_np = fused, mask.numpy()

    def step(self, tokens: list[int]) -> torch.Tensor:
        return self.fused.step(np.array(tokens, dtype=np.int64), self.mask_np[:, : self.cache.length + 1], self.cache)


class KernelsBackend:
    """The compiled CPU path (module docstring). Construction puts the kernel modules in place and stores the
    weight matrices row-major in numpy-allocated memory; :meth:`close` gives the model back to PyTorch's
    layout and modules. Results agree with :class:`TorchBackend` to float rounding."""

    name = "kernels"

    def __init__(self, model: AlayaForCausalLM):
        act = model.transformer.norm_f.weight
        if act.device.type != "cpu" or act.dtype != torch.float32:
            raise ValueError(f"--decode-path kernels runs on CPU in float32 (or --quantize int8); the model is "
                             f"{act.dtype} on {act.device} (use --decode-path torch there)")
        self.model = model
        store_row_major(model)
        replace_modules(model, nn.Linear, KernelLinear)
        replace_modules(model, TiedHead, KernelHead)
        set_kernels(model, True)
        self.fused = FusedDecodeStep(model)

    def threads(self) -> ContextManager:
        return decode_threads()

    def start(self, mask: torch.Tensor, cache: KVCache) -> Steps:
        if mask.device.type == "cpu" and self.fused.handles(mask.shape[0], cache):
            return _FusedSteps(self.model, mask, cache, self.fused)
        return Steps(self.model, mask, cache)

    def close(self) -> None:
        from alaya.infer.cpu_path import relayout_for_decoding

        replace_modules(self.model, KernelLinear, nn.Linear)
        replace_modules(self.model, KernelHead, TiedHead)
        set_kernels(self.model, False)
        relayout_for_decoding(self.model)

    def describe(self) -> str:
        return "kernels"


Backend = TorchBackend | KernelsBackend  # (the CUDA-graph backend of the GPU work joins here)


def as_backend(model_or_backend: "AlayaForCausalLM | Backend") -> Backend:
    """A backend as given, or a bare model decoded by its own forward (:class:`TorchBackend`)."""
    if isinstance(model_or_backend, AlayaForCausalLM):
        return TorchBackend(model_or_backend)
    return model_or_backend


def choose_backend(model: AlayaForCausalLM, path: str | None = "auto", margin: float = 1.15) -> Backend:
    """The backend for ``path`` (:data:`DECODE_PATHS`); None means ``auto``.

    ``auto``: ``torch`` except for a CPU fp32 or int8 model, where it is the measured choice kept for this
    machine and model shape (:func:`alaya.infer.cpu_path.read_choice`), measured now when there is none:
    whole decoding steps at a realistic KV-cache length, each path in its own weight layout, alternated,
    best of each; ``kernels`` when at least ``margin`` times faster. The choice is kept so that the same
    machine does not flip between paths from run to run on timing noise. ``measure`` measures again and
    keeps the new result. The environment variable ``ALAYA_CPU_PATH`` (``torch`` or ``kernels``) sets what
    ``auto`` means (tests pin it)."""
    path = path or "auto"
    if path not in DECODE_PATHS:
        raise ValueError(f"--decode-path must be one of {', '.join(DECODE_PATHS)}, got {path!r}")
    if path == "torch":
        return TorchBackend(model)
    if path == "kernels":
        return KernelsBackend(model)
    act = model.transformer.norm_f.weight
    if act.device.type != "cpu" or act.dtype != torch.float32:
        return TorchBackend(model)
    forced = os.environ.get("ALAYA_CPU_PATH", "auto") if path == "auto" else "measure"
    if forced not in ("auto", "kernels", "torch", "measure"):
        raise ValueError(f"ALAYA_CPU_PATH must be auto, kernels, torch or measure, got {forced!r}")
    want = forced if forced in ("kernels", "torch") else (read_choice(model) if forced == "auto" else None)
    if want is None:
        want = _measure(model, margin)
    return KernelsBackend(model) if want == "kernels" else TorchBackend(model)


def _measure(model: AlayaForCausalLM, margin: float) -> str:
    if not kernels_cached():
        print("compiling the CPU decoding kernels (once; later runs load them from numba's cache, "
              "this takes up to a minute)...", file=sys.stderr, flush=True)
    step_torch = step_kernels = float("inf")
    for _ in range(2):  # alternated: a slow spell of a shared machine falls on both sides
        step_torch = min(step_torch, decode_step_seconds(TorchBackend(model)))
        kernels = KernelsBackend(model)
        step_kernels = min(step_kernels, decode_step_seconds(kernels))
        kernels.close()
    want = "kernels" if step_torch >= margin * step_kernels else "torch"
    remember_choice(model, want, {"torch_step_ms": round(step_torch * 1e3, 3),
                                  "kernels_step_ms": round(step_kernels * 1e3, 3)})
    return want


@torch.inference_mode()
def decode_step_seconds(backend, steps: int = 3) -> float:
    """Best time of one-token decoding steps with a KV cache holding min(context / 2, 1024) positions (zeros:
    the cost does not depend on the values)."""
    model = backend.model
    context = max(1, min(model.config.max_seq_len // 2, 1024))
    cache = model.new_cache(1, context + steps + 1)
    cache.keys.zero_()
    cache.values.zero_()
    cache.length = context
    mask = torch.ones(1, context + steps + 1, dtype=torch.bool)
    best = float("inf")
    with backend.threads():
        run = backend.start(mask, cache)
        for i in range(steps + 1):  # the first step warms up
            t0 = time.perf_counter()
            run.step([4])
            if i:
                best = min(best, time.perf_counter() - t0)
    return best
