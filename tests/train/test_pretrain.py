import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alaya.cli import main
from alaya.model.hf import load_model
from alaya.train.checkpoint import checkpoint_dirs
from alaya.train.plot import read_metrics
from conftest import REPO, tiny_run_overrides

TINY = str(REPO / "configs" / "pretrain" / "tiny.yaml")


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def run(args, **kw):
    return subprocess.run([sys.executable, "-m", "alaya.cli", "pretrain", "--config", TINY, *args],
                          capture_output=True, text=True, timeout=600, **kw)


def test_a_run_writes_config_metrics_checkpoints_and_a_final_folder_transformers_loads(tmp_path, token_dir):
    run_dir = tmp_path / "run"
    assert main(["pretrain", "--config", TINY, *tiny_run_overrides(run_dir, token_dir, steps=8)]) == 0
    cfg = __import__("yaml").safe_load((run_dir / "config.yaml").read_text())
    assert cfg["train"]["seq_len"] == 64 and cfg["model"]["d_model"] == 64  # the resolved config
    train, evals, resumes = read_metrics(run_dir)
    assert [r["step"] for r in train] == list(range(1, 9)) and not resumes
    assert {"loss", "lr", "tokens", "tokens_per_s", "mfu", "grad_norm"} <= set(train[0])
    assert train[-1]["tokens"] == 8 * 4 * 64 and train[-1]["loss"] < train[0]["loss"]
    assert [e["step"] for e in evals] == [0, 4, 8] and evals[-1]["eval_ppl"] < evals[0]["eval_ppl"]
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step-00000008", "step-00000006"]  # keep 2
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    ours = load_model(run_dir / "final")
    ids = torch.randint(4, 512, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids)[0], hf(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert main(["plot", str(run_dir)]) == 0 and (run_dir / "loss.png").stat().st_size > 1000
    # a second run in the same folder without --resume is refused: nothing is overwritten
    assert main(["pretrain", "--config", TINY, *tiny_run_overrides(run_dir, token_dir, steps=8)]) == 2


def test_sigkill_then_resume_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, token_dir):
    steps = 14
    whole = run(tiny_run_overrides(tmp_path / "whole", token_dir, steps=steps, **{"checkpoint.every": 3}))
    assert whole.returncode == 0, whole.stderr
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "alaya.cli", "pretrain", "--config", TINY,
                             *tiny_run_overrides(killed_dir, token_dir, steps=steps, **{"checkpoint.every": 3})],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill somewhere after the second checkpoint, between checkpoints
        if metrics.exists() and sum(1 for l in metrics.read_text().splitlines() if '"loss"' in l) >= 7:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "final").exists()
    resumed = run(tiny_run_overrides(killed_dir, token_dir, steps=steps, **{"checkpoint.every": 3}) + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    a, b = weights(tmp_path / "whole" / "final"), weights(killed_dir / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    train, _, resumes = read_metrics(killed_dir)
    assert [r["step"] for r in train] == list(range(1, steps + 1))  # steps after the checkpoint appear once
    assert len(resumes) == 1 and resumes[0]["step"] % 3 == 0
    whole_losses = [r["loss"] for r in read_metrics(tmp_path / "whole")[0]]
    assert [r["loss"] for r in train] == whole_losses


def test_resume_skips_a_damaged_newest_checkpoint_with_a_warning(tmp_path, token_dir):
    run_dir = tmp_path / "run"
    args = tiny_run_overrides(run_dir, token_dir, steps=6, **{"checkpoint.keep": 3, "train.stop_after": 4})
    assert run(args).returncode == 0
    newest = checkpoint_dirs(run_dir)[0]
    assert newest.name == "step-00000004"
    for f in newest.glob("*.distcp"):
        f.write_bytes(b"garbage")
    out = run(args[:-1] + ["train.stop_after=null", "--resume"])
    assert out.returncode == 0, out.stderr
    assert "skipping checkpoint" in out.stderr and "step-00000004" in out.stderr
    assert "resumed from" in out.stderr and "step-00000002" in out.stderr
    assert (run_dir / "final" / "model.safetensors").exists()


def test_resume_with_a_changed_config_is_refused(tmp_path, token_dir):
    run_dir = tmp_path / "run"
    args = tiny_run_overrides(run_dir, token_dir, steps=6, **{"train.stop_after": 2})
    assert run(args).returncode == 0
    out = run(args + ["optimizer.lr=0.5", "--resume"])
    assert out.returncode == 2 and "optimizer.lr" in out.stderr


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, token_dir):
    """train.compile=true (torch.compile of the model) trains like eager: same losses within float tolerance."""
    eager = run(tiny_run_overrides(tmp_path / "eager", token_dir, steps=3))
    compiled = run(tiny_run_overrides(tmp_path / "compiled", token_dir, steps=3, **{"train.compile": "true"}))
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr[-2000:]
    a = [r["loss"] for r in read_metrics(tmp_path / "eager")[0]]
    b = [r["loss"] for r in read_metrics(tmp_path / "compiled")[0]]
    assert len(a) == len(b) == 3 and max(abs(x - y) for x, y in zip(a, b)) < 1e-3
