"""Export to the engines people run models with at home: GGUF (llama.cpp, Ollama) and CTranslate2.

Each exporter reads any model folder the project loads (an adapter is merged first, in fp32) and checks that
the engine computes what this model computes (ALiBi with the slopes of ``alibi_bias_max`` 8, no logit
scale, ...), refusing with the reason where it would not.
"""
from __future__ import annotations

from pathlib import Path

import torch

from alaya.model.mpt import AlayaForCausalLM
from alaya.tokenizer import AlayaTokenizer


class ExportError(ValueError):
    """The model cannot be exported to that engine as it is (the message says why)."""


def load_merged(model_path: str | Path, adapter: str | None = None) -> tuple[AlayaForCausalLM, AlayaTokenizer]:
    """The model in fp32 on CPU with the adapter merged, and its tokenizer."""
    from alaya.model.hf import load_model
    from alaya.model.lora import merge_adapter

    model = load_model(model_path, device="cpu", dtype=torch.float32).eval().requires_grad_(False)
    if adapter:
        merge_adapter(model, adapter)
    tok = AlayaTokenizer.load(model_path)
    if tok.vocab_size != model.config.vocab_size:
        raise ExportError(f"{model_path}: the tokenizer has {tok.vocab_size} tokens, the model {model.config.vocab_size}")
    return model, tok


def check_standard_alibi(model: AlayaForCausalLM, engine: str) -> None:
    """The engines compute ALiBi slopes as 2^(-8 i / n) for a power-of-two head count n; MPT's interleaving
    for other counts and other ``alibi_bias_max`` values are not theirs."""
    c = model.config
    if c.alibi_bias_max != 8 or c.n_heads & (c.n_heads - 1):
        raise ExportError(f"{engine} computes ALiBi for alibi_bias_max 8 and a power-of-two head count; this model "
                          f"has alibi_bias_max {c.alibi_bias_max} and {c.n_heads} heads")
    if c.logit_scale not in (None, 1, 1.0):
        raise ExportError(f"{engine} has no logit scale; this model scales logits by {c.logit_scale}")


def token_strings(tok: AlayaTokenizer) -> list[str]:
    """The vocabulary as its byte-level token strings, in id order."""
    return [tok.tok.id_to_token(i) for i in range(tok.vocab_size)]
