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
    run_dir = tmp_path_factory.mktemp("single") / "run"
    out = subprocess.run([sys.executable, "-m", "alaya.cli", "pretrain", "--config", TINY,
                          *tiny_run_overrides(run_dir, token_dir, steps=STEPS, **{"train.micro_batch_size": 4})],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_process_with_the_same_global_batch(mode, single, tmp_path, token_dir):
    run_dir = tmp_path / mode
    torchrun(tiny_run_overrides(run_dir, token_dir, steps=STEPS, **{"train.micro_batch_size": 2, "train.parallel": mode}))
    ref, got = losses(single), losses(run_dir)
    assert len(got) == STEPS
    assert max(abs(a - b) for a, b in zip(ref, got)) < 1e-4, (ref, got)
    # the final folder is one whole model, equal to the single-process one within float tolerance
    a, b = load_file(str(single / "final" / "model.safetensors")), load_file(str(run_dir / "final" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


@pytest.mark.slow
def test_fsdp_distributed_checkpoint_resumes_exactly(tmp_path, token_dir):
    extra = {"train.micro_batch_size": 2, "train.parallel": "fsdp", "checkpoint.every": 2}
    torchrun(tiny_run_overrides(tmp_path / "whole", token_dir, steps=STEPS, **extra))
    stopped = tiny_run_overrides(tmp_path / "cut", token_dir, steps=STEPS, **{**extra, "train.stop_after": 3})
    torchrun(stopped)
    assert not (tmp_path / "cut" / "final").exists()
    out = torchrun(tiny_run_overrides(tmp_path / "cut", token_dir, steps=STEPS, **extra) + ["--resume"])
    assert "resumed from" in out.stderr and "step-00000002" in out.stderr
    a = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
