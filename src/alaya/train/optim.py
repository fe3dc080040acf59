"""The published optimiser and schedule (docs/design.md, "The recipe").

Decoupled AdamW: before each Adam step, ``p <- p * (1 - (lr_t / lr_max) * wd)``: the decay follows the
schedule but is not multiplied by the learning rate itself (llm-foundry's DecoupledAdamW). The Adam
update is torch's own (foreach / fused kernels), run with weight_decay 0.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch


class DecoupledAdamW(torch.optim.Adam):
    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict],
        lr: float = 1.2e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 1e-5,
        **kwargs,
    ):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=0.0, **kwargs)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = weight_decay
            group.setdefault("lr_max", lr)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            wd = group["decoupled_weight_decay"]
            if wd == 0:
                continue
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                torch._foreach_mul_(params, 1.0 - (group["lr"] / group["lr_max"]) * wd)
        return super().step(closure)


def cosine_lr(step: int, lr_max: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warmup from 0 to lr_max, then cosine to min_lr: lr_max (a + (1 - a) (1 + cos(pi tau)) / 2)."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr_max * step / warmup_steps
    alpha = min_lr / lr_max
    tau = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    tau = min(max(tau, 0.0), 1.0)
    return lr_max * (alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * tau)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
