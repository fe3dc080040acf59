"""Multiple-choice evaluation speed: `alaya eval` against lm-evaluation-harness's `hf` backend (the tool a user
would otherwise pick) on the same model folder, the same items and the same prompts (the task YAMLs of
configs/eval/lm_eval), in the same run. Prints items/s of each, the ratio, and both accuracies (they must be
equal: the scorer agrees with lm-eval per item, see tests/eval/test_lm_eval_agreement.py).

Each side runs in its own process (the same number of threads), twice, alternately; the best time counts.
The model is a folder given with --model, else a fresh `alaya-10m`-shaped model (512-token context) written
once into a temporary folder: the speed does not depend on the weights.

Run:  python benchmarks/eval_mc.py [--model DIR] [--task mmlu:anatomy] [--shots 5] [--limit 100] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import DATA, cpu_model  # noqa: E402 (benchmarks/machine.py)
LM_TASK = {"mmlu": "alaya_mmlu_{s}", "ceval": "alaya_ceval_{s}", "cmmlu": "alaya_cmmlu_{s}", "arc_easy": "alaya_arc_easy"}



def run_alaya(model: str, task: str, shots: int, limit: int, batch: int) -> dict:
    from alaya.eval.run import EvalSettings, Evaluator, TaskSpec
    from alaya.infer.loading import load_for_inference

    ev = Evaluator(EvalSettings(shots=shots, limit=limit, batch_size=batch, data_dir=DATA, progress=False))
    spec = TaskSpec.parse(task)
    ev.load_data([spec])
    model__backend, tok = load_for_inference(model, device="cpu", dtype="float32")
    model_ = model__backend.model
    t0 = time.perf_counter()
    results, samples = ev.run(model_, tok, [spec])
    seconds = time.perf_counter() - t0
    name = spec.name
    return {"seconds": seconds, "items": len(samples), "acc": results["results"][name]["acc,none"]}


def run_lm_eval(model: str, task: str, shots: int, limit: int, batch: int, ctx: int) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from alaya.eval.lm_eval_tasks import write_lm_eval_tasks

    name, _, subject = task.partition(":")
    folder = Path(tempfile.mkdtemp(prefix="lm-tasks-"))
    write_lm_eval_tasks(DATA, folder, [name], subjects=[subject] if subject else None)
    lm_task = LM_TASK[name].format(s=subject)
    t0 = time.perf_counter()
    out = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model},max_length={ctx},dtype=float32,device=cpu",
                                  tasks=[lm_task], num_fewshot=shots, limit=limit, batch_size=batch,
                                  task_manager=TaskManager(include_path=str(folder / "tasks")))
    seconds = time.perf_counter() - t0
    r = out["results"][lm_task]
    return {"seconds": seconds, "items": int(out["n-samples"][lm_task]["effective"]), "acc": r["acc,none"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--task", default="mmlu:anatomy", help="mmlu:SUBJECT, ceval:SUBJECT, cmmlu:SUBJECT or arc_easy")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--side", choices=["alaya", "lm_eval"], help=argparse.SUPPRESS)  # one side, in a child process
    args = ap.parse_args()
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(k, v)
    if args.side:
        from alaya.model.hf import read_config

        ctx = read_config(args.model).max_seq_len
        res = (run_alaya(args.model, args.task, args.shots, args.limit, args.batch_size) if args.side == "alaya"
               else run_lm_eval(args.model, args.task, args.shots, args.limit, args.batch_size, ctx))
        print("RESULT " + json.dumps(res), flush=True)
        return
    name = args.task.partition(":")[0]
    if not (DATA / ("arc" if name.startswith("arc") else name)).exists():
        sys.exit(f"skipped: {name} not found under {DATA} (set ALAYA_DATA)")
    try:
        import lm_eval  # noqa: F401 (is it installed?)
    except ImportError:
        sys.exit("skipped: lm-eval is not installed (pip install 'lm-eval[hf]')")
    model = args.model
    if model is None:
        import torch

        from alaya.model.config import preset
        from alaya.model.hf import save_model
        from alaya.model.mpt import AlayaForCausalLM
        from alaya.tokenizer import train_tokenizer
        from alaya.data.documents import read_texts

        model = str(Path(tempfile.mkdtemp(prefix="eval-mc-")) / "model")
        tok = train_tokenizer(read_texts(["builtin:demo"]), vocab_size=8192, show_progress=False)
        torch.manual_seed(0)
        save_model(AlayaForCausalLM(preset("alaya-10m", vocab_size=8192, max_seq_len=512)), model, tokenizer=tok)
    best: dict[str, dict] = {}
    for rep in range(args.repeats):
        for side in ("alaya", "lm_eval"):
            cmd = [sys.executable, __file__, "--side", side, "--model", model, "--task", args.task, "--shots",
                   str(args.shots), "--limit", str(args.limit), "--batch-size", str(args.batch_size)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if out.returncode or not line:
                sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
            res = json.loads(line[-1][7:])
            if side not in best or res["seconds"] < best[side]["seconds"]:
                best[side] = res
            print(f"run {rep + 1} {side}: {res['items']} items in {res['seconds']:.2f} s, acc {res['acc']:.4f}", flush=True)
    a, b = best["alaya"], best["lm_eval"]
    ips_a, ips_b = a["items"] / a["seconds"], b["items"] / b["seconds"]
    print(f"\n{args.task}, {args.shots}-shot, {a['items']} items, batch {args.batch_size}, fp32, {cpu_model()}, "
          f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print("| scorer | items/s | accuracy |\n|---|---:|---:|")
    print(f"| alaya eval | {ips_a:.2f} | {a['acc']:.4f} |")
    print(f"| lm-eval {__import__('lm_eval').__version__} hf backend | {ips_b:.2f} | {b['acc']:.4f} |")
    print(f"ratio alaya / lm-eval: {ips_a / ips_b:.2f}x; accuracy equal: {abs(a['acc'] - b['acc']) < 1e-9}")


if __name__ == "__main__":
    main()
