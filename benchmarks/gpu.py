"""The GPU suite: every GPU row of the open GPU issues in one run on one accelerator, one table at the end.

Rows (each beside the tool a user would otherwise pick, in the same run; each from its own benchmark script,
run as a subprocess, whose JSON lines this reads and whose full output goes to --out):
- pretraining step, bf16, eager and `train.compile=true`: alaya vs transformers, with MFU against the
  matmul peak measured in the run (benchmarks/train_step.py);
- LoRA SFT step, bf16, padded and packed rows: alaya vs transformers + peft (benchmarks/sft_step.py; needs
  the Alpaca demo sets, copied beside the checkout and named by ALAYA_DATA);
- decoding at batch 1 and 16: alaya's torch path, alaya's `graphs` path (static cache, CUDA graphs) and
  transformers' generate, with the share of the memory-bandwidth bound (benchmarks/decode.py);
- FlexAttention against SDPA: logits, loss and gradients as relative errors, and the time of each, on padded
  and packed rows (benchmarks/flex_parity.py);
- train.compile's first step on a 91 M-parameter, 12-layer model (each block compiled; the issue measured
  123 s compiling the whole model) (benchmarks/compile_time.py);
- the CLI end to end on the device, FSDP2 under `torchrun --nproc_per_node 1` included (benchmarks/gpu_cli.py);
- what `alaya serve` costs per token against in-process decoding on the same device (benchmarks/server.py
  --overhead; needs fastapi and uvicorn: without them the row says so).

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
            bound = next((r["bound"] for r in rows if "bound" in r), {})
            for r in rows:
                if "batch" in r and "transformers tok/s" in r:
                    ref = r["transformers tok/s"]
                    for side in ("alaya tok/s", "alaya graphs tok/s"):
                        if side not in r:
                            continue
                        who = side.replace(" tok/s", "")
                        notes = []
                        if r["batch"] == bound.get("batch") and who in bound.get("percent", {}):
                            notes.append(f"{bound['percent'][who]:.0f} % of the bandwidth bound "
                                         f"({bound['read_GBps']:.0f} GB/s read; transformers "
                                         f"{bound['percent'].get('transformers', 0):.0f} %)")
                        equal = r.get("greedy rows equal to transformers", {}).get(who)
                        if equal is not None:
                            notes.append(f"greedy rows equal to transformers' {equal}/{r['batch']}")
                        if who == "alaya graphs" and r.get("alaya graphs first call s") is not None:
                            extra = r.get("alaya graphs new bucket s")
                            notes.append(f"first call {r['alaya graphs first call s']:.1f} s (compile + capture)"
                                         + (f"; a new bucket {extra:+.2f} s (recording)" if extra is not None else ""))
                        lines.append(f"| decode batch {r['batch']}, {who} tok/s | {r[side]:.0f} | {ref:.0f} "
                                     f"(transformers) | {r[side] / ref:.2f}x | {'; '.join(notes)} |")
        elif name.startswith("flex"):
            for r in rows:
                if "rows" in r and "errors" in r:
                    e = r["errors"]
                    errs = ", ".join(f"{k} {v:.1e}" for k, v in e.items())
                    lines.append(f"| flex attention, {r['rows']} (s per step) | {r['seconds']['flex']:.4f} | "
                                 f"{r['seconds']['sdpa']:.4f} (alaya sdpa) | {r['flex_speedup']:.2f}x | "
                                 f"relative errors: {errs}; forward alone (a prefill) flex/sdpa "
                                 f"{r.get('flex_forward_speedup', 0):.2f}x |")
                elif "flex_parity" in r:
                    f = r["flex_parity"]
                    lines.append(f"| flex parity | {'PASS' if f['ok'] else 'FAIL'} | | | worst relative error "
                                 f"{f['worst_relative_error']:.1e} (tolerance {f['tolerance']:.0e}), gradients "
                                 f"{'checked' if f['gradients_checked'] else 'not checked (no CPU backward)'} |")
        elif name.startswith("compile"):
            for r in rows:
                for mode, c in r.get("compile", {}).items():
                    lines.append(f"| train.compile first step ({mode}) | {c['first_step_s']:.1f} s | | | "
                                 f"then {c['tokens_per_s']:.0f} tok/s |")
        elif name.startswith("server"):
            for r in rows:
                if "skipped" in r:
                    lines.append(f"| served / in-process decoding | | | | {r['skipped']} |")
                elif "served_over_in_process" in r:
                    lines.append(f"| served tok/s ({r['weights']}, {r['decode_path']}) | {r['served_tok_s']} | "
                                 f"{r['in_process_tok_s']} (in-process) | {r['served_over_in_process']:.2f}x | "
                                 f"{r['server_ms_per_token']} ms per token |")
        elif name.startswith("cli"):
            for r in rows:
                if "step" in r:
                    figures = ", ".join(f"{k} {r[k]}" for k in ("loss", "tokens_per_s", "mfu") if r.get(k) is not None)
                    lines.append(f"| CLI: {r['step']} | {'ok' if r['ok'] else 'FAILED'} | | | {r['seconds']} s; "
                                 f"{figures} |")
                elif "cli" in r:
                    replies = "; ".join(f"{k!r} -> {v!r}" for k, v in (r["cli"].get("replies") or {}).items())
                    lines.append(f"| CLI: replies | | | | {replies} |")
    return "\n".join(lines)


def goals(results: dict) -> list[str]:
    """The open GPU issues' goals, each with the figure this run gave and whether it is met (a row that did
    not run says so)."""
    out = []

    def verdict(name: str, ok: bool | None, figure: str) -> None:
        out.append(f"- {name}: {figure} -> {'met' if ok else 'NOT met' if ok is not None else 'not measured'}")

    sft = next((r for name, rows in results.items() if name.startswith("sft") for r in rows
                if "alaya" in r and "transformers+peft" in r), None)
    if sft:
        peft = sft["transformers+peft"]["tokens_per_s"]
        padded, packed = sft["alaya"]["tokens_per_s"] / peft, sft["alaya packed"]["tokens_per_s"] / peft
        verdict("LoRA SFT step >= 1.5x transformers + peft, padded rows", padded >= 1.5, f"{padded:.2f}x")
        verdict("LoRA SFT step >= 2x, packed rows", packed >= 2, f"{packed:.2f}x")
    else:
        verdict("LoRA SFT step against peft", None, "no row")
    train = next((r for name, rows in results.items() if name.startswith("train") and "compiled" in name
                  for r in rows if "alaya" in r and "transformers" in r), None)
    if train:
        a, t = train["alaya"], train["transformers"]
        mfu = a["tokens_per_s"] * a["flops_per_token"] / train["matmul_peak_flops"]
        ratio = a["tokens_per_s"] / t["tokens_per_s"]
        verdict("pretraining step, compiled, >= 60 % MFU and >= 1.5x transformers", mfu >= 0.6 and ratio >= 1.5,
                f"MFU {100 * mfu:.1f} %, {ratio:.2f}x")
    else:
        verdict("pretraining step, compiled", None, "no row")
    first = next((c["first_step_s"] for r in results.get("compile", []) for c in r.get("compile", {}).values()), None)
    verdict("train.compile first step (12 layers) within 40 s", None if first is None else first <= 40,
            "no row" if first is None else f"{first:.1f} s")
    decode = results.get("decode", [])
    bound = next((r["bound"] for r in decode if "bound" in r), {})
    for r in (r for r in decode if "batch" in r and "transformers tok/s" in r):
        sides = {n: r[f"{n} tok/s"] for n in ("alaya", "alaya graphs") if f"{n} tok/s" in r}
        best = max(sides, key=sides.get)
        ratio = sides[best] / r["transformers tok/s"]
        if r["batch"] == 1:
            share = bound.get("percent", {}).get(best)
            ok = None if share is None else share >= 50 and ratio >= 3
            verdict("decode batch 1 >= 50 % of the bandwidth bound and >= 3x transformers", ok,
                    f"{best}: {share if share is not None else '?'} %, {ratio:.2f}x")
        else:
            verdict(f"decode batch {r['batch']} >= 3x transformers", ratio >= 3, f"{best}: {ratio:.2f}x")
    equal = [(r["batch"], r["greedy rows equal to transformers"]) for r in decode
             if "greedy rows equal to transformers" in r]
    if equal:
        same = all(k == b for b, sides in equal for k in sides.values())
        verdict("greedy output token for token equal to transformers", same, ", ".join(
            f"batch {b}: " + ", ".join(f"{n} {k}/{b}" for n, k in sides.items()) for b, sides in equal))
    flex = next((r["flex_parity"] for r in results.get("flex parity", []) if "flex_parity" in r), None)
    verdict("flex forward and gradients within bf16's error of SDPA", None if flex is None else
            flex["ok"] and flex["gradients_checked"], "no row" if flex is None else
            f"worst {flex['worst_relative_error']:.1e}, gradients {'checked' if flex['gradients_checked'] else 'not checked'}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for each row's log and gpu-report.json")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--only", nargs="*", default=None, help="rows to run: train sft decode flex compile cli (default: all)")
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
            "flex parity": ("flex_parity.py", ["--preset", "alaya-tiny", "--layers", "2", "--seq-len", "256",
                                               "--batch", "2", "--iters", "1", "--device", "cpu"]),
            "compile": ("compile_time.py", ["--preset", "alaya-tiny", "--layers", "2", "--seq-len", "64",
                                            "--batch", "2", "--iters", "1", "--device", "cpu", "--modes", "each block"]),
            "cli": ("gpu_cli.py", ["--workdir", str(out / "cli"), "--device", "cpu", "--smoke"]),
            "server": ("server.py", ["--overhead", "--preset", "alaya-tiny", "--max-tokens", "16", "--repeats", "1",
                                     "--device", "cpu"]),
        }
        device = "cpu"
    else:
        model = ["--preset", "alaya-7b", "--layers", str(args.layers), "--device", "cuda"]
        jobs = {
            "train bf16 eager": ("train_step.py", model + ["--precision", "bf16", "--seq-len", "2048", "--batch", "4"]),
            "train bf16 compiled": ("train_step.py", model + ["--precision", "bf16", "--seq-len", "2048", "--batch",
                                                              "4", "--compile"]),
            "sft bf16": ("sft_step.py", model + ["--precision", "bf16", "--seq-len", "1024", "--batch", "8", "--repeats", "1",
                                                 "--pad-multiple", "128"]),
            "decode": ("decode.py", model + ["--batches", "1", "16", "--new-tokens", "64", "--prompt-len", "64",
                                             "--dtype", "bfloat16"]),
            "flex parity": ("flex_parity.py", ["--preset", "alaya-7b", "--layers", "2", "--seq-len", "2048",
                                               "--batch", "4", "--device", "cuda"]),
            # the 91 M model: 768 wide, 12 heads, 12 layers, 8192 tokens
            "compile": ("compile_time.py", ["--preset", "alaya-50m", "--d-model", "768", "--n-heads", "12",
                                            "--vocab", "8192", "--layers", "12", "--seq-len", "2048", "--batch", "8",
                                            "--precision", "bf16", "--device", "cuda", "--modes", "each block"]),
            "cli": ("gpu_cli.py", ["--workdir", str(out / "cli"), "--device", "cuda"]),
            "server": ("server.py", ["--overhead", "--preset", "alaya-50m", "--max-tokens", "128", "--device", "cuda"]),
        }
        device = "cuda"
    results, texts = {}, {}
    import importlib

    def importable(module: str) -> bool:
        try:
            importlib.import_module(module)
        except ImportError:
            return False
        return True

    for name, (script, script_args) in jobs.items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        missing = [m for m in ("fastapi", "uvicorn", "pydantic") if not importable(m)] if name == "server" else []
        if name == "server" and missing:
            why = f"skipped: {', '.join(missing)} not installed here (alaya serve needs them)"
            print(f"{name}: {why}", flush=True)
            results[name], texts[name] = [{"skipped": why}], why
            continue
        results[name], texts[name] = run(name.replace(" ", "-"), script, script_args, out, args.timeout)
    report = {"date": time.strftime("%Y-%m-%d"), "device": device, "machine": machine(device), "layers": args.layers,
              "smoke": args.smoke, "rows": results, "table": table(results, device), "goals": goals(results)}
    (out / "gpu-report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print()
    for name, text in texts.items():  # each script's own closing lines (machine, bound, ratios)
        tail = [ln for ln in text.splitlines() if ln and not ln.startswith(("{", "[", "$"))][-8:]
        print(f"--- {name}\n" + "\n".join(tail))
    print(f"\nGPU suite, {report['machine']}, {report['date']}\n" + report["table"])
    print("\nThe GPU issues' goals" + (" (a smoke run: tiny shapes on the CPU, not the goals' setting)" if args.smoke
                                        else "") + ":\n" + "\n".join(report["goals"]))


if __name__ == "__main__":
    main()
