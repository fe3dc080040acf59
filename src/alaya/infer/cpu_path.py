"""The pieces of the compiled CPU decoding path (:class:`alaya.infer.backends.KernelsBackend`), for fp32 and
int8 (:mod:`alaya.infer.int8`) weights, and the kept choice between it and PyTorch.

Decoding multiplies one row per sequence by every weight matrix: matrix-vector products bound by memory
bandwidth. PyTorch's CPU wheels call MKL for them, and on AMD processors MKL takes a generic code path,
slower there than numpy's OpenBLAS and than the compiled kernel (the figures are in docs/benchmarks.md).
On the compiled path, products of up to ``FEW_ROWS`` rows run in that kernel and larger ones (prefill) in
numpy's BLAS (:func:`kernel_linear`, used by :class:`KernelLinear` and :class:`KernelHead`). On other
machines PyTorch may be the faster one, so the choice is measured once per machine and model shape and
kept (:func:`read_choice`, :func:`remember_choice`).

The compiled path changes which code multiplies, not what is multiplied: same fp32 values, same shapes;
results agree to float rounding (tests compare logits and greedy output with transformers and with the
PyTorch path). While it decodes, PyTorch's own thread pool is kept to one thread (:func:`decode_threads`),
because two thread pools spinning on the same cores slow each other down several-fold.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Iterator

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alaya.fileio import write_json_atomic
from alaya.infer import cpu_decode
from alaya.infer.cpu_decode import FEW_ROWS, few_rows_product, launch_lock
from alaya.infer.int8 import Int8Matrix, is_quantized
from alaya.model.mpt import AlayaForCausalLM


def kernel_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` (no bias) for CPU fp32 tensors without autograd: the compiled kernel for up
    to :data:`FEW_ROWS` rows with a row-major weight, numpy's BLAS otherwise; anything else goes to torch."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return F.linear(x, weight)
    rows = x.reshape(-1, x.shape[-1]).detach().numpy()
    w = weight.detach().numpy()
    if rows.shape[0] <= FEW_ROWS and w.flags.c_contiguous:
        out = np.empty((rows.shape[0], w.shape[0]), dtype=np.float32)
        with launch_lock:
            few_rows_product(np.ascontiguousarray(rows), w, out)
    else:
        out = np.matmul(rows, w.T)
    return torch.from_numpy(out).view(*x.shape[:-1], weight.shape[0])


class KernelLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters and state-dict names) that multiplies with :func:`kernel_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = kernel_linear(x, self.weight)
        return out if self.bias is None else out + self.bias


class KernelHead(nn.Module):
    """The tied output head (:class:`alaya.model.mpt.TiedHead`) multiplying with :func:`kernel_linear`."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return kernel_linear(x, weight)


def kernels_cached() -> bool:
    """Whether numba has compiled the decoding kernels before (its cache index beside the module, or in
    NUMBA_CACHE_DIR)."""
    where = [Path(cpu_decode.__file__).parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        where.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    return any(next(w.rglob("cpu_decode.*.nbi"), None) is not None for w in where if w.is_dir())


def cpu_name() -> str:
    """The processor's model name (/proc/cpuinfo), part of the key of the kept path choice."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choice_file() -> Path:
    """Where the measured choices are kept: ``$ALAYA_CACHE_DIR`` or ``$XDG_CACHE_HOME/alaya`` (``~/.cache/alaya``)."""
    root = os.environ.get("ALAYA_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alaya"
    return Path(root) / "cpu_path.json"


def _choice_key(model: AlayaForCausalLM) -> str:
    """What the choice depends on: the processor (or GPU), the threads, the library versions, the weights'
    format and the shapes. A different model size or machine is measured again; the same one reuses the
    decision."""
    c = model.config
    device = model.device
    dtype = model.transformer.norm_f.weight.dtype
    kind = "int8" if is_quantized(model) else "fp32" if dtype == torch.float32 else str(dtype).replace("torch.", "")
    where = cpu_name() if device.type == "cpu" else f"{device.type} {torch.cuda.get_device_name(device)}"
    return (f"{where}|threads {torch.get_num_threads()}|torch {torch.__version__}|numba {numba.__version__}"
            f"|{kind}|d {c.d_model} h {c.n_heads} l {c.n_layers} v {c.vocab_size} ffn {c.expansion_ratio}")


def read_choice(model: AlayaForCausalLM) -> str | None:
    """The kept choice (a :data:`alaya.infer.backends.DECODE_PATHS` name) for this machine and model shape, or None."""
    return _read_choices().get(_choice_key(model), {}).get("path")


def _read_choices() -> dict:
    try:
        data = json.loads(choice_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def remember_choice(model: AlayaForCausalLM, path: str, seconds: dict) -> None:
    """Keep ``path`` as the choice for this machine and model shape, with the timings it was chosen on."""
    choices = _read_choices()
    choices[_choice_key(model)] = {"path": path, **seconds}
    try:
        write_json_atomic(choice_file(), choices)
    except OSError as e:  # a read-only home: measured again next time, nothing else changes
        print(f"could not keep the CPU path choice in {choice_file()}: {e}", file=sys.stderr)


def replace_modules(model: nn.Module, old: type, new: type) -> None:
    """Put a ``new`` module in the place of every module of exactly type ``old``, holding the same parameters
    (nothing is copied; the state dict is unchanged). How a decoding backend changes which code multiplies,
    as quantization swaps its layers in."""
    for name, module in list(model.named_modules()):
        if type(module) is not old:
            continue
        if isinstance(module, nn.Linear):
            fresh = new(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
            fresh.weight = module.weight
            fresh.bias = module.bias
        else:
            fresh = new()
        fresh.train(module.training)
        owner, _, child = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, child, fresh)


@torch.no_grad()
def store_row_major(model: nn.Module) -> None:
    """Every fp32 weight matrix (and int8 matrix) stored row-major (the kernel reads one output feature's
    weights as one contiguous run) in memory allocated by numpy, which asks the kernel for transparent huge
    pages for arrays of 4 MB and more (PyTorch's allocator does not by default): fewer TLB misses while
    streaming the weights. Same values, same shapes."""
    for p in model.parameters():
        if p.ndim == 2 and p.device.type == "cpu" and p.dtype == torch.float32:
            fresh = np.empty(tuple(p.shape), dtype=np.float32)
            fresh[...] = p.detach().numpy()
            p.data = torch.from_numpy(fresh)
    for m in model.modules():
        if isinstance(m, Int8Matrix) and m.qweight.device.type == "cpu":
            fresh8 = np.empty(tuple(m.qweight.shape), dtype=np.int8)
            fresh8[...] = m.qweight.numpy()
            m.qweight = torch.from_numpy(fresh8)


@torch.no_grad()
def relayout_for_decoding(model: AlayaForCausalLM) -> bool:
    """On CPU in fp32, store every weight matrix column-major (same values, same shapes).

    Decoding multiplies one row per sequence by each weight, a matrix-vector product bound by memory
    bandwidth. MKL's fp32 kernel for ``x @ W.T`` with row-major ``W`` reaches about half the bandwidth that
    it reaches with ``W.T`` contiguous (measured: docs/benchmarks.md). In bf16 the row-major kernel is the faster one, and on GPUs both
    layouts run the same, so nothing changes there. Returns whether the layout was changed.
    """
    act = model.transformer.norm_f.weight
    if act.device.type != "cpu" or act.dtype != torch.float32 or is_quantized(model):
        return False  # (int8 matrices are buffers, stored row-major, as both int8 products read them)
    for p in model.parameters():
        if p.ndim == 2:
            p.data = p.data.t().contiguous().t()
    return True


_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextlib.contextmanager
def decode_threads(enabled: bool = True) -> Iterator[None]:
    """One PyTorch thread inside the block (numba's kernels and numpy's BLAS keep their own threads).
    Nested or overlapping blocks (two decoders alive at once) share the setting; the last one out restores
    the old count."""
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
