"""Model FLOPs utilisation: the FLOPs a training step needs over what the device's matmuls can do.

MFU = tokens/s × FLOPs per token / peak FLOP/s, with FLOPs per token = 6N + 12·L·d·s (PaLM's count:
forward and backward of the weights plus attention). The peak is measured here, on this device and
precision, with large square matmuls (the best a training step could hope for), unless given.
"""
from __future__ import annotations

import time

import torch


def measure_matmul_peak(device: torch.device | str, precision: str = "fp32", size: int | None = None,
                        seconds: float = 0.5) -> float:
    """FLOP/s of the fastest of repeated ``size``×``size`` matmuls in the training precision."""
    device = torch.device(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    size = size or (8192 if device.type == "cuda" else 1024)
    # its own generator: the probe runs after a resume restores the RNG state, and a draw from the default
    # generator here would shift every later draw of the run (LoRA dropout) away from the uninterrupted run's
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b  # warm-up
    sync()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    return tokens_per_s * flops_per_token / peak_flops if peak_flops > 0 else 0.0
