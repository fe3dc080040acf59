"""torchrun with 2 processes on CPU (gloo): DDP and FSDP2 train like one process with the same global batch,
and a distributed checkpoint resumes exactly."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from alaya.train.plot import read_metrics
from conftest import REPO, tiny_run_overrides

TINY = str(REPO / "configs" / "pretrain" / "tiny.yaml")
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))
pytestmark = pytest.mark.skipif(TORCHRUN is None or not torch.distributed.is_available(),
                                reason="torchrun / torch.distributed not available")
STEPS = 6


def torchrun(args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([TORCHRUN, "--standalone", f"--nproc_per_node={nproc}", "-m", "alaya.cli", "pretrain",
                          "--config", TINY, *args], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def losses(run_dir):
    return [r["loss"] for r in read_metrics(run_dir)[0]]


@pytest.fixture(scope="module")
def single(tmp_path_factory, token_dir):
    """The reference: one process, the whole global batch of 8 rows in one micro-batch (no accumulation)."""
    from alaya.cli import main

    run_dir = tmp_path_factory.mktemp("single") / "run"
    assert main(["pretrain", "--config", TINY,
                 *tiny_run_overrides(run_dir, token_dir, steps=STEPS, **{"train.micro_batch_size": 8})]) == 0
    return run_dir


# two ranks × 2 micro-batches of 2 rows: the same global batch of 8, through gradient accumulation under DDP /
# FSDP2 (loop._grad_sync skips the all-reduce of the first micro-batch), as both 7B presets run
TWO_RANKS = {"train.micro_batch_size": 2, "train.grad_accum": 2}


@pytest.fixture(scope="module")
def fsdp_whole(tmp_path_factory, token_dir):
    run_dir = tmp_path_factory.mktemp("fsdp") / "run"
    torchrun(tiny_run_overrides(run_dir, token_dir, steps=STEPS, **TWO_RANKS, **{"train.parallel": "fsdp"}))
    return run_dir


def assert_matches_single(single, run_dir):
    ref, got = losses(single), losses(run_dir)
    assert len(ref) == len(got) == STEPS
    assert max(abs(a - b) for a, b in zip(ref, got)) < 1e-4, (ref, got)
    # the final folder is one whole model, equal to the single-process one within float tolerance
    a, b = load_file(str(single / "final" / "model.safetensors")), load_file(str(run_dir / "final" / "model.safetensors"))
    assert sorted(a) == sorted(b) and [k for k in a if not torch.allclose(a[k], b[k], atol=1e-4)] == []


@pytest.mark.slow
def test_ddp_with_grad_accumulation_matches_one_process_with_the_same_global_batch(single, tmp_path, token_dir):
    torchrun(tiny_run_overrides(tmp_path / "ddp", token_dir, steps=STEPS, **TWO_RANKS, **{"train.parallel": "ddp"}))
    assert_matches_single(single, tmp_path / "ddp")


@pytest.mark.slow
def test_fsdp_with_grad_accumulation_matches_one_process_with_the_same_global_batch(single, fsdp_whole):
    assert_matches_single(single, fsdp_whole)


@pytest.mark.slow
def test_fsdp_distributed_checkpoint_resumes_exactly(fsdp_whole, tmp_path, token_dir):
    extra = {**TWO_RANKS, "train.parallel": "fsdp"}  # checkpoint.every 2, as in the uninterrupted run
    torchrun(tiny_run_overrides(tmp_path / "cut", token_dir, steps=STEPS, **{**extra, "train.stop_after": 3}))
    assert not (tmp_path / "cut" / "final").exists()
    out = torchrun(tiny_run_overrides(tmp_path / "cut", token_dir, steps=STEPS, **extra) + ["--resume"])
    assert "resumed from" in out.stderr and "step-00000002" in out.stderr
    a = load_file(str(fsdp_whole / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert sorted(a) == sorted(b) and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert losses(tmp_path / "cut") == losses(fsdp_whole)
