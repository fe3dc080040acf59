"""Model configuration: one dataclass with named presets, and parameter / FLOP counts.

Field names follow transformers' ``MptConfig`` so a config.json, a YAML run config and a
``model.d_model=512`` override all speak the same language.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from alaya.recipe import ALAYA_VOCAB_SIZE

# The tokenizer contract (docs/design.md, "Contracts"): <unk>=0, <s>=1, </s>=2 (eos and pad), 3 reserved/banned.
UNK_ID, BOS_ID, EOS_ID, RESERVED_ID = 0, 1, 2, 3


@dataclass
class ModelConfig:
    """An MPT decoder: ALiBi, no biases, tied embeddings, exact-GELU FFN."""

    d_model: int = 4096
    n_heads: int = 32
    n_layers: int = 32
    expansion_ratio: int = 4
    max_seq_len: int = 2048
    vocab_size: int = ALAYA_VOCAB_SIZE
    alibi_bias_max: int = 8
    layer_norm_epsilon: float = 1e-5
    logit_scale: float | None = None
    bos_token_id: int = BOS_ID
    eos_token_id: int = EOS_ID
    pad_token_id: int = EOS_ID
    # Initialisation (llm-foundry's kaiming_normal_ with fan_in; residual projections / sqrt(2 n_layers)).
    init_nonlinearity: str = "relu"
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for f in ("d_model", "n_heads", "n_layers", "expansion_ratio", "max_seq_len", "vocab_size"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"model config field '{f}' must be a positive integer, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model config: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        for f in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(self, f)
            if not 0 <= v < self.vocab_size:
                raise ValueError(f"model config field '{f}'={v} is outside the vocabulary (size {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        return self.expansion_ratio * self.d_model

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Exact count of the network's parameters (tied head counted once)."""
        d = self.d_model
        per_block = 3 * d * d + d * d + 2 * d * self.ffn_dim + 2 * d  # Wqkv, out_proj, up, down, 2 norms
        total = self.n_layers * per_block + d  # + norm_f
        if not exclude_embeddings:
            total += self.vocab_size * d
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), the PaLM convention: 6 N + 12 L d s."""
        s = seq_len or self.max_seq_len
        matmul_params = self.num_parameters(exclude_embeddings=True) + self.vocab_size * self.d_model
        attn = 12 * self.n_layers * s * self.d_model  # QK^T and AV, forward + backward (PaLM appendix B)
        return 6 * matmul_params + attn

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, ModelConfig] = {
    # The published model: 6.69 B parameters.
    "alaya-7b": ModelConfig(name="alaya-7b"),
    # CPU-sized models of the same architecture. Small vocabularies keep the tiny ones tiny; the tokenizer
    # trained for them (quickstart) has exactly that many tokens. alaya-50m keeps the full 60160 vocabulary.
    "alaya-tiny": ModelConfig(
        name="alaya-tiny", d_model=128, n_heads=4, n_layers=2, max_seq_len=256, vocab_size=4096
    ),
    "alaya-10m": ModelConfig(
        name="alaya-10m", d_model=256, n_heads=8, n_layers=10, max_seq_len=512, vocab_size=8192
    ),
    "alaya-50m": ModelConfig(
        name="alaya-50m", d_model=512, n_heads=8, n_layers=8, max_seq_len=2048, vocab_size=ALAYA_VOCAB_SIZE
    ),
}


class PresetError(KeyError, ValueError):
    """An unknown preset or field; a ValueError for the command line, a KeyError for lookups."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A preset by name, with MptConfig-named field overrides (``d_model=512``)."""
    if name not in PRESETS:
        raise PresetError(f"unknown model preset '{name}'; known presets: {', '.join(sorted(PRESETS))}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise PresetError(f"unknown model config field(s) {sorted(unknown)} for preset '{name}'")
    return PRESETS[name].replace(**overrides)
