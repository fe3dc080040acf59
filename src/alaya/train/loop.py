"""The training step and held-out evaluation, used by ``alaya pretrain`` (train/pretrain.py) for every run."""
from __future__ import annotations

import contextlib

import torch

from alaya.train.optim import set_lr


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def _grad_sync(model: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce of a DDP / FSDP2 model on all but the last accumulated micro-batch."""
    if enabled:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def restore():
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        return restore()
    return contextlib.nullcontext()


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[torch.Tensor],
    lr: float,
    grad_clip: float,
    precision: str,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """One optimiser step over gradient-accumulated micro-batches; returns (mean loss, grad norm).

    ``model`` may be wrapped (DDP, FSDP2); then pass ``device``.
    """
    device = device or model.device
    model.train()
    set_lr(optimizer, lr)
    total = 0.0
    for i, batch in enumerate(micro_batches):
        batch = batch.to(device, non_blocking=True)
        with _grad_sync(model, i == len(micro_batches) - 1):
            with autocast(device, precision):
                _, loss = model(batch, labels=batch)
            (loss / len(micro_batches)).backward()
        total += float(loss.detach())
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / len(micro_batches), float(norm)


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, batches: torch.Tensor, precision: str, batch_size: int = 8,
                  device: torch.device | None = None) -> float:
    """Mean next-token loss over held-out windows."""
    device = device or model.device
    model.eval()
    losses = []
    for i in range(0, len(batches), batch_size):
        b = batches[i : i + batch_size].to(device)
        with autocast(device, precision):
            _, loss = model(b, labels=b)
        losses.append(float(loss) * len(b))
    return sum(losses) / len(batches)
