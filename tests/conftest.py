from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from alaya.data.documents import read_texts
from alaya.model.config import ModelConfig, preset
from alaya.model.hf import save_model
from alaya.model.mpt import AlayaForCausalLM
from alaya.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
# the shared real data sets: ALAYA_DATA, else ../shared/data beside the repository
SHARED_DATA = Path(os.environ["ALAYA_DATA"]) if os.environ.get("ALAYA_DATA") else REPO.parent / "shared" / "data"
CORPUS = SHARED_DATA / "corpus"


@pytest.fixture
def small_config() -> ModelConfig:
    # 6 heads: not a power of two, so MPT's slope interleaving is exercised
    return ModelConfig(d_model=48, n_heads=6, n_layers=2, vocab_size=320, max_seq_len=96)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def needs_corpus():
    return pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not present at {CORPUS}")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny model folder with a real (small) tokenizer, shared by the inference tests."""
    tok = train_tokenizer(read_texts(["builtin:demo-bilingual"]), vocab_size=512, show_progress=False)
    torch.manual_seed(0)
    model = AlayaForCausalLM(preset("alaya-tiny", vocab_size=512, max_seq_len=128, n_layers=1))
    with torch.no_grad():  # sharper distributions than at init, so greedy and sampled text differ
        model.transformer.wte.weight.mul_(3)
    d = tmp_path_factory.mktemp("m") / "model"
    save_model(model, d, tokenizer=tok)
    return d


@pytest.fixture(scope="session")
def adapter_dir(model_dir, tmp_path_factory):
    """A LoRA adapter that peft itself creates and saves on the transformers model of model_dir."""
    peft = pytest.importorskip("peft")
    from transformers import MptForCausalLM

    torch.manual_seed(1)
    hf = MptForCausalLM.from_pretrained(model_dir)
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=["Wqkv", "out_proj", "up_proj", "down_proj"],
                          lora_dropout=0.05, init_lora_weights=False, alpha_pattern={"down_proj": 4})
    pm = peft.get_peft_model(hf, cfg)
    d = tmp_path_factory.mktemp("a") / "adapter"
    pm.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory):
    """Token shards of the built-in bilingual corpus with a 512-token tokenizer."""
    from alaya.train.shards import tokenize_to_shards

    root = tmp_path_factory.mktemp("tokens")
    tok = train_tokenizer(read_texts(["builtin:demo-bilingual"]), vocab_size=512, show_progress=False)
    tok.save(root / "tok")
    tokenize_to_shards(["builtin:demo-bilingual"], root / "tok", root / "shards", heldout_fraction=0.1,
                       processes=1, progress=False)
    return root / "shards"


def tiny_run_overrides(run_dir, token_dir, steps=8, **extra):
    """Overrides for configs/pretrain/tiny.yaml that make a run of a few seconds."""
    base = {"run_dir": str(run_dir), "data.path": str(token_dir), "model.vocab_size": 512, "model.d_model": 64,
            "model.n_heads": 4, "model.n_layers": 2, "model.max_seq_len": 64, "train.seq_len": 64,
            "train.micro_batch_size": 4, "schedule.max_steps": steps, "schedule.warmup_steps": 2,
            "checkpoint.every": 2, "checkpoint.keep": 2, "eval.every": 4, "eval.windows": 8,
            "log.progress": False, "train.peak_tflops": 0.1, **extra}
    return [f"{k}={v}" for k, v in base.items()]

@pytest.fixture(scope="session")
def sft_tok():
    """A 600-token tokenizer that knows the prompt format and some Chinese."""
    extra = ["### Instruction:\t\nWho are you?\n\n### Output:\t\nI am Alaya. </s>"] * 50
    return train_tokenizer(list(read_texts(["builtin:demo-bilingual"])) + extra, vocab_size=600, show_progress=False)


@pytest.fixture(scope="session")
def base_dir(sft_tok, tmp_path_factory):
    torch.manual_seed(0)
    model = AlayaForCausalLM(preset("alaya-tiny", vocab_size=600, d_model=64, n_heads=4, n_layers=2, max_seq_len=128))
    d = tmp_path_factory.mktemp("base") / "model"
    save_model(model, d, tokenizer=sft_tok)
    return d


# ------------------------------------------------------------------ a real `alaya serve` on a free port
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, *extra):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alaya.cli", "serve", str(model_dir), "--port", str(port),
                             "--log-level", "warning", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode())
            time.sleep(0.25)
    proc.kill()
    raise AssertionError("server did not start")
