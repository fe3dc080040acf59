"""The GPU suite: every GPU row of the open GPU issues in one run on one accelerator, one table at the end.

Rows (each beside the tool a user would otherwise pick, in the same run; each from its own benchmark script,
run as a subprocess, whose JSON lines this reads and whose full output goes to --out):
- pretraining step, bf16, eager and `train.compile=true`: alaya vs transformers, with MFU against the
  matmul peak measured in the run (benchmarks/train_step.py);
- LoRA SFT step, bf16, padded and packed rows: alaya vs transformers + peft (benchmarks/sft_step.py; needs
  the Alpaca demo sets, copied beside the checkout and named by ALAYA_DATA);
- decoding at batch 1 and 16: alaya's torch path, alaya's `graphs` path (static cache, CUDA graphs) and
  transformers' generate, with the share of the memory-bandwidth bound (benchmarks/decode.py).

The model is the published 7B width (4096, 32 heads) with --layers layers (default 4: 1.05 B parameters,
2.1 GB of bf16 weights), as the issues measured it.

Run on the GPU machine:  PYTHONPATH=src python3 benchmarks/gpu.py --out "$OUT"   (writes $OUT/gpu-report.json)
A CPU check that the suite runs end to end (small model, minutes):  python benchmarks/gpu.py --smoke --out /tmp/gpu
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(name: str, script: str, args: list[str], out: Path, timeout: float) -> tuple[list[dict], str]:
    """Run one benchmark script; its JSON lines and its whole output (also written to out/NAME.log)."""
    cmd = [sys.executable, str(HERE / script), *args]
    t0 = time.time()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        text = done.stdout + done.stderr + (f"\n[exit {done.returncode}]" if done.returncode else "")
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        text += f"\n[timed out after {timeout:.0f} s]"
    text = f"$ {' '.join(cmd)}\n{text}\n[{time.time() - t0:.0f} s]\n"
    (out / f"{name}.log").write_text(text, encoding="utf-8")
    rows = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    print(f"{name}: {len(rows)} result line(s), {time.time() - t0:.0f} s (log: {out / (name + '.log')})", flush=True)
    return rows, text


def machine(device: str) -> str:
    """The accelerator's name (or the CPU's), for the report."""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    sys.path.insert(0, str(HERE))
    from machine import cpu_model

    return f"{cpu_model()}, torch {torch.__version__}"


def table(results: dict, device: str) -> str:
    lines = [f"| row | alaya | reference | ratio | note |", "|---|---:|---:|---:|---|"]
    for name, rows in results.items():
        if name.startswith("train"):
            for r in rows:
                if "alaya" in r and "transformers" in r:
                    a, t, peak = r["alaya"], r["transformers"], r["matmul_peak_flops"]
                    mfu = a["tokens_per_s"] * a["flops_per_token"] / peak
                    lines.append(f"| {name} tok/s | {a['tokens_per_s']:.0f} | {t['tokens_per_s']:.0f} (transformers) | "
                                 f"{a['tokens_per_s'] / t['tokens_per_s']:.2f}x | MFU {100 * mfu:.1f} % |")
        elif name.startswith("sft"):
            for r in rows:
                if "alaya" in r and "transformers+peft" in r:
                    a, p, packed = r["alaya"], r["transformers+peft"], r.get("alaya packed")
                    note = f"packed {packed['tokens_per_s']:.0f} tok/s" if packed else ""
                    lines.append(f"| {name} real tok/s | {a['tokens_per_s']:.0f} | {p['tokens_per_s']:.0f} (peft) | "
                                 f"{a['tokens_per_s'] / p['tokens_per_s']:.2f}x | {note} |")
        elif name.startswith("decode"):
            for r in rows:
                if "batch" in r and "transformers tok/s" in r:
                    ref = r["transformers tok/s"]
                    for side in ("alaya tok/s", "alaya graphs tok/s"):
                        if side in r:
                            lines.append(f"| decode batch {r['batch']}, {side.replace(' tok/s', '')} tok/s | "
                                         f"{r[side]:.0f} | {ref:.0f} (transformers) | {r[side] / ref:.2f}x | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for each row's log and gpu-report.json")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--only", nargs="*", default=None, help="rows to run: train sft decode (default: all)")
    ap.add_argument("--timeout", type=float, default=420, help="seconds per benchmark script")
    ap.add_argument("--smoke", action="store_true", help="the CPU check: alaya-tiny, fp32, few steps")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        model = ["--preset", "alaya-tiny", "--device", "cpu"]
        jobs = {
            "train fp32": ("train_step.py", model + ["--precision", "fp32", "--seq-len", "128", "--batch", "2",
                                                     "--iters", "2", "--warmup", "1"]),
            "sft fp32": ("sft_step.py", model + ["--precision", "fp32", "--seq-len", "128", "--batch", "2",
                                                 "--iters", "2", "--warmup", "1", "--repeats", "1"]),
            "decode": ("decode.py", model + ["--batches", "1", "2", "--new-tokens", "16", "--prompt-len", "16",
                                             "--repeats", "1", "--no-ctranslate2", "--graphs"]),
        }
        device = "cpu"
    else:
        model = ["--preset", "alaya-7b", "--layers", str(args.layers), "--device", "cuda"]
        jobs = {
            "train bf16 eager": ("train_step.py", model + ["--precision", "bf16", "--seq-len", "2048", "--batch", "4"]),
            "train bf16 compiled": ("train_step.py", model + ["--precision", "bf16", "--seq-len", "2048", "--batch",
                                                              "4", "--compile"]),
            "sft bf16": ("sft_step.py", model + ["--precision", "bf16", "--seq-len", "1024", "--batch", "8",
                                                 "--pad-multiple", "128"]),
            "decode": ("decode.py", model + ["--batches", "1", "16", "--new-tokens", "64", "--prompt-len", "64",
                                             "--dtype", "bfloat16"]),
        }
        device = "cuda"
    results, texts = {}, {}
    for name, (script, script_args) in jobs.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        results[name], texts[name] = run(name.replace(" ", "-"), script, script_args, out, args.timeout)
    report = {"date": time.strftime("%Y-%m-%d"), "device": device, "machine": machine(device), "layers": args.layers,
              "smoke": args.smoke, "rows": results, "table": table(results, device)}
    (out / "gpu-report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print()
    for name, text in texts.items():  # each script's own closing lines (machine, bound, ratios)
        tail = [ln for ln in text.splitlines() if ln and not ln.startswith(("{", "[", "$"))][-8:]
        print(f"--- {name}\n" + "\n".join(tail))
    print(f"\nGPU suite, {report['machine']}, {report['date']}\n" + report["table"])


if __name__ == "__main__":
    main()
