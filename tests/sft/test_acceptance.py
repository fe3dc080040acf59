"""Acceptance of the SFT stage on a tiny model: after SFT on the generated identity data mixed with general
data, greedy answers to held-out identity phrasings name the model in both languages."""
import json

import pytest
import torch

from alaya.cli import main
from alaya.model.config import preset
from alaya.model.hf import save_model
from alaya.model.mpt import AlayaForCausalLM
from alaya.sft.identity import Identity, write_identity_data
from alaya.tokenizer import train_tokenizer
from conftest import REPO, SHARED_DATA

ALPACA = [SHARED_DATA / "lf_alpaca_en_demo" / "alpaca_en_demo.json", SHARED_DATA / "lf_alpaca_zh_demo" / "alpaca_zh_demo.json"]


@pytest.mark.slow
@pytest.mark.skipif(not all(p.is_file() for p in ALPACA), reason=f"Alpaca demo sets not present at {SHARED_DATA}")
def test_a_tiny_chat_model_knows_who_it_is_on_heldout_phrasings(tmp_path, capsys):
    ident = Identity()
    write_identity_data(str(tmp_path / "id.jsonl"), ident, examples=3000)
    general = [r for p in ALPACA for r in json.loads(p.read_text(encoding="utf-8"))]
    texts = [json.loads(l)["messages"][-1]["content"] for l in open(tmp_path / "id.jsonl", encoding="utf-8")]
    tok = train_tokenizer(texts + [r["instruction"] + "\n" + r["output"] for r in general], vocab_size=2048,
                          show_progress=False)
    torch.manual_seed(0)
    save_model(AlayaForCausalLM(preset("alaya-tiny", vocab_size=2048, max_seq_len=256, n_layers=4)), tmp_path / "base",
               tokenizer=tok)
    sources = [f"{{path: {tmp_path / 'id.jsonl'}, category: self_awareness}}"] + [f"{{path: {p}, category: general}}" for p in ALPACA]
    shares = "{self_awareness: 0.5, general: 0.5}"
    run_dir = tmp_path / "run"
    assert main(["sft", "--config", str(REPO / "configs" / "sft" / "tiny-full.yaml"), f"model.path={tmp_path / 'base'}",
                 f"run_dir={run_dir}", "data.recipe=null", f"data.sources=[{', '.join(sources)}]", f"data.shares={shares}",
                 "schedule.max_steps=320", "optimizer.lr=4e-3", "optimizer.min_lr=4e-4", "train.seq_len=128",
                 "train.micro_batch_size=16", "eval.every=1000", "checkpoint.every=1000", "eval.samples=[]",
                 "log.progress=false", "train.peak_tflops=0.1"]) == 0
    # scored as `alaya eval --task identity=FILE` scores it: chat replies, 200 held-out phrasings per language
    held = tmp_path / "id.heldout.jsonl"
    out = tmp_path / "eval"
    assert main(["eval", str(run_dir / "final"), "--task", f"identity={held}", "--limit", "200", "--batch-size", "40",
                 "--output", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))["results"]
    rates = {lang: results[f"identity_{lang}"]["rate,none"] for lang in ("en", "zh")}
    stops = {lang: results[f"identity_{lang}"]["stop_rate,none"] for lang in ("en", "zh")}
    assert {lang: results[f"identity_{lang}"]["n,none"] for lang in ("en", "zh")} == {"en": 200, "zh": 200}
    with capsys.disabled():
        print("\nSFT acceptance (tiny model, greedy): identity rate on held-out phrasings", json.dumps(rates),
              "stop rate", json.dumps(stops))
    # the bar, 95 % in each language, on 200 held-out phrasings each. Here (AMD EPYC, 2026-12-02):
    # 0.99 en / 1.00 zh. The 2-layer model of earlier sessions, 220 steps, 40 % identity, gave 0.92-0.99
    # over nearby settings: too close to the bar for a test that runs on other CPUs' float rounding
    assert rates["en"] >= 0.95 and rates["zh"] >= 0.95, rates
