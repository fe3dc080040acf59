"""Exact resume of `alaya sft` under the shipped configs' defaults (LoRA dropout 0.05, the matmul peak
measured at start, the published data recipe), for LoRA and full fine-tuning. Only what sizes the run is
overridden: the base model, steps, sequence length and checkpoint interval.

A run killed with SIGKILL between checkpoints, then resumed, must end bitwise equal to the same run left
alone: the same adapter (or model) tensors and the same loss at every step.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from alaya.cli import main
from alaya.train.plot import read_metrics
from conftest import REPO, SHARED_DATA

LORA = str(REPO / "configs" / "sft" / "tiny-lora.yaml")
FULL = str(REPO / "configs" / "sft" / "tiny-full.yaml")
WEIGHTS = {LORA: "adapter_model.safetensors", FULL: "model.safetensors"}
STEPS = 12

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "lf_alpaca_en_demo").is_dir(),
                                reason=f"the shipped SFT recipe reads ../shared/data, not present at {SHARED_DATA}")


def sized(run_dir, base_dir, *extra):
    """The overrides that size the run, and nothing else (the issue's reproduction)."""
    return [f"run_dir={run_dir}", f"model.path={base_dir}", "train.seq_len=128", f"schedule.max_steps={STEPS}",
            "schedule.warmup_steps=2", "checkpoint.every=3", "seed=5", *extra]


def kill_after(cmd, metrics, n_steps, cwd):
    """Start ``cmd`` and SIGKILL it once ``metrics`` holds ``n_steps`` step lines."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and sum(1 for l in metrics.read_text().splitlines() if '"loss"' in l) >= n_steps:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("config", [LORA, FULL], ids=["lora", "full"])
def test_sigkill_then_resume_under_the_defaults_ends_bitwise_equal(config, tmp_path, base_dir, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the recipe's paths are relative to the repository root, as README runs it
    whole = tmp_path / "whole"
    assert main(["sft", "--config", config, *sized(whole, base_dir)]) == 0
    cut = tmp_path / "cut"
    kill_after([sys.executable, "-m", "alaya.cli", "sft", "--config", config, *sized(cut, base_dir)],
               cut / "metrics.jsonl", 7, REPO)
    assert not (cut / "final").exists()
    capsys.readouterr()
    assert main(["sft", "--config", config, *sized(cut, base_dir), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().err
    a, b = load_file(str(whole / "final" / WEIGHTS[config])), load_file(str(cut / "final" / WEIGHTS[config]))
    assert sorted(a) == sorted(b) and len(a) > 0
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    train_whole, train_cut = read_metrics(whole)[0], read_metrics(cut)[0]
    assert [r["step"] for r in train_cut] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in train_cut] == [r["loss"] for r in train_whole]
    assert [r["supervised_tokens"] for r in train_cut] == [r["supervised_tokens"] for r in train_whole]
