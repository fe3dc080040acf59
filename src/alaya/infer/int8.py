"""Weight-only int8 for CPU inference (``--quantize int8``): every Linear of the blocks and the tied embedding /
output head store int8 weights with one fp32 scale per output channel (symmetric, scale = max |w| / 127);
activations and the KV cache stay in fp32.

Decoding at batch 1 reads every weight once per token, so a quarter of the bytes is up to four times the
speed where fp32 decoding is bound by memory bandwidth. Per output channel rather than per group of the
input dimension: the scale is applied once per output (no extra work in the inner loop, which is what keeps
the product at the bandwidth bound), and the held-out perplexity stays within 1 % of fp32 (tests). Per-group
scales put a multiply-add per group into that loop and slowed the compiled product several-fold, for an
accuracy gain that per-channel does not need here (figures: README, "8-bit inference").

Products of up to ``FEW_ROWS`` rows run in the compiled kernel of :mod:`alaya.infer.cpu_decode` (the
int8 weights are widened to fp32 inside the loop) or in PyTorch's ``_weight_int8pack_mm``; which of the two
is chosen the way the fp32 path is chosen (:func:`alaya.infer.backends.choose_backend`). Larger
products (prefill) widen the weight to fp32 and call the BLAS. Quantizing happens at load, from any model
folder the project reads (adapters are merged first).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alaya.infer.cpu_decode import FEW_ROWS, few_rows_product, launch_lock
from alaya.model.mpt import AlayaForCausalLM

QUANTIZE_CHOICES = ("none", "int8")


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 weight [N, K] and fp32 scales [N] with ``weight ~= q * scale[:, None]`` (round to nearest)."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()


def _int8_matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, kernels: bool) -> torch.Tensor:
    """``x @ (qweight * scale[:, None]).T`` for fp32 ``x`` [..., K]."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    if n <= FEW_ROWS and rows.device.type == "cpu":
        if kernels:
            out = np.empty((n, qweight.shape[0]), dtype=np.float32)
            with launch_lock:
                few_rows_product(np.ascontiguousarray(rows.detach().numpy()), qweight.numpy(), out, scale.numpy())
            y = torch.from_numpy(out)
        else:
            y = torch._weight_int8pack_mm(rows.contiguous(), qweight, scale)
    elif kernels and rows.device.type == "cpu" and rows.dtype == torch.float32 and not rows.requires_grad:
        # prefill on the compiled path: widen the weight, numpy's BLAS on every core (PyTorch is held to one
        # thread while the kernels decode)
        w = qweight.numpy().astype(np.float32)
        w *= scale.numpy()[:, None]
        y = torch.from_numpy(np.matmul(rows.detach().numpy(), w.T))
    else:  # prefill: many rows, compute-bound; widen the weight and use the BLAS
        y = F.linear(rows, qweight.to(rows.dtype)) * scale.to(rows.dtype)
    return y.view(*x.shape[:-1], qweight.shape[0])


class Int8Matrix(nn.Module):
    """An int8 matrix [N, K] with one fp32 scale per row (buffers ``qweight``, ``scale``) and its product
    ``x @ (qweight * scale[:, None]).T``. ``kernels`` chooses the compiled product for a few rows (set by
    ``alaya.infer.cpu_path``)."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.kernels = False

    def product(self, x: torch.Tensor) -> torch.Tensor:
        return _int8_matmul(x, self.qweight, self.scale, self.kernels)


class Int8Linear(Int8Matrix):
    """A bias-free ``nn.Linear`` with int8 weights and per-output-channel scales."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor):
        super().__init__(qweight, scale)
        self.out_features, self.in_features = qweight.shape

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        if linear.bias is not None:
            raise ValueError("int8 quantization covers bias-free Linear layers (the model has no biases)")
        return cls(*quantize_per_channel(linear.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


class Int8Embedding(Int8Matrix):
    """The tied embedding / output head in int8: rows are looked up and widened (``forward``), and the head's
    product (``project``) multiplies by the same int8 matrix, so the table is stored once."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor):
        super().__init__(qweight, scale)
        self.num_embeddings, self.embedding_dim = qweight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].float() * self.scale[ids].unsqueeze(-1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.product(x)


def is_quantized(model: AlayaForCausalLM) -> bool:
    return isinstance(model.transformer.wte, Int8Embedding)


@torch.no_grad()
def quantize_model(model: AlayaForCausalLM) -> AlayaForCausalLM:
    """Replace, in place, every Linear of the blocks by an :class:`Int8Linear` and the tied embedding by an
    :class:`Int8Embedding`. CPU fp32 models only: on a GPU there is no int8 path here, and running the model
    in fp32 instead would silently give the user something else than asked for."""
    wte = model.transformer.wte
    if is_quantized(model):
        return model
    if wte.weight.device.type != "cpu":
        raise ValueError(f"--quantize int8 runs on CPU only (the model is on {wte.weight.device}); on a GPU "
                         "use --dtype bfloat16, which halves the weights' memory and runs at the GPU's speed")
    if wte.weight.dtype != torch.float32:
        raise ValueError(f"--quantize int8 quantizes fp32 weights; the model is in {wte.weight.dtype} "
                         "(use --dtype float32 with --quantize int8)")
    for block in model.transformer.blocks:
        for parent in (block.attn, block.ffn):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Int8Linear.from_linear(child))
    model.transformer.wte = Int8Embedding(*quantize_per_channel(wte.weight))
    return model


def set_kernels(model: AlayaForCausalLM, enabled: bool) -> None:
    """Which product the int8 layers use for a few rows: the compiled kernel or PyTorch's int8 one."""
    for m in model.modules():
        if isinstance(m, Int8Matrix):
            m.kernels = enabled


def weight_bytes(model: AlayaForCausalLM) -> int:
    """Bytes of the weights decoding reads per token (parameters and int8 buffers; the scales included)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(b.numel() * b.element_size() for n, b in model.named_buffers() if n.endswith(("qweight", "scale")))
    return total
