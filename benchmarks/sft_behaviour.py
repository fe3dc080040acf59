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
    from alaya.model.config import preset
    from alaya.model.hf import save_model
    from alaya.model.mpt import AlayaForCausalLM
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
    # scored as `alaya eval` scores the chat-behaviour tasks (the one place the rates are computed)
    ident = run / "generated" / "identity.heldout.jsonl"
    ident = ident if ident.exists() else work / "id.heldout.jsonl"
    model_args = [str(run / "final")] if args.method == "full" else [str(work / "base"), "--adapter", str(run / "final")]
    out = work / "eval"
    assert alaya(["eval", *model_args, "--task", f"identity={ident}", f"refusal={run}", f"over_refusal={run}",
                  "--limit", str(args.limit), "--batch-size", "32", "--output", str(out), "--no-progress"]) == 0
    r = json.loads((out / "results.json").read_text(encoding="utf-8"))["results"]
    res = {"identity_rate_en": r["identity_en"]["rate,none"], "identity_rate_zh": r["identity_zh"]["rate,none"],
           "refusal_rate": r["refusal"]["rate,none"], "over_refusal_rate": r["over_refusal"]["rate,none"],
           "identity_stop_rate": r["identity"]["stop_rate,none"]}
    benign = [1 for _ in open(run / "generated" / "refusals.benign.heldout.jsonl", encoding="utf-8")]
    harmful = [1 for _ in open(run / "generated" / "refusals.heldout.jsonl", encoding="utf-8")]
    print(json.dumps(res))
    print(f"\n{args.preset} {args.method} SFT, {args.steps} steps, greedy, {time.time() - t0:.0f} s in all")
    for k, v in res.items():
        print(f"{k:<20}{100 * v:6.1f} %")
    print(f"(held-out benign look-alikes: {len(benign)}; red-team prompts: {min(args.limit, len(harmful))})")


if __name__ == "__main__":
    main()
