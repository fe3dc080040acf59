"""One way to get a model ready for inference: folder (+ PEFT adapter) → device, dtype, optional int8 or compile
→ the decoding backend that runs it (:mod:`alaya.infer.backends`)."""
from __future__ import annotations

import sys

import torch

from alaya.infer.backends import Backend, TorchBackend, choose_backend
from alaya.infer.cpu_path import relayout_for_decoding
from alaya.infer.int8 import QUANTIZE_CHOICES, quantize_model
from alaya.model.flex import resolve_attention
from alaya.model.hf import load_model
from alaya.model.lora import merge_adapter
from alaya.tokenizer import AlayaTokenizer


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: bf16 weights where the device computes in bf16 natively (CUDA with bf16), else fp32."""
    if dtype == "auto":
        cuda_bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    return getattr(torch, dtype)


def load_for_inference(
    model_path: str,
    adapter_path: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
    compile: bool = False,
    quantize: str = "none",
    decode_path: str = "auto",
    attention: str = "auto",
) -> tuple[Backend, AlayaTokenizer]:
    """The decoding backend holding the model (``backend.model``), and the tokenizer.

    ``quantize="int8"``: weight-only int8 on CPU (:mod:`alaya.infer.int8`), after any adapter is merged.
    ``decode_path``: which backend decodes (:func:`alaya.infer.backends.choose_backend`); with ``compile``
    it is ``torch`` (compiled graphs keep torch's products). ``attention``: how forwards of several tokens
    attend (:func:`alaya.model.flex.resolve_attention`; auto: sdpa)."""
    device = device or ("cpu" if quantize == "int8" else default_device())
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    if quantize == "int8" and not device.startswith("cpu"):
        raise ValueError(f"--quantize int8 runs on CPU only, not on {device}; on a GPU use --dtype bfloat16 "
                         "(or --device cpu --quantize int8)")
    if quantize == "int8" and dtype not in ("auto", "float32"):
        raise ValueError(f"--quantize int8 keeps activations in float32; --dtype {dtype} does not go with it")
    torch_dtype = resolve_dtype(dtype, device)
    attention = resolve_attention(attention, device, training=False)
    # merge in fp32 on the target device, then cast: the adapter's small update is not lost to bf16 rounding
    model = load_model(model_path, device=device, dtype=torch.float32 if adapter_path else torch_dtype)
    if adapter_path:
        names = merge_adapter(model, adapter_path)
        print(f"adapter {adapter_path}: merged into {len(names)} layers", file=sys.stderr)
        model = model.to(torch_dtype)
    model.eval().requires_grad_(False)
    model.attention = attention
    if quantize == "int8":
        quantize_model(model)
    relayout_for_decoding(model)
    tokenizer = AlayaTokenizer.load(model_path)
    if compile:
        if decode_path not in ("auto", "torch"):
            raise ValueError(f"--compile decodes with torch's compiled graphs; --decode-path {decode_path} does "
                             "not go with it")
        model.compile(dynamic=True)
        return TorchBackend(model), tokenizer
    return choose_backend(model, decode_path), tokenizer
