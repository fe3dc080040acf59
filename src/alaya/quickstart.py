"""``alaya quickstart``: the whole flow that exists so far, on the embedded corpus, in a few minutes on a laptop.

corpus -> tokenizer -> tiny MPT pretraining -> Hugging Face model folder -> a generated sample.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from alaya.data.documents import Quarantine, read_documents
from alaya.infer.generate import GenerationConfig, generate
from alaya.model.config import preset
from alaya.model.hf import load_model, save_model
from alaya.model.mpt import AlayaForCausalLM
from alaya.prompt import format_prompt
from alaya.tokenizer import AlayaTokenizer, chars_per_token, train_tokenizer
from alaya.train.data import pack_documents, random_windows, sequential_windows
from alaya.train.loop import OptimConfig, evaluate_loss, train_loop


def run_quickstart(
    workdir: str | Path = "alaya-quickstart",
    corpus: Sequence[str] = ("builtin:demo",),
    model_preset: str = "alaya-tiny",
    steps: int = 300,
    fast: bool = False,
    seed: int = 0,
    log=print,
) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if fast:
        steps = min(steps, 40)
    torch.manual_seed(seed)
    config = preset(model_preset)
    t_start = time.perf_counter()

    log(f"[1/4] reading {', '.join(corpus)}")
    quarantine = Quarantine()
    docs = list(tqdm(read_documents(corpus, quarantine), desc="documents", unit=" docs", leave=False))
    if not docs:
        raise ValueError(f"no documents in {list(corpus)}")
    if quarantine.count:
        log(f"      {quarantine.count} malformed records skipped, e.g. {quarantine.records[0].to_json()}")
    # every 10th document of each language is held out (perplexity, characters per token)
    seen: dict[str, int] = {}
    held_out, train_docs = [], []
    for d in docs:
        lang = d.meta.get("lang", "other")
        seen[lang] = seen.get(lang, 0) + 1
        (held_out if seen[lang] % 10 == 0 else train_docs).append(d)
    log(f"      {len(docs)} documents, {sum(len(d.text) for d in docs) / 1e6:.1f} M characters")

    log(f"[2/4] training a {config.vocab_size}-token byte-level BPE tokenizer")
    tokenizer = train_tokenizer((d.text for d in train_docs), vocab_size=config.vocab_size, show_progress=False)
    tokenizer.model_max_length = config.max_seq_len
    tok_dir = workdir / "tokenizer"
    tokenizer.save(tok_dir)
    stats = {}
    for lang in ("en", "zh", "code"):
        texts = [d.text for d in held_out if d.meta.get("lang") == lang]
        if texts:
            stats[lang] = round(chars_per_token(tokenizer, texts), 3)
    log(f"      characters per token on held-out text: {stats}")

    log(f"[3/4] pretraining {model_preset} ({config.num_parameters() / 1e6:.2f} M parameters) for {steps} steps")
    train_tokens = pack_documents(tokenizer.encode_batch([d.text for d in train_docs]), tokenizer.eos_id, config.vocab_size)
    eval_tokens = pack_documents(tokenizer.encode_batch([d.text for d in held_out]), tokenizer.eos_id, config.vocab_size)
    seq_len = min(128, config.max_seq_len)
    eval_windows = sequential_windows(eval_tokens, seq_len, max_windows=64)
    model = AlayaForCausalLM(config)
    precision = "fp32"
    ppl_before = math.exp(evaluate_loss(model, eval_windows, precision))
    gen = torch.Generator().manual_seed(seed)
    opt = OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=max(1, steps // 10), max_steps=steps)
    metrics_path = workdir / "metrics.jsonl"
    with open(metrics_path, "w", encoding="utf-8") as mf, tqdm(total=steps, desc="pretrain", unit=" step", mininterval=1.0) as bar:
        for m in train_loop(model, lambda: random_windows(train_tokens, seq_len, 16, gen), opt, precision):
            mf.write(json.dumps(m) + "\n")
            bar.set_postfix(loss=f"{m['loss']:.3f}", lr=f"{m['lr']:.1e}", tok_s=f"{m['tokens_per_s']:.0f}")
            bar.update(1)
    ppl_after = math.exp(evaluate_loss(model, eval_windows, precision))
    log(f"      held-out perplexity {ppl_before:.1f} -> {ppl_after:.1f}")

    log("[4/4] saving the model folder and generating a sample")
    model_dir = workdir / "model"
    save_model(model, model_dir, tokenizer=tokenizer)
    reloaded = load_model(model_dir)
    tok = AlayaTokenizer.load(model_dir)
    prompt = format_prompt("What is the capital of France?")
    ids = generate(reloaded, [tok.encode(prompt)], GenerationConfig(max_new_tokens=40, temperature=0))[0]
    sample = tok.decode(ids)
    log(f"      prompt: {prompt!r}")
    log(f"      greedy continuation: {sample!r}")
    summary = {
        "workdir": str(workdir.resolve()),
        "tokenizer": str(tok_dir.resolve()),
        "model": str(model_dir.resolve()),
        "metrics": str(metrics_path.resolve()),
        "chars_per_token": stats,
        "perplexity_before": round(ppl_before, 2),
        "perplexity_after": round(ppl_after, 2),
        "steps": steps,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"done in {summary['seconds']} s")
    log(f"  tokenizer: {summary['tokenizer']}")
    log(f"  model:     {summary['model']}   (loads with transformers.AutoModelForCausalLM.from_pretrained)")
    log(f"  metrics:   {summary['metrics']}")
    return summary
