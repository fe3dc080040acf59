"""One decoding step of the whole network as one compiled call, for CPU decoding of a few rows (fp32 weights, or
int8 weights with per-output scales, :mod:`alaya.infer.int8`; activations in fp32).

At batch 1 a decoding step multiplies one vector by every weight matrix: the work is reading the weights
from memory once, and the compiled product (:func:`few_rows_product`) does that at
the machine's read bandwidth. What is left is everything else the step does: about 25 small PyTorch
operations per block (layer norms, the attention over the KV cache, GELU, residual adds, views), each a
few microseconds of dispatch, a large share of a small model's step. Here the step runs in
one numba function: layer norm, the QKV product, the new key and value written into the same
:class:`~alaya.model.mpt.KVCache` tensors the PyTorch model uses (prefill and later steps may alternate
freely between the two paths), ALiBi attention over the valid keys, the output projection, the FFN with
exact GELU, the final norm and the tied head.

It computes what :meth:`AlayaForCausalLM.forward` computes for one new token per row with a cache and an
attention mask (tests compare logits and greedy output); the sums run in a different order, so results
agree to float rounding. The kernels decoding backend (:class:`alaya.infer.backends.KernelsBackend`) runs
its one-token steps here when :meth:`FusedDecodeStep.handles` the batch (CPU, fp32 activations, at most
``FEW_ROWS`` rows); anything else runs the model's forward.
"""
from __future__ import annotations

import math
import threading

import numba
import numpy as np
import torch

from alaya.model.mpt import AlayaForCausalLM, KVCache

_FM = {"reassoc", "contract"}  # vectorised sums; no assumptions about inf / NaN
FEW_ROWS = 16  # up to this many rows the compiled kernels; more, numpy's BLAS (measured crossover ~20)
# One compiled parallel launch at a time: numba's fallback threading layer (workqueue, when no OpenMP
# runtime is found) aborts the process on launches from two threads at once; two decoders in two threads
# (a server and a script) take turns per step instead. They would share the same cores anyway.
launch_lock = threading.Lock()
# Start numba's thread pool now (a documented call that starts it): a step loaded from numba's on-disk cache
# runs the parallel products from inside compiled code, a path that does not start the pool, and a
# parallel region without it crashes the process.
numba.get_num_threads()


@numba.njit(fastmath=_FM, cache=True, nogil=True, inline="always")
def _gelu(v):
    """Exact GELU, ``F.gelu(v, approximate="none")``."""
    return np.float32(0.5) * v * (np.float32(1.0) + np.float32(math.erf(v * np.float32(0.7071067811865476))))


@numba.njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _product(x, w, scale, out, gelu):
    """``out = x @ w.T`` for a few rows ``x`` [B, K] and a row-major weight ``w`` [N, K]; with ``gelu``,
    ``GELU(x @ w.T)``, applied as each output is made (free: the loop waits on memory, not on arithmetic).
    ``w`` is fp32, or int8 with one fp32 ``scale`` per output feature (``scale`` [N]; an empty array for fp32
    weights): the int8 values are widened in the loop and the sum is scaled once per output.

    The output features are split between the threads; each weight row is read from memory once and
    multiplied by every row of ``x`` while it is in the L1 cache, so at batch 1 the product runs at the
    machine's read bandwidth (OpenBLAS's sgemv reaches less of it, and reads the weights once per row of
    ``x`` for B > 1). ``reassoc`` lets the dot products use vector
    lanes: the sum order differs from BLAS's; the rounding differences are those of any BLAS.
    """
    n_rows, k = x.shape
    scaled = scale.shape[0] > 0
    in_fours = n_rows - n_rows % 4
    for i in numba.prange(w.shape[0]):
        wi = w[i]
        s = scale[i] if scaled else np.float32(1.0)
        # four rows of x at a time: one load of the weight feeds four sums
        for b in range(0, in_fours, 4):
            x0, x1, x2, x3 = x[b], x[b + 1], x[b + 2], x[b + 3]
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for j in range(k):
                v = np.float32(wi[j])
                a0 += v * x0[j]
                a1 += v * x1[j]
                a2 += v * x2[j]
                a3 += v * x3[j]
            a0, a1, a2, a3 = a0 * s, a1 * s, a2 * s, a3 * s
            if gelu:
                a0, a1, a2, a3 = _gelu(a0), _gelu(a1), _gelu(a2), _gelu(a3)
            out[b, i], out[b + 1, i], out[b + 2, i], out[b + 3, i] = a0, a1, a2, a3
        for b in range(in_fours, n_rows):
            xb = x[b]
            acc = np.float32(0.0)
            for j in range(k):
                acc += np.float32(wi[j]) * xb[j]
            acc *= s
            out[b, i] = _gelu(acc) if gelu else acc


NO_SCALE = np.empty(0, dtype=np.float32)


def few_rows_product(x: np.ndarray, w: np.ndarray, out: np.ndarray, scale: np.ndarray | None = None) -> None:
    """``out = x @ w.T`` (float32 ``x`` [B, K] with B up to ``FEW_ROWS``, ``w`` [N, K] row-major, fp32 or
    int8 with per-output ``scale`` [N])."""
    _product(x, w, NO_SCALE if scale is None else scale, out, False)


@numba.njit(fastmath=_FM, cache=True, nogil=True)
def _layer_norm(x, weight, eps, out):
    n_rows, d = x.shape
    for b in range(n_rows):
        mean = 0.0
        for j in range(d):
            mean += x[b, j]
        mean /= d
        var = 0.0
        for j in range(d):
            diff = x[b, j] - mean
            var += diff * diff
        inv = 1.0 / math.sqrt(var / d + eps)
        for j in range(d):
            out[b, j] = np.float32((x[b, j] - mean) * inv) * weight[j]


@numba.njit(parallel=True, fastmath=_FM, cache=True, nogil=True)
def _attend(qkv, keys, values, layer, pos, valid, slopes, out):
    """Write this step's keys / values at ``pos`` and attend over keys 0..pos with ALiBi and the mask."""
    n_rows = qkv.shape[0]
    n_heads, head_dim = keys.shape[2], keys.shape[4]
    d = n_heads * head_dim
    scale = np.float32(1.0 / math.sqrt(head_dim))
    for b in range(n_rows):
        for h in range(n_heads):
            for j in range(head_dim):
                keys[layer, b, h, pos, j] = qkv[b, d + h * head_dim + j]
                values[layer, b, h, pos, j] = qkv[b, 2 * d + h * head_dim + j]
    for bh in numba.prange(n_rows * n_heads):
        b, h = bh // n_heads, bh % n_heads
        q = qkv[b, h * head_dim:(h + 1) * head_dim]
        scores = np.empty(pos + 1, dtype=np.float32)
        best = -np.inf
        for s in range(pos + 1):
            if s == pos or valid[b, s]:  # a row always sees its own new token
                k = keys[layer, b, h, s]
                dot = np.float32(0.0)
                for j in range(head_dim):
                    dot += q[j] * k[j]
                sc = dot * scale + slopes[h] * np.float32(s - pos)
                scores[s] = sc
                if sc > best:
                    best = sc
            else:
                scores[s] = -np.inf
        total = np.float32(0.0)
        for s in range(pos + 1):
            e = np.float32(math.exp(scores[s] - best)) if scores[s] != -np.inf else np.float32(0.0)
            scores[s] = e
            total += e
        y = out[b, h * head_dim:(h + 1) * head_dim]
        y[:] = 0.0
        for s in range(pos + 1):
            p = scores[s] / total
            if p != 0.0:
                v = values[layer, b, h, s]
                for j in range(head_dim):
                    y[j] += p * v[j]


@numba.njit(fastmath=_FM, cache=True, nogil=True)
def _step(tokens, valid, pos, wte, wte_scale, norm_1, wqkv, out_proj, norm_2, up, down, scales, norm_f, keys,
          values, slopes, eps, logit_scale, logits):
    n_rows = tokens.shape[0]
    d = wte.shape[1]
    for b in range(n_rows):
        if tokens[b] < 0 or tokens[b] >= wte.shape[0]:
            return False  # nothing written: the caller raises
    x = np.empty((n_rows, d), dtype=np.float32)
    for b in range(n_rows):
        if wte_scale.shape[0] > 0:
            s = wte_scale[tokens[b]]
            for j in range(d):
                x[b, j] = np.float32(wte[tokens[b], j]) * s
        else:
            x[b] = wte[tokens[b]]
    s_qkv, s_out, s_up, s_down = scales
    h = np.empty_like(x)
    qkv = np.empty((n_rows, wqkv[0].shape[0]), dtype=np.float32)
    att = np.empty_like(x)
    proj = np.empty_like(x)
    ffn = np.empty((n_rows, up[0].shape[0]), dtype=np.float32)
    for layer in range(len(wqkv)):
        _layer_norm(x, norm_1[layer], eps, h)
        _product(h, wqkv[layer], s_qkv[layer], qkv, False)
        _attend(qkv, keys, values, layer, pos, valid, slopes, att)
        _product(att, out_proj[layer], s_out[layer], proj, False)
        x += proj
        _layer_norm(x, norm_2[layer], eps, h)
        _product(h, up[layer], s_up[layer], ffn, True)
        _product(ffn, down[layer], s_down[layer], proj, False)
        x += proj
    _layer_norm(x, norm_f, eps, h)
    _product(h, wte, wte_scale, logits, False)
    if logit_scale != 1.0:
        logits *= np.float32(logit_scale)
    return True


class FusedDecodeStep:
    """Logits [B, 1, V] for one new token per row, computed in one compiled call; calling it gives ``None``
    when the case is not one it handles (the caller then runs the model's forward)."""

    max_rows = FEW_ROWS

    def __init__(self, model: AlayaForCausalLM):
        self.model = model
        t = model.transformer
        # the modules, looked up once (a module replaced later needs a new install); the data pointers of
        # their tensors are checked at every step, so a cast, a move or a new layout is seen and never read stale
        self._modules = [t.wte, t.norm_f]
        for blk in t.blocks:
            self._modules += [blk.norm_1, blk.attn.Wqkv, blk.attn.out_proj, blk.norm_2, blk.ffn.up_proj,
                              blk.ffn.down_proj]
        self._arrays: tuple | None = None
        self._pointers: list[int] = []
        cfg = model.config
        self._slopes = model.slopes(torch.device("cpu")).numpy()
        self._eps = float(cfg.layer_norm_epsilon)
        self._logit_scale = float(cfg.logit_scale) if cfg.logit_scale is not None else 1.0

    def _tensors(self) -> list[torch.Tensor]:
        """Per module its matrix then its scales (int8 layers of alaya.infer.int8) or its fp32 weight."""
        out = []
        for m in self._modules:
            out += [m.qweight, m.scale] if hasattr(m, "qweight") else [m.weight]
        return out

    def _weights(self) -> tuple | None:
        tensors = self._tensors()
        pointers = [p.data_ptr() for p in tensors]
        if self._arrays is not None and pointers == self._pointers:
            return self._arrays
        if any(p.device.type != "cpu" or not p.is_contiguous() for p in tensors):
            return None
        block_matrices = [m for i, m in enumerate(self._modules[2:]) if i % 6 in (1, 2, 4, 5)]
        if len({hasattr(m, "qweight") for m in block_matrices}) > 1:
            return None  # some block matrices in int8 and others not: the compiled step takes one kind
        matrices, scales = [], []
        for m in self._modules:
            if hasattr(m, "qweight"):
                if m.qweight.dtype != torch.int8 or m.scale.dtype != torch.float32:
                    return None
                matrices.append(m.qweight.detach().numpy())
                scales.append(m.scale.detach().numpy())
            else:
                if m.weight.dtype != torch.float32:
                    return None
                matrices.append(m.weight.detach().numpy())
                scales.append(NO_SCALE)
        per_block = [tuple(matrices[2 + i::6]) for i in range(6)]
        block_scales = tuple(tuple(scales[2 + i::6]) for i in (1, 2, 4, 5))  # Wqkv, out_proj, up, down
        self._arrays = (matrices[0], scales[0], *per_block, block_scales, matrices[1])
        self._pointers = pointers
        return self._arrays

    def handles(self, batch_size: int, cache: KVCache) -> bool:
        """Whether :meth:`step` takes this batch and cache with the model's weights as they are now."""
        return (batch_size <= self.max_rows and cache.keys.device.type == "cpu"
                and cache.keys.dtype == cache.values.dtype == torch.float32
                and cache.keys.is_contiguous() and cache.values.is_contiguous()
                and not torch.is_autocast_enabled("cpu") and self._weights() is not None)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: KVCache):
        B = input_ids.shape[0]
        if input_ids.device.type != "cpu" or attention_mask.device.type != "cpu" or not self.handles(B, cache):
            return None
        return self.step(input_ids.numpy().reshape(B), attention_mask.numpy(), cache)

    def step(self, ids: np.ndarray, mask: np.ndarray, cache: KVCache) -> torch.Tensor:
        """Logits [B, 1, V] for token ids [B] and the mask [B, cache.length + 1] as numpy arrays; the cache
        advances. For callers that checked :meth:`handles` for this cache, and so for the weights as they
        are (the decoding loop does, once per run; the model's forward, at every call): numpy in and out, no
        PyTorch calls, because each costs microseconds (more with the caches cold from streaming the
        weights) and all of this runs once per token."""
        weights = self._arrays
        if weights is None:
            raise RuntimeError("FusedDecodeStep.step before handles(): the weights have not been looked at")
        B = ids.shape[0]
        pos = cache.length
        if pos + 1 > cache.capacity:
            raise ValueError(f"KV cache holds {cache.capacity} positions; {pos + 1} requested")
        if mask.shape != (B, pos + 1):
            raise ValueError(f"attention_mask must have shape {(B, pos + 1)}, got {tuple(mask.shape)}")
        wte, wte_scale, norm_1, wqkv, out_proj, norm_2, up, down, scales, norm_f = weights
        logits = np.empty((B, 1, wte.shape[0]), dtype=np.float32)
        ids = ids.astype(np.int64, copy=False)
        with launch_lock:
            ok = _step(ids, np.ascontiguousarray(mask, dtype=np.bool_), pos, wte, wte_scale, norm_1, wqkv,
                       out_proj, norm_2, up, down, scales, norm_f, cache.keys.numpy(), cache.values.numpy(),
                       self._slopes, self._eps, self._logit_scale, logits.reshape(B, -1))
        if not ok:  # the kernel checks the ids before it writes anything
            raise IndexError(f"token ids must be in [0, {wte.shape[0]}), got {ids.tolist()}")
        cache.length = pos + 1
        return torch.from_numpy(logits)

