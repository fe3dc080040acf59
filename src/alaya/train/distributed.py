"""Processes launched by torchrun: process group, device, and the model wrapped for DDP or FSDP2.

One process (plain ``alaya pretrain``) needs none of this: :func:`init` returns world size 1. Under
``torchrun --nproc_per_node N alaya pretrain ...`` each process joins the group (NCCL on GPUs, gloo on
CPU), takes its device (``cuda:LOCAL_RANK`` or the CPU), and the model is wrapped: DDP (replicated, the
gradients averaged) or FSDP2 ``fully_shard`` per block and at the root (parameters, gradients and optimizer
state sharded). The training loop is the same for all.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: str | None = None) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda" or want.startswith("cuda"):
        dev = torch.device("cuda", local_rank if world > 1 or want == "cuda" else torch.device(want).index or 0)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(want)
    launched = "MASTER_ADDR" in os.environ and "RANK" in os.environ  # by torchrun, even with one process
    if (world > 1 or launched) and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev)


def wrap(model: torch.nn.Module, mode: str, state: Dist, precision: str = "fp32") -> torch.nn.Module:
    """``mode``: none, ddp, fsdp, or auto (ddp when there are several processes). ``precision`` bf16 gives
    FSDP2 a mixed-precision policy (bf16 parameters, fp32 gradient reduction); DDP keeps fp32 parameters and
    the training step's autocast computes in bf16."""
    if mode == "auto":
        mode = "ddp" if state.world > 1 else "none"
    if mode == "none":
        if state.world > 1:
            raise ValueError("train.parallel=none with several processes would train unrelated copies; use ddp or fsdp")
        return model
    if not dist.is_initialized():
        raise ValueError(f"train.parallel={mode} needs processes started by torchrun (WORLD_SIZE is {state.world})")
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[state.device.index] if state.device.type == "cuda" else None)
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16: parameters gathered and computed in bf16 (half the all-gather traffic and memory), gradients
        # reduced in fp32, the sharded master weights and the optimizer state stay fp32 (as torchtitan does)
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" \
            else MixedPrecisionPolicy()
        for block in model.transformer.blocks:
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    raise ValueError(f"unknown train.parallel {mode!r}")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def all_sum(value: float, state: Dist) -> float:
    if state.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=state.device if state.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item())


def current_rank() -> int:
    """This process's rank in the default group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def barrier(state: Dist | None = None) -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if dist.is_available() and dist.is_initialized() and (state is None or state.world > 1):
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
