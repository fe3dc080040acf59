"""What weight-only int8 (``--quantize int8``) costs in quality, on trained models: held-out perplexity (token
perplexity and bits per byte, ``alaya eval --task perplexity``) in fp32 and int8, and greedy agreement with
fp32 (share of prompts whose 128 new tokens are all equal; the mean position of the first difference).

Run:  python benchmarks/int8_quality.py alaya-quickstart [more quickstart work folders ...]
A work folder of ``alaya quickstart`` has the model (``model/``) and its held-out text (``heldout.jsonl``);
the first 60 characters of the first ``--prompts`` held-out documents (default 50) are the greedy prompts.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from machine import cpu_model  # noqa: E402 (benchmarks/machine.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdirs", nargs="+")
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()
    from alaya.eval.run import EvalSettings, run_eval
    from alaya.infer.generate import GenerationConfig, generate
    from alaya.infer.loading import load_for_inference

    print(f"CPU: {cpu_model()}")
    for w in map(Path, args.workdirs):
        model, held = w / "model", w / "heldout.jsonl"
        if not (model / "config.json").is_file() or not held.is_file():
            sys.exit(f"{w}: not a quickstart work folder (model/ and heldout.jsonl expected)")
        ppl = {}
        for q in ("none", "int8"):
            r = run_eval(str(model), [f"perplexity={held}"], settings=EvalSettings(progress=False), device="cpu",
                         dtype="float32", quantize=q)["results"]
            group = r.get("groups", {}).get("perplexity") or r["results"]["perplexity"]
            ppl[q] = {k.split(",")[0]: v for k, v in group.items()}
        fp32_backend, tok = load_for_inference(str(model), device="cpu", dtype="float32")
        fp32 = fp32_backend.model
        int8_backend, _ = load_for_inference(str(model), device="cpu", quantize="int8")
        int8 = int8_backend.model
        docs = [json.loads(line)["text"] for line in open(held, encoding="utf-8")][: args.prompts]
        prompts = [tok.encode(d[:60]) for d in docs]
        cfg = GenerationConfig(max_new_tokens=args.new_tokens, temperature=0, eos_token_id=-1)
        a, b = generate(fp32, prompts, cfg), generate(int8, prompts, cfg)
        same = sum(x == y for x, y in zip(a, b))
        first = [next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), args.new_tokens) for x, y in zip(a, b)]
        row = {"model": str(w), "params_M": round(fp32.config.num_parameters() / 1e6, 2),
               "token_ppl_fp32": round(ppl["none"]["token_perplexity"], 4),
               "token_ppl_int8": round(ppl["int8"]["token_perplexity"], 4),
               "ppl_change_pct": round(100 * (ppl["int8"]["token_perplexity"] / ppl["none"]["token_perplexity"] - 1), 3),
               "bpb_fp32": round(ppl["none"]["bits_per_byte"], 4), "bpb_int8": round(ppl["int8"]["bits_per_byte"], 4),
               "greedy_equal_share": round(same / len(prompts), 3),
               "mean_first_difference": round(sum(first) / len(first), 1), "prompts": len(prompts)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
