"""alaya sft end to end: LoRA and full runs, PEFT folders, merge, two ranks, compile (exact resume under the
shipped defaults: test_resume.py)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from alaya.cli import main
from alaya.model.hf import load_model
from alaya.model.lora import merge_adapter
from alaya.train.plot import read_metrics
from conftest import REPO

LORA = str(REPO / "configs" / "sft" / "tiny-lora.yaml")
FULL = str(REPO / "configs" / "sft" / "tiny-full.yaml")


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("sftdata")
    general = [{"instruction": f"What is {a} plus {b}?", "output": f"{a} plus {b} is {a + b}."}
               for a in range(12) for b in range(6)]
    general += [{"instruction": "介绍一下长城", "output": "长城是中国古代的军事防御工程。"}] * 3
    bad = ['{"instruction": "torn', json.dumps({"instruction": "x", "output": ""})]
    (root / "general.jsonl").write_text("\n".join([json.dumps(r, ensure_ascii=False) for r in general] + bad) + "\n",
                                        encoding="utf-8")
    dialogues = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                               {"role": "user", "content": f"Count to {n}"},
                               {"role": "assistant", "content": " ".join(str(i) for i in range(1, n + 1))}]}
                 for n in range(1, 9)]
    (root / "dialogue.json").write_text(json.dumps(dialogues), encoding="utf-8")
    return root


def overrides(run_dir, base_dir, files, steps=8, **extra):
    sources = (f"[{{path: {files / 'general.jsonl'}, category: general}}, "
               f"{{path: {files / 'dialogue.json'}, category: role_play}}, {{generate: identity, examples: 200}}]")
    base = {"run_dir": str(run_dir), "model.path": str(base_dir), "data.recipe": "null", "data.sources": sources,
            "data.shares": "{general: 0.6, role_play: 0.2, self_awareness: 0.2}", "data.heldout_fraction": 0.1,
            "train.seq_len": 128, "train.micro_batch_size": 4, "schedule.max_steps": steps,
            "schedule.warmup_steps": 2, "checkpoint.every": 3, "checkpoint.keep": 2, "eval.every": 4,
            "eval.samples": '["你是谁？", "Who are you?"]', "eval.max_new_tokens": 8, "log.progress": "false",
            "train.peak_tflops": 0.1, **extra}
    return [f"{k}={v}" for k, v in base.items()]


def test_lora_run_writes_a_peft_folder_that_peft_loads_and_merge_equals_it(tmp_path, base_dir, sft_files):
    run_dir = tmp_path / "lora"
    assert main(["sft", "--config", LORA, *overrides(run_dir, base_dir, sft_files)]) == 0
    final = run_dir / "final"
    assert (final / "adapter_config.json").is_file() and (final / "adapter_model.safetensors").is_file()
    train, evals, _ = read_metrics(run_dir)
    assert [r["step"] for r in train] == list(range(1, 9)) and train[-1]["loss"] < train[0]["loss"]
    assert all(r["supervised_tokens"] > 0 and r["tokens"] > 0 for r in train)
    assert [e["step"] for e in evals] == [0, 4, 8] and set(evals[-1]["samples"]) == {"你是谁？", "Who are you?"}
    report = json.loads((run_dir / "data_report.json").read_text())
    assert report["quarantined"] == 2 and report["categories"]["self_awareness"]["examples"] > 0
    assert len((run_dir / "quarantine.jsonl").read_text().splitlines()) == 2
    assert (run_dir / "generated" / "identity.heldout.jsonl").is_file()

    peft = pytest.importorskip("peft")
    from transformers import MptForCausalLM

    ids = torch.randint(4, 600, (2, 16))
    ours = load_model(base_dir)
    merge_adapter(ours, final)
    hf = peft.PeftModel.from_pretrained(MptForCausalLM.from_pretrained(base_dir), final).eval()
    with torch.no_grad():
        theirs = hf(input_ids=ids).logits
        torch.testing.assert_close(ours(ids)[0], theirs, atol=2e-5, rtol=1e-4)
    assert main(["merge", str(base_dir), str(final), str(tmp_path / "merged")]) == 0
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "merged")(ids)[0], theirs, atol=2e-5, rtol=1e-4)
    # alaya chat / infer take the adapter as they do any PEFT folder
    prompts = tmp_path / "p.txt"
    prompts.write_text("Who are you?\n", encoding="utf-8")
    assert main(["infer", str(base_dir), str(prompts), str(tmp_path / "o.jsonl"), str(final), "--temperature", "0",
                 "--max-new-tokens", "8"]) == 0


def test_bad_configs_are_refused_with_the_key(tmp_path, base_dir, sft_files, capsys):
    def refused(*args):
        capsys.readouterr()
        assert main(["sft", "--config", LORA, *args]) == 2
        return capsys.readouterr().err

    assert "method" in refused(*overrides(tmp_path / "r", base_dir, sft_files, **{"method": "qlora"}))
    assert "model.path" in refused(f"run_dir={tmp_path / 'r2'}", "data.recipe=null")
    assert "max_seq_len" in refused(*overrides(tmp_path / "r3", base_dir, sft_files, **{"train.seq_len": 4096}))


TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable))


# LoRA dropout off in the distributed comparisons: each rank draws its own dropout masks, so only the
# dropout-free step can be equal to one process's
NO_DROPOUT = {"lora.dropout": 0.0}


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory, base_dir, sft_files):
    """The reference: one process, the global batch of 8 rows in one micro-batch (no accumulation)."""
    run_dir = tmp_path_factory.mktemp("one") / "run"
    assert main(["sft", "--config", LORA, *overrides(run_dir, base_dir, sft_files, 4,
                                                     **{"train.micro_batch_size": 8}, **NO_DROPOUT)]) == 0
    return run_dir


@pytest.mark.slow
@pytest.mark.skipif(TORCHRUN is None or not torch.distributed.is_available(), reason="torchrun not available")
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_ranks_with_grad_accumulation_train_like_one_with_the_same_global_batch(mode, one_rank, tmp_path,
                                                                                    base_dir, sft_files):
    # 2 ranks × 2 accumulated micro-batches × 2 rows: the one rank's 8 rows, as the 7B preset accumulates
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "alaya.cli", "sft", "--config", LORA,
                          *overrides(tmp_path / "two", base_dir, sft_files, 4, **{"train.micro_batch_size": 2,
                                                                                  "train.grad_accum": 2,
                                                                                  "train.parallel": mode},
                                     **NO_DROPOUT)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    la = [r["loss"] for r in read_metrics(one_rank)[0]]
    lb = [r["loss"] for r in read_metrics(tmp_path / "two")[0]]
    assert len(la) == len(lb) == 4 and max(abs(x - y) for x, y in zip(la, lb)) < 1e-5, (la, lb)
    a = load_file(str(one_rank / "final" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "final" / "adapter_model.safetensors"))
    assert sorted(a) == sorted(b) and [k for k in a if not torch.allclose(a[k], b[k], atol=1e-5)] == []


def test_the_alaya_7b_lora_preset_holds_the_published_settings_and_validates():
    """configs/sft/alaya-7b-lora.yaml needs 8 GPUs to run; here it is loaded and checked as a run would."""
    from alaya.sft.run import SFT_DEFAULTS, check_sft_config
    from alaya.train.config import load_config

    cfg = load_config(str(REPO / "configs" / "sft" / "alaya-7b-lora.yaml"), ["model.path=Alaya-7B"], SFT_DEFAULTS,
                      frozenset({"model", "data.shares"}), check_sft_config)
    assert cfg["method"] == "lora"
    assert {k: cfg["lora"][k] for k in ("r", "alpha", "dropout")} == {"r": 16, "alpha": 32, "dropout": 0.05}
    assert cfg["lora"]["target_modules"] == ["Wqkv", "out_proj", "up_proj", "down_proj"]
    t = cfg["train"]
    assert (t["precision"], t["parallel"], t["compile"], t["packing"]) == ("bf16", "fsdp", True, True)
    assert cfg["optimizer"]["grad_clip"] == 0.3
    assert (REPO / cfg["data"]["recipe"]).is_file()


@pytest.mark.slow
def test_compiled_lora_sft_trains_like_eager_and_resumes_exactly(tmp_path, base_dir, sft_files, capsys):
    """train.compile=true (as the alaya-7b-lora preset sets it; each block compiled) on packed rows: the losses
    are eager's within float rounding, and a compiled run stopped after a checkpoint and resumed ends bitwise
    equal to the compiled run left alone. LoRA dropout is 0 here: compiled blocks run on the whole [B, T]
    batch where eager runs on the real tokens, so with dropout the masks are drawn over other shapes (over
    the same shapes compiled and eager draw the same masks: tests/model/test_lora.py; an eager run with
    dropout resumes bitwise: tests/sft/test_resume.py)."""
    extra = {"eval.every": 100, "checkpoint.every": 2, "lora.dropout": 0.0}
    on = {"train.compile": "true"}
    assert main(["sft", "--config", LORA, *overrides(tmp_path / "eager", base_dir, sft_files, 4, **extra)]) == 0
    assert main(["sft", "--config", LORA, *overrides(tmp_path / "compiled", base_dir, sft_files, 4, **extra, **on)]) == 0
    a = [r["loss"] for r in read_metrics(tmp_path / "eager")[0]]
    b = [r["loss"] for r in read_metrics(tmp_path / "compiled")[0]]
    assert len(a) == len(b) == 4 and max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    cut = overrides(tmp_path / "cut", base_dir, sft_files, 4, **extra, **on)
    assert main(["sft", "--config", LORA, *cut, "train.stop_after=3"]) == 0
    assert not (tmp_path / "cut" / "final").exists()
    capsys.readouterr()
    assert main(["sft", "--config", LORA, *cut, "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert [r["loss"] for r in read_metrics(tmp_path / "cut")[0]] == b
    whole = load_file(str(tmp_path / "compiled" / "final" / "adapter_model.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "final" / "adapter_model.safetensors"))
    assert sorted(whole) == sorted(resumed) and [k for k in whole if not torch.equal(whole[k], resumed[k])] == []
