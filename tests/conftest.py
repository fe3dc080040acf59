from __future__ import annotations

import json
import os
from pathlib import Path
import socket
import subprocess
import sys
import time
import urllib.request

# compiled-code caches in an ignored folder of the checkout, kept between runs (numba's kernels, inductor's
# graphs); set before anything imports numba or compiles
_CACHE = Path(__file__).resolve().parents[1] / ".cache"
os.environ.setdefault("NUMBA_CACHE_DIR", str(_CACHE / "numba"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_CACHE / "inductor"))

import numpy as np
import pytest
import torch

from alaya.data.documents import read_documents, read_texts
from alaya.model.config import ModelConfig, preset
from alaya.model.hf import save_model
from alaya.model.mpt import AlayaForCausalLM
from alaya.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
# the shared real data sets: ALAYA_DATA, else ../shared/data beside the repository
SHARED_DATA = Path(os.environ["ALAYA_DATA"]) if os.environ.get("ALAYA_DATA") else REPO.parent / "shared" / "data"
CORPUS = SHARED_DATA / "corpus"
# the CPU decoding path is pinned, so a test tests the path it means to and not whichever won a timing at
# start; the tests of each path set it on purpose (test_backends, test_cpu_decode, test_int8, test_server)
os.environ.setdefault("ALAYA_CPU_PATH", "torch")
# the CPU decoding path's measured choices (alaya.infer.cpu_path) go to a folder of this test run, not to
# the user's ~/.cache: each run measures afresh, and subprocesses started by tests inherit it
if "ALAYA_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["ALAYA_CACHE_DIR"] = tempfile.mkdtemp(prefix="alaya-test-cache-")


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
    from alaya.tokenizer.shards import tokenize_to_shards

    root = tmp_path_factory.mktemp("tokens")
    tok = train_tokenizer(read_texts(["builtin:demo-bilingual"]), vocab_size=512, show_progress=False)
    tok.save(root / "tok")
    tokenize_to_shards(["builtin:demo-bilingual"], root / "tok", root / "shards", heldout_fraction=0.1,
                       processes=1, progress=False)
    return root / "shards"


def tiny_run_overrides(run_dir, token_dir, steps=8, **extra):
    """Overrides for configs/pretrain/tiny.yaml that make a run of a few seconds; an extra key set to None
    is left out (the config's own value holds: ``**{"train.peak_tflops": None}`` measures the peak)."""
    base = {"run_dir": str(run_dir), "data.path": str(token_dir), "model.vocab_size": 512, "model.d_model": 64,
            "model.n_heads": 4, "model.n_layers": 2, "model.max_seq_len": 64, "train.seq_len": 64,
            "train.micro_batch_size": 4, "schedule.max_steps": steps, "schedule.warmup_steps": 2,
            "checkpoint.every": 2, "checkpoint.keep": 2, "eval.every": 4, "eval.windows": 8,
            "log.progress": False, "train.peak_tflops": 0.1, **extra}
    return [f"{k}={v}" for k, v in base.items() if v is not None]


@pytest.fixture(scope="session")
def trained_dir(token_dir, tmp_path_factory):
    """A model (d_model 128, 2 layers, 4 heads, 512 tokens, context 256) pretrained 200 steps on the built-in
    bilingual corpus (about 10 s): for the checks that need a trained model's sharp distributions."""
    from alaya.train.pretrain import run_pretrain

    run = tmp_path_factory.mktemp("trained") / "run"
    extra = {"model.d_model": 128, "model.max_seq_len": 256, "train.seq_len": 128, "checkpoint.every": 1000,
             "eval.every": 1000, "schedule.warmup_steps": 20}
    summary = run_pretrain(str(REPO / "configs" / "pretrain" / "tiny.yaml"),
                           tiny_run_overrides(run, token_dir, steps=200, **extra))
    return summary["final"]


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


def start_server(model_dir, *extra, env=None):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "alaya.cli", "serve", str(model_dir), "--port", str(port),
                             "--log-level", "warning", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=None if env is None else {**os.environ, **env})
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


# ----------------------------------------------------------------------------- the data room's stage folders
def stage_docs(path):
    """The documents a stage folder kept (its part files), as dicts."""
    return [json.loads(l) for p in sorted(Path(path).glob("part-*.jsonl")) for l in p.read_text(encoding="utf-8").splitlines()]


def stage_ids(path):
    return sorted(d["id"] for d in stage_docs(path))


@pytest.fixture(scope="module")
def dup_input(tmp_path_factory):
    """Real documents, near-duplicates of some of them (a few characters changed), exact copies, bad lines."""
    docs = list(read_documents(["builtin:demo"]))
    # real text: the bilingual paragraphs (short) and long English docstrings, a few code files
    src = [d for d in docs if d.meta.get("lang") in ("en", "zh") and len(d.text) > 1500][:24] + \
          [d for d in docs if d.meta.get("lang") == "zh"][:6]
    rng = np.random.default_rng(0)
    rows = []
    for d in src:
        rows.append({"id": d.id, "text": d.text, "meta": d.meta})
    for k, d in enumerate(src[:8]):
        chars = list(d.text)
        chars[rng.integers(len(chars))] = "#"  # one character in more than 1500
        rows.append({"id": f"near-{k}", "text": "".join(chars), "meta": d.meta})
    rows.append({"id": "exact-0", "text": "\n " + src[-1].text + "  \n", "meta": src[-1].meta})  # equal once normalised
    folder = tmp_path_factory.mktemp("dup")
    a, b = folder / "a.jsonl", folder / "b.jsonl"
    a.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:20]) + "{not json\n", encoding="utf-8")
    b.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[20:]) + '{"id": "x", "text": 5}\n',
                 encoding="utf-8")
    return [str(a), str(b)], src


# ------------------------------------------------------------------ scheduling on several workers (-n auto)
# The files that take minutes go first: with --dist loadfile a worker takes whole files in collection order,
# so a long file collected last would run alone at the end while the other workers wait.
SLOW_FILES = ["test_gpu_suite.py", "sft/test_run.py", "test_quickstart.py", "sft/test_acceptance.py",
              "test_gpu_suite_cli.py", "sft/test_resume.py", "train/test_distributed.py", "train/test_pretrain.py",
              "infer/test_server.py", "eval/test_lm_eval_agreement.py"]


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = Path(str(item.fspath)).as_posix()
        return next((i for i, name in enumerate(SLOW_FILES) if path.endswith("/tests/" + name)), len(SLOW_FILES))

    items.sort(key=rank)  # stable: a file's tests keep their order
