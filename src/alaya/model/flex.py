"""FlexAttention for the Alaya network (``train.attention: flex``; ``--attention flex`` when decoding): attention
without a dense [B, H, T, S] bias.

- ALiBi is a ``score_mod``: ``score + slope[h] * (kv - q)``, in the kernel's fp32, the relative form of
  alaya.model.attention.attention_bias.
- Causality, packed segments and key padding are a ``mask_mod``. Its block mask is built once per forward
  and shared by every layer; tiles that are wholly masked (across segments, above the diagonal, padding)
  are skipped, which is what packed rows gain.
- A query that may see no key (a padding position) sees itself, as in attention_bias: no row is empty.

The kernel is ``torch.compile(flex_attention)``: fused on CUDA (forward and backward) and on the CPU (forward
only: torch has no FlexAttention backward on the CPU, so CPU training keeps the SDPA paths). A new batch's
block mask is a new closure over the same code, so it does not recompile; each (B, T) shape compiles once.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

ATTENTIONS = ("auto", "sdpa", "flex")


def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_attention(choice: str, device: torch.device | str, training: bool) -> str:
    """``auto | sdpa | flex`` -> ``sdpa`` or ``flex``. ``auto``: flex for training on CUDA, SDPA elsewhere
    (on the CPU, and for decoding, whose single-token steps use SDPA either way). A choice that cannot run
    is a ValueError saying why."""
    if choice not in ATTENTIONS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {choice!r}")
    device = torch.device(device)
    if choice == "auto":
        return "flex" if training and device.type == "cuda" and flex_available() else "sdpa"
    if choice == "flex":
        if not flex_available():
            raise ValueError(f"attention flex needs torch.nn.attention.flex_attention (torch >= 2.5); "
                             f"this torch is {torch.__version__}")
        if training and device.type == "cpu":
            raise ValueError("attention flex cannot train on the CPU: torch has no FlexAttention backward there; "
                             "use sdpa (or auto) on the CPU")
    return choice


@functools.lru_cache(maxsize=None)
def _kernel():
    from torch.nn.attention.flex_attention import flex_attention

    # every bucketed (B, T) shape compiles once; dynamo's default limit of 8 would fall back to the unfused
    # (dense) implementation after 8 shapes
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(flex_attention, dynamic=False)


@dataclass
class FlexLayout:
    """One forward's attention rules for every layer: the block mask and the ALiBi score_mod."""

    block_mask: object  # torch.nn.attention.flex_attention.BlockMask
    score_mod: object

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """[B, H, T, d] queries over [B, H, S, d] keys and values -> [B, H, T, d]."""
        if torch.compiler.is_compiling():  # inside a compiled model or block: traced into its graph
            from torch.nn.attention.flex_attention import flex_attention

            return flex_attention(q, k, v, score_mod=self.score_mod, block_mask=self.block_mask)
        return _kernel()(q, k, v, score_mod=self.score_mod, block_mask=self.block_mask)


def flex_layout(slopes: torch.Tensor, attention_mask: torch.Tensor | None, segment_ids: torch.Tensor | None,
                past: int, T: int) -> FlexLayout:
    """The rules of T queries at positions past..past+T-1 over S = past + T keys: causal, inside the
    query's segment (``segment_ids`` [B, T], no cache), over valid keys (``attention_mask`` [B, S])."""
    from torch.nn.attention.flex_attention import create_block_mask

    S = past + T
    if segment_ids is not None and (past or segment_ids.shape[1] != T):
        raise ValueError("segment_ids are for training without a cache: one id per query and key")
    valid = attention_mask.bool() if attention_mask is not None else None
    seg = segment_ids

    def mask_mod(b, h, q, kv):
        at = q + past
        ok = kv <= at
        if seg is not None:
            ok = ok & (seg[b, q] == seg[b, kv])
        if valid is not None:
            ok = (ok & valid[b, kv]) | (kv == at)
        return ok

    def score_mod(score, b, h, q, kv):
        return score + slopes[h] * (kv - (q + past))

    batch = None
    if valid is not None:
        batch = valid.shape[0]
    elif seg is not None:
        batch = seg.shape[0]
    block_mask = create_block_mask(mask_mod, batch, None, T, S, device=slopes.device)
    return FlexLayout(block_mask, score_mod)
