"""What SFT teaches a small model, measured greedy on held-out prompts: identity rate (held-out identity
phrasings, both languages), refusal rate (held-out XSafety + Flames red-team prompts) and over-refusal
rate (held-out benign look-alikes), after SFT on identity + Alpaca + generated refusals and look-alikes.
Not a speed benchmark: it records what the recipe gives at this size, whatever it shows.

Run:  python benchmarks/sft_behaviour.py [--preset alaya-tiny] [--steps 400] [--method full]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

DATA = Path(os.environ.get("ALAYA_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="alaya-tiny")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--method", default="full", choices=["full", "lora"])
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--limit", type=int, default=60, help="held-out prompts per measure")
    args = ap.parse_args()
    alpaca = [DATA / "lf_alpaca_en_demo" / "alpaca_en_demo.json", DATA / "lf_alpaca_zh_demo" / "alpaca_zh_demo.json"]
    red = [DATA / "xsafety", DATA / "flames"]
    if not all(p.exists() for p in alpaca + red):
        sys.exit(f"skipped: Alpaca demos / XSafety / Flames not at {DATA} (set ALAYA_DATA)")
    from alaya.cli import main as alaya
    from alaya.infer.loading import load_for_inference
    from alaya.model.config import preset
    from alaya.model.hf import save_model
    from alaya.model.mpt import AlayaForCausalLM
    from alaya.sft.behaviour import identity_rate, refusal_rate
    from alaya.sft.identity import Identity, write_identity_data
    from alaya.tokenizer import train_tokenizer

    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="sft-behaviour-"))
    write_identity_data(str(work / "id.jsonl"), Identity(), examples=3000)
    general = [r for p in alpaca for r in json.loads(p.read_text(encoding="utf-8"))]
    texts = [json.loads(l)["messages"][-1]["content"] for l in open(work / "id.jsonl", encoding="utf-8")]
    tok = train_tokenizer(texts + [r["instruction"] + "\n" + r["output"] for r in general], vocab_size=2048,
                          show_progress=False)
    torch.manual_seed(0)
    model = AlayaForCausalLM(preset(args.preset, vocab_size=2048, max_seq_len=256))
    save_model(model, work / "base", tokenizer=tok)
    sources = ([f"{{path: {work / 'id.jsonl'}, category: self_awareness}}"] + [f"{{path: {p}, category: general}}" for p in alpaca]
               + [f"{{generate: refusals, input: [{red[0]}, {red[1]}], max_epochs: 30}}"])
    run = work / "run"
    config = REPO / "configs" / "sft" / ("tiny-full.yaml" if args.method == "full" else "tiny-lora.yaml")
    assert alaya(["sft", "--config", str(config), f"model.path={work / 'base'}", f"run_dir={run}", "data.recipe=null",
                  f"data.sources=[{', '.join(sources)}]",
                  "data.shares={self_awareness: 0.35, general: 0.45, bias_refusal: 0.1, hhh: 0.1}",
                  f"schedule.max_steps={args.steps}", f"optimizer.lr={args.lr}", f"optimizer.min_lr={args.lr / 10}",
                  "train.seq_len=128", "train.micro_batch_size=16", "eval.every=100000", "checkpoint.every=100000",
                  "eval.samples=[]", "log.progress=false"]) == 0
    if args.method == "full":
        m, tk = load_for_inference(str(run / "final"), device="cpu", dtype="float32")
    else:
        m, tk = load_for_inference(str(work / "base"), str(run / "final"), device="cpu", dtype="float32")
    held = [json.loads(l) for l in open(run / "generated" / "identity.heldout.jsonl", encoding="utf-8")] \
        if (run / "generated" / "identity.heldout.jsonl").exists() else \
        [json.loads(l) for l in open(work / "id.heldout.jsonl", encoding="utf-8")]
    random.Random(0).shuffle(held)
    harmful = [json.loads(l)["prompt"] for l in open(run / "generated" / "refusals.heldout.jsonl", encoding="utf-8")]
    random.Random(0).shuffle(harmful)
    benign = [json.loads(l)["prompt"] for l in open(run / "generated" / "refusals.benign.heldout.jsonl", encoding="utf-8")]
    res = {"identity_rate_en": identity_rate(m, tk, [h for h in held if h["lang"] == "en"][: args.limit]),
           "identity_rate_zh": identity_rate(m, tk, [h for h in held if h["lang"] == "zh"][: args.limit]),
           "refusal_rate": refusal_rate(m, tk, harmful[: args.limit]),
           "over_refusal_rate": refusal_rate(m, tk, benign[: args.limit])}
    print(json.dumps(res))
    print(f"\n{args.preset} {args.method} SFT, {args.steps} steps, greedy, {time.time() - t0:.0f} s in all")
    for k, v in res.items():
        print(f"{k:<20}{100 * v:6.1f} %")
    print(f"(held-out benign look-alikes: {len(benign)}; red-team prompts: {min(args.limit, len(harmful))})")


if __name__ == "__main__":
    main()
