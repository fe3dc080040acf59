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
- ``graphs`` (:class:`GraphBackend`): gpt-fast's design for accelerators. A static KV cache of a bucketed
  capacity, the position as a device tensor and a full-width mask, so every decoding step of a run has the
  same shapes; the step is compiled once with ``fullgraph=True`` and symbolic batch and capacity (so a new
  bucket is not a new compilation) and, on CUDA, ``mode="reduce-overhead"``: one CUDA-graph replay per
  token instead of ~70 kernel launches from Python, each bucket (the batch rounded up to a power of two,
  the capacity) its own recording.
  The prefill runs the model's forward as it is.

Which one: :func:`choose_backend` with the setting ``--decode-path`` (``auto``, ``torch``, ``kernels``,
``graphs``, ``measure``). ``auto`` uses the measurement kept for this machine, model shape and weight
format (:mod:`alaya.infer.cpu_path`), measuring once when there is none: on a CPU fp32/int8 model between
``torch`` and ``kernels``, on CUDA between ``torch`` and ``graphs``; elsewhere it is ``torch``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import weakref
from typing import ContextManager

import numpy as np
import torch
from torch import nn

from alaya.infer.cpu_decode import FusedDecodeStep
from alaya.infer.cpu_path import (KernelHead, KernelLinear, decode_threads, kernels_cached, read_choice, remember_choice,
                                  replace_modules, store_row_major)
from alaya.infer.int8 import set_kernels
from alaya.model.mpt import AlayaForCausalLM, KVCache, TiedHead

DECODE_PATHS = ("auto", "torch", "kernels", "graphs", "measure")
BUCKET = 256  # the static cache's capacity is rounded up to a multiple of this (one CUDA graph per bucket)
KEEP_BUCKETS = 4  # static caches (and their graphs) kept alive at once, the least recently used dropped


def _fed(tokens: list[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """One fed token per row as [B, 1] on the device."""
    if isinstance(tokens, torch.Tensor):
        return tokens.to(device).view(-1, 1)
    return torch.tensor(tokens, device=device)[:, None]


class Steps:
    """One decoding run's calls: the prefill of the padded prompts, then one token per row per step. ``mask``
    [B, capacity] is the decoder's attention mask, written by the decoder as rows advance or finish."""

    def __init__(self, model: AlayaForCausalLM, mask: torch.Tensor, cache: KVCache):
        self.model, self.mask, self.cache = model, mask, cache

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits [B, 1, V] of the last prompt position; the cache then holds the prompts."""
        logits, _ = self.model(ids, attention_mask=self.mask[:, : ids.shape[1]], cache=self.cache, last_token_only=True)
        return logits

    def step(self, tokens: list[int] | torch.Tensor) -> torch.Tensor:
        """Logits [B, 1, V] after feeding one token per row at the cache's next position (a list, or a [B]
        tensor already on the device)."""
        tok = _fed(tokens, self.mask.device)
        logits, _ = self.model(tok, attention_mask=self.mask[:, : self.cache.length + 1], cache=self.cache)
        return logits


class TorchBackend:
    """The model's own forward, on any device and dtype."""

    name = "torch"

    def __init__(self, model: AlayaForCausalLM):
        self.model = model

    def capacity(self, needed: int) -> int:
        """The KV-cache capacity a decoding run that needs ``needed`` positions gets."""
        return needed

    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        return self.model.new_cache(batch_size, capacity)

    def threads(self) -> ContextManager:
        return contextlib.nullcontext()

    def start(self, mask: torch.Tensor, cache: KVCache) -> Steps:
        return Steps(self.model, mask, cache)

    def close(self) -> None:
        """Give the model back as it was given (nothing to undo here)."""

    def warm_up_rows(self, max_batch: int) -> list[int]:
        """The batch sizes to decode once before serving batches of up to ``max_batch`` rows, so that no first
        request waits for a compilation (:func:`alaya.infer.generate.warm_up`); none here."""
        return []

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


class KernelsBackend(TorchBackend):
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
        try:
            store_row_major(model)
            replace_modules(model, nn.Linear, KernelLinear)
            replace_modules(model, TiedHead, KernelHead)
            set_kernels(model, True)
            self.fused = FusedDecodeStep(model)
        except BaseException:
            self.close()  # the model as it was given, whatever step failed
            raise

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


class _StaticCache:
    """One bucket's static KV cache: [n_layers, B, H, capacity, head_dim] keys and values, zeroed (an unwritten
    position is masked, and zeros keep its product finite). Their addresses are marked static, so a CUDA
    graph reads and writes them in place instead of copying them in at every replay; unguarded, so a new
    bucket's buffers are a new graph recording, not a recompilation."""

    def __init__(self, model: AlayaForCausalLM, batch_size: int, capacity: int):
        cache = model.new_cache(batch_size, capacity)
        self.keys, self.values = cache.keys.zero_(), cache.values.zero_()
        for t in (self.keys, self.values):
            torch._dynamo.mark_static_address(t, guard=False)
        self.in_use = False  # a decoding run holds these buffers


class _GraphSteps(Steps):
    """A run of B rows over a static cache of ``held``'s rows (B rounded up to a power of two): the prefill
    writes the first B rows (``cache`` is their view); each step feeds the extra rows a token over an empty
    mask (each sees only itself; nothing reads their logits). The step's tokens and mask are this run's own
    buffers, copied into at each step: every call of the compiled step then gets tensors made the same way
    (a mask made outside inference mode, like the decoder's, would be a guard failure, a recompilation)."""

    def __init__(self, model: AlayaForCausalLM, mask: torch.Tensor, cache: KVCache, step, held: _StaticCache):
        super().__init__(model, mask, cache)
        self.compiled_step, self.held = step, held
        self.position = torch.zeros(1, dtype=torch.long, device=mask.device)
        rows, self.B = held.keys.shape[1], mask.shape[0]
        self.tokens = torch.zeros(rows, 1, dtype=torch.long, device=mask.device)
        self.step_mask = torch.zeros(rows, mask.shape[1], dtype=torch.bool, device=mask.device)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        logits = super().prefill(ids)  # the model's forward, writing the prompts into the static buffers
        self.position.fill_(self.cache.length)
        return logits

    def step(self, tokens: list[int] | torch.Tensor) -> torch.Tensor:
        self.tokens[: self.B].copy_(_fed(tokens, self.mask.device))
        self.step_mask[: self.B].copy_(self.mask)
        logits = self.compiled_step(self.tokens, self.position, self.step_mask, self.held.keys, self.held.values)
        self.position.add_(1)
        self.cache.length += 1
        return logits[: self.B].clone()  # a graph's output is overwritten by the next replay


def graph_rows(batch_size: int) -> int:
    """The rows of the static cache a batch decodes in: the next power of two (1, 2, 4, 8, ...), so a server's
    changing batch sizes make a few CUDA-graph recordings, not one per size."""
    return 1 << max(0, batch_size - 1).bit_length()


class GraphBackend(TorchBackend):
    """Static-shape decoding steps (module docstring). Greedy output equals :class:`TorchBackend`'s.

    One compiled step serves every bucket: the batch and the capacity are symbolic sizes (``dynamic=True``;
    torch specialises a batch of 1 on its own, so a model compiles at most twice: one row, several rows).
    On CUDA a new (rows, capacity) bucket is then a new CUDA-graph recording of the same compiled code, not
    a new compilation; rows are the batch rounded up to a power of two (:func:`graph_rows`). The last
    :data:`KEEP_BUCKETS` buckets' caches are kept, so their recordings replay."""

    name = "graphs"

    def __init__(self, model: AlayaForCausalLM):
        super().__init__(model)
        self.mode = "reduce-overhead" if model.device.type == "cuda" else None
        self._buckets: dict[tuple[int, int], _StaticCache] = {}
        self._lent: dict[int, _StaticCache] = {}  # the caches lent to decoding runs still alive, by id

        def step(tokens: torch.Tensor, position: torch.Tensor, mask: torch.Tensor, keys: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor:
            """Logits [B, 1, V] of one new token per row ([B, 1]) written at ``position`` ([1]) into the
            static cache; ``mask`` [B, capacity]."""
            logits, _ = model(tokens, attention_mask=mask, cache=KVCache(keys, values, position=position))
            return logits

        self.step = torch.compile(step, mode=self.mode, fullgraph=True, dynamic=True)

    def capacity(self, needed: int) -> int:
        return min(-(-needed // BUCKET) * BUCKET, max(needed, self.model.config.max_seq_len))

    def _bucket(self, rows: int, capacity: int) -> _StaticCache:
        key = (rows, capacity)
        if key not in self._buckets:
            if len(self._buckets) >= KEEP_BUCKETS:
                self._buckets.pop(next(iter(self._buckets)))
            self._buckets[key] = _StaticCache(self.model, rows, capacity)
        self._buckets[key] = self._buckets.pop(key)  # the most recently used last
        return self._buckets[key]

    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        """The first ``batch_size`` rows of the bucket's static cache; while another decoding run still holds
        it (two decoders alive at once, in one thread or two), a cache of this run's own, so no run writes
        into another's."""
        rows = graph_rows(batch_size)
        held = self._bucket(rows, capacity)
        if held.in_use:
            held = _StaticCache(self.model, rows, capacity)
        held.in_use = True
        cache = KVCache(held.keys[:, :batch_size], held.values[:, :batch_size])
        self._lent[id(cache)] = held
        weakref.finalize(cache, self._release, held, id(cache))  # the run is over when its cache is dropped
        return cache

    def _release(self, held: _StaticCache, key: int) -> None:
        held.in_use = False
        self._lent.pop(key, None)

    def warm_up_rows(self, max_batch: int) -> list[int]:
        """Every row count a batch of up to ``max_batch`` decodes in: the step compiled (one row, several rows)
        and, on CUDA, recorded for each at the smallest capacity, so a server's first requests compile nothing
        (a bucket later dropped from the :data:`KEEP_BUCKETS` kept ones is recorded again, not compiled)."""
        return sorted({graph_rows(b) for b in range(1, max_batch + 1)})

    def start(self, mask: torch.Tensor, cache: KVCache) -> Steps:
        if id(cache) not in self._lent:
            raise ValueError("a graphs decoding run needs a cache from this backend's new_cache()")
        return _GraphSteps(self.model, mask, cache, self.step, self._lent[id(cache)])

    def describe(self) -> str:
        return f"graphs ({self.model.device.type})"


Backend = TorchBackend | KernelsBackend | GraphBackend


def as_backend(model_or_backend: "AlayaForCausalLM | Backend") -> Backend:
    """A backend as given, or a bare model decoded by its own forward (:class:`TorchBackend`)."""
    if isinstance(model_or_backend, AlayaForCausalLM):
        return TorchBackend(model_or_backend)
    return model_or_backend


BACKENDS = {"torch": TorchBackend, "kernels": KernelsBackend, "graphs": GraphBackend}


def _measured_pair(model: AlayaForCausalLM) -> tuple[str, str] | None:
    """The two paths ``auto`` chooses between for this model, or None (then it is ``torch``)."""
    act = model.transformer.norm_f.weight
    if act.device.type == "cpu" and act.dtype == torch.float32:
        return "torch", "kernels"
    if act.device.type == "cuda":
        return "torch", "graphs"
    return None


def choose_backend(model: AlayaForCausalLM, path: str | None = "auto", margin: float = 1.15) -> Backend:
    """The backend for ``path`` (:data:`DECODE_PATHS`); None means ``auto``.

    ``auto``: the measured choice kept for this machine, model shape and weight format
    (:func:`alaya.infer.cpu_path.read_choice`) between ``torch`` and ``kernels`` (CPU, fp32 or int8) or
    ``torch`` and ``graphs`` (CUDA); measured now when there is none: whole decoding steps at a realistic
    KV-cache length, each path in its own weight layout, alternated, best of each, after a warm-up step
    (which compiles); the other path when at least ``margin`` times faster than ``torch``. The choice is
    kept so that the same machine does not flip between paths from run to run on timing noise. Anywhere
    else ``auto`` is ``torch``. ``measure`` measures again and keeps the new result. On the CPU the
    environment variable ``ALAYA_CPU_PATH`` (``torch`` or ``kernels``) sets what ``auto`` means (tests pin it)."""
    path = path or "auto"
    if path not in DECODE_PATHS:
        raise ValueError(f"--decode-path must be one of {', '.join(DECODE_PATHS)}, got {path!r}")
    if path in BACKENDS:
        return BACKENDS[path](model)
    pair = _measured_pair(model)
    if pair is None:
        return TorchBackend(model)
    forced = "measure" if path == "measure" else "auto"
    if pair[1] == "kernels" and path == "auto":
        forced = os.environ.get("ALAYA_CPU_PATH", "auto")
        if forced not in ("auto", "kernels", "torch", "measure"):
            raise ValueError(f"ALAYA_CPU_PATH must be auto, kernels, torch or measure, got {forced!r}")
    want = forced if forced in BACKENDS else (read_choice(model) if forced == "auto" else None)
    if want is None:
        want = _measure(model, pair, margin)
    return BACKENDS[want](model)


def _measure(model: AlayaForCausalLM, pair: tuple[str, str], margin: float) -> str:
    base, other = pair
    if other == "kernels" and not kernels_cached():
        print("compiling the CPU decoding kernels (once; later runs load them from numba's cache, "
              "this takes up to a minute)...", file=sys.stderr, flush=True)
    if other == "graphs":
        print("timing decoding with and without CUDA graphs (once per machine and model shape; the graph is "
              "compiled first)...", file=sys.stderr, flush=True)
    seconds = {base: float("inf"), other: float("inf")}
    for _ in range(2):  # alternated: a slow spell of a shared machine falls on both sides
        for name in pair:
            backend = None
            try:
                backend = BACKENDS[name](model)
                seconds[name] = min(seconds[name], decode_step_seconds(backend))
            except Exception as e:  # noqa: BLE001 -- the other path failed to build here: today's path serves
                if name == base:
                    raise
                if backend is not None:
                    backend.close()
                why = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                print(f"--decode-path {name} failed on this machine ({why}); decoding with {base}. "
                      f"--decode-path {name} shows the whole error; --decode-path measure tries again.",
                      file=sys.stderr, flush=True)
                remember_choice(model, base, {"failed": name, "error": why[:500]})
                return base
            backend.close()
    want = other if seconds[base] >= margin * seconds[other] else base
    remember_choice(model, want, {f"{name}_step_ms": round(t * 1e3, 3) for name, t in seconds.items()})
    return want


@torch.inference_mode()
def decode_step_seconds(backend: Backend, steps: int = 3) -> float:
    """Best time of one-token decoding steps after a prompt of min(context / 2, 1024) tokens (the first step
    warms up: it compiles where the backend compiles)."""
    model = backend.model
    context = max(1, min(model.config.max_seq_len // 2, 1024, model.config.max_seq_len - steps - 1))
    capacity = backend.capacity(context + steps + 1)
    mask = torch.zeros(1, capacity, dtype=torch.bool, device=model.device)
    mask[:, : context + steps + 1] = True
    best = float("inf")
    with backend.threads():
        run = backend.start(mask, backend.new_cache(1, capacity))
        run.prefill(torch.full((1, context), 4, dtype=torch.long, device=model.device))
        for i in range(steps + 1):
            _sync(model.device)
            t0 = time.perf_counter()
            run.step([4])
            _sync(model.device)
            if i:
                best = min(best, time.perf_counter() - t0)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
