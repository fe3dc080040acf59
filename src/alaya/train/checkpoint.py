"""Training checkpoints: model, optimizer, sampler, RNG, step and tokens; atomic; the last K kept.

One format for one process and many: ``torch.distributed.checkpoint`` (DCP) writes the model and
optimizer state (sharded under FSDP2, whole under DDP or one process) as safetensors-like binary files
plus ``.metadata``, no pickle of code. Beside it, ``trainer_state.json`` (step, tokens, sampler state,
config digest) and ``rng-rank{r}.json`` (each rank's torch RNG states).

A checkpoint is written to ``checkpoints/.tmp-step-{N}`` and renamed to ``checkpoints/step-{N}`` once
complete (``trainer_state.json`` is written last), so a folder named ``step-*`` is complete unless the
disk lies; :func:`load_latest` still checks and falls back to an older one with a warning when the newest
is damaged.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from alaya.train.distributed import barrier, current_rank

TRAINER_STATE = "trainer_state.json"


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete-looking checkpoints, newest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def _options(options: dict | None) -> StateDictOptions | None:
    # ignore_frozen_params: a LoRA run's checkpoints hold the adapter and its optimizer state, not the base
    return StateDictOptions(**options, strict=False) if options else None


def save_checkpoint(run_dir: str | Path, model, optimizer, trainer_state: dict, keep: int,
                    options: dict | None = None) -> Path:
    """Every rank calls this; rank 0 renames the finished folder and prunes old ones."""
    root = Path(run_dir) / "checkpoints"
    step = trainer_state["step"]
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if current_rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    msd, osd = get_state_dict(model, optimizer, options=_options(options))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
    with open(tmp / f"rng-rank{current_rank()}.json", "w") as f:
        json.dump(_rng_state(), f)
        f.flush()
        os.fsync(f.fileno())
    barrier()
    if current_rank() == 0:
        with open(tmp / TRAINER_STATE, "w", encoding="utf-8") as f:
            json.dump(trainer_state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # the same step saved again (a resumed run): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in checkpoint_dirs(run_dir)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path, model, optimizer, options: dict | None = None) -> dict:
    """Restore model, optimizer and this rank's RNG from one checkpoint; return its trainer state."""
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        raise ValueError(f"{path}: no {TRAINER_STATE} (an incomplete checkpoint)")
    trainer_state = json.loads(state_file.read_text(encoding="utf-8"))
    if not (path / ".metadata").is_file():
        raise ValueError(f"{path}: no .metadata (an incomplete checkpoint)")
    msd, osd = get_state_dict(model, optimizer, options=_options(options))
    state = {"model": msd, "optim": osd}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")
        dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_options(options))
    rng = path / f"rng-rank{current_rank()}.json"
    if rng.is_file():
        _set_rng_state(json.loads(rng.read_text()))
    return trainer_state


def load_latest(run_dir: str | Path, model, optimizer, options: dict | None = None) -> tuple[dict, Path] | None:
    """The newest checkpoint that loads; damaged ones are skipped with a warning. None when there is none.

    Under torchrun every rank tries the same folders in the same order and all must succeed, so the ranks
    never resume from different steps.
    """
    for path in checkpoint_dirs(run_dir):
        ok, error = True, ""
        try:
            state = load_checkpoint(path, model, optimizer, options)
        # a damaged checkpoint fails in many ways (missing file, bad bytes, shapes); DCP's own
        # CheckpointException derives from BaseException, not Exception
        except (Exception, CheckpointException) as e:
            first = (str(e).strip().splitlines() or [""])[0]
            ok, error = False, f"{type(e).__name__}: {first[:300]}"
        if dist.is_available() and dist.is_initialized():
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([1 if ok else 0], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = bool(flag.item())
        if ok:
            return state, path
        if current_rank() == 0:
            print(f"warning: skipping checkpoint {path}: {error or 'failed on another rank'}", file=sys.stderr)
    return None
