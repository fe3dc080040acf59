"""KV-cache decoding for batches of prompts of different lengths (left padding).

One prefill over the padded prompts, then one token per step for every unfinished row. Greedy when
``temperature == 0``; otherwise sampling with temperature, top-k and top-p. Banned token ids (the seed's
``bad_words_ids=[[3]]``) never come out; a row stops at ``eos_token_id`` or after ``max_new_tokens``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from alaya.model.mpt import AlayaForCausalLM


@dataclass
class GenerationConfig:
    max_new_tokens: int = 1000
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 0
    repetition_penalty: float = 1.0
    eos_token_id: int = 2
    pad_token_id: int = 2
    banned_token_ids: list[int] = field(default_factory=lambda: [3])
    seed: int | None = None


def _filter_logits(logits: torch.Tensor, cfg: GenerationConfig) -> torch.Tensor:
    logits = logits / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < cfg.top_p < 1:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop = (probs.cumsum(-1) - probs) > cfg.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    return logits


def _apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    # transformers' rule: divide positive logits, multiply negative ones, for every token already present
    scores = torch.gather(logits, 1, seen)
    scores = torch.where(scores > 0, scores / penalty, scores * penalty)
    return logits.scatter(1, seen, scores)


@torch.inference_mode()
def generate(
    model: AlayaForCausalLM,
    prompts: Sequence[Sequence[int]],
    cfg: GenerationConfig,
) -> list[list[int]]:
    """New token ids for each prompt (eos excluded)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = model.device
    B = len(prompts)
    L = max(len(p) for p in prompts)
    capacity = L + cfg.max_new_tokens
    if capacity > model.config.max_seq_len:
        raise ValueError(
            f"prompt ({L} tokens) + max_new_tokens ({cfg.max_new_tokens}) exceeds the model's context "
            f"({model.config.max_seq_len}); truncate the prompt or ask for fewer tokens"
        )
    ids = torch.full((B, L), cfg.pad_token_id, dtype=torch.long)
    mask = torch.zeros((B, capacity), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, L - len(p):L] = True
    ids, mask = ids.to(device), mask.to(device)
    generator = None
    if cfg.temperature > 0:
        generator = torch.Generator(device=device)
        generator.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    cache = model.new_cache(B, capacity)
    out = [[] for _ in range(B)]
    alive = torch.ones(B, dtype=torch.bool, device=device)
    seen = ids
    logits, _ = model(ids, attention_mask=mask[:, :L], cache=cache, last_token_only=True)
    for step in range(cfg.max_new_tokens):
        next_logits = logits[:, -1].float()
        if cfg.repetition_penalty != 1.0:
            next_logits = _apply_repetition_penalty(next_logits, seen, cfg.repetition_penalty)
        if cfg.banned_token_ids:
            next_logits[:, cfg.banned_token_ids] = float("-inf")
        if cfg.temperature > 0:
            probs = _filter_logits(next_logits, cfg).softmax(-1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            tok = next_logits.argmax(-1)
        tok = torch.where(alive, tok, torch.full_like(tok, cfg.pad_token_id))
        for i in torch.nonzero(alive).flatten().tolist():
            t = int(tok[i])
            if t == cfg.eos_token_id:
                alive[i] = False
            else:
                out[i].append(t)
        if not bool(alive.any()) or step == cfg.max_new_tokens - 1:
            break
        pos = L + step
        mask[:, pos] = alive  # a finished row's new positions are padding
        seen = torch.cat([seen, tok[:, None]], dim=1)
        logits, _ = model(tok[:, None], attention_mask=mask[:, : pos + 1], cache=cache)
    return out
