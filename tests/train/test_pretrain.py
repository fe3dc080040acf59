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


def test_sigkill_then_resume_under_the_defaults_ends_bitwise_equal_to_an_uninterrupted_run(tmp_path, token_dir, capsys):
    """The run as users run it (the matmul peak measured at start, not given): killed between checkpoints,
    resumed, bitwise equal to the run left alone."""
    steps = 14
    sized = {"checkpoint.every": 3, "train.peak_tflops": None}
    assert main(["pretrain", "--config", TINY, *tiny_run_overrides(tmp_path / "whole", token_dir, steps, **sized)]) == 0
    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "alaya.cli", "pretrain", "--config", TINY,
                             *tiny_run_overrides(killed_dir, token_dir, steps, **sized)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill after the second checkpoint, between checkpoints
        if metrics.exists() and sum(1 for l in metrics.read_text().splitlines() if '"loss"' in l) >= 7:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "final").exists()
    capsys.readouterr()
    assert main(["pretrain", "--config", TINY, *tiny_run_overrides(killed_dir, token_dir, steps, **sized), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().err
    a, b = weights(tmp_path / "whole" / "final"), weights(killed_dir / "final")
    assert sorted(a) == sorted(b) and [k for k in a if not torch.equal(a[k], b[k])] == []
    train, _, resumes = read_metrics(killed_dir)
    assert [r["step"] for r in train] == list(range(1, steps + 1))  # steps after the checkpoint appear once
    assert len(resumes) == 1 and resumes[0]["step"] == 6
    whole_losses = [r["loss"] for r in read_metrics(tmp_path / "whole")[0]]
    assert [r["loss"] for r in train] == whole_losses


def test_resume_skips_a_damaged_newest_checkpoint_with_a_warning(tmp_path, token_dir, capsys):
    run_dir = tmp_path / "run"
    args = tiny_run_overrides(run_dir, token_dir, steps=6, **{"checkpoint.keep": 3, "train.stop_after": 4})
    assert main(["pretrain", "--config", TINY, *args]) == 0
    newest = checkpoint_dirs(run_dir)[0]
    assert newest.name == "step-00000004"
    for f in newest.glob("*.distcp"):
        f.write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["pretrain", "--config", TINY, *args[:-1], "train.stop_after=null", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "skipping checkpoint" in err and "step-00000004" in err
    assert "resumed from" in err and "step-00000002" in err
    assert (run_dir / "final" / "model.safetensors").exists()


def test_resume_with_a_changed_config_is_refused(tmp_path, token_dir, capsys):
    run_dir = tmp_path / "run"
    args = tiny_run_overrides(run_dir, token_dir, steps=6, **{"train.stop_after": 2})
    assert main(["pretrain", "--config", TINY, *args]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--config", TINY, *args, "optimizer.lr=0.5", "--resume"]) == 2
    assert "optimizer.lr" in capsys.readouterr().err


def test_flex_attention_for_training_on_the_cpu_is_refused_with_the_reason(tmp_path, token_dir, capsys):
    args = tiny_run_overrides(tmp_path / "run", token_dir, steps=2, **{"train.attention": "flex"})
    assert main(["pretrain", "--config", TINY, *args]) == 2
    assert "train.attention: attention flex cannot train on the CPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run folder or any data work


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, token_dir):
    """train.compile=true (each block compiled) trains like eager: same losses within float tolerance."""
    assert main(["pretrain", "--config", TINY, *tiny_run_overrides(tmp_path / "eager", token_dir, steps=3)]) == 0
    assert main(["pretrain", "--config", TINY, *tiny_run_overrides(tmp_path / "compiled", token_dir, steps=3,
                                                                    **{"train.compile": "true"})]) == 0
    a = [r["loss"] for r in read_metrics(tmp_path / "eager")[0]]
    b = [r["loss"] for r in read_metrics(tmp_path / "compiled")[0]]
    assert len(a) == len(b) == 3 and max(abs(x - y) for x, y in zip(a, b)) < 1e-3
