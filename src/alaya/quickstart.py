"""``alaya quickstart``: the whole flow on the embedded corpus, in a few minutes on a laptop.

corpus -> tokenizer -> token shards -> ``alaya pretrain`` (the same loop, checkpoints and metrics as any
run) -> Hugging Face model folder -> a generated sample.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from alaya.data.documents import Quarantine, read_documents
from alaya.infer.generate import GenerationConfig, generate
from alaya.model.config import preset
from alaya.model.hf import load_model
from alaya.prompt import format_prompt
from alaya.tokenizer import AlayaTokenizer, chars_per_token, train_tokenizer
from alaya.train.plot import read_metrics
from alaya.train.pretrain import run_pretrain
from alaya.train.shards import tokenize_to_shards


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
    config = preset(model_preset)
    t_start = time.perf_counter()

    log(f"[1/4] reading {', '.join(corpus)} and training a {config.vocab_size}-token byte-level BPE tokenizer")
    quarantine = Quarantine()
    docs = list(tqdm(read_documents(corpus, quarantine), desc="documents", unit=" docs", leave=False))
    if not docs:
        raise ValueError(f"no documents in {list(corpus)}")
    if quarantine.count:
        log(f"      {quarantine.count} malformed records skipped, e.g. {quarantine.records[0].to_json()}")
    seen: dict[str, int] = {}
    held_out, train_docs = [], []
    for d in docs:  # every 10th document of each language is held out for characters per token
        lang = d.meta.get("lang", "other")
        seen[lang] = seen.get(lang, 0) + 1
        (held_out if seen[lang] % 10 == 0 else train_docs).append(d)
    log(f"      {len(docs)} documents, {sum(len(d.text) for d in docs) / 1e6:.1f} M characters")
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

    log("[2/4] tokenizing into shards by source (alaya data tokenize)")
    tokens_dir = workdir / "tokens"
    shutil.rmtree(tokens_dir, ignore_errors=True)  # the tokenizer was just retrained
    tokenize_to_shards(list(corpus), tok_dir, tokens_dir, heldout_fraction=0.1, processes=1, progress=False)

    log(f"[3/4] pretraining {model_preset} ({config.num_parameters() / 1e6:.2f} M parameters) for {steps} steps "
        f"(alaya pretrain)")
    for stale in ("checkpoints", "final", "metrics.jsonl"):  # a quickstart always starts fresh
        path = workdir / stale
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    seq_len = min(128, config.max_seq_len)
    overrides = [f"run_dir={workdir}", f"seed={seed}", f"model.preset={model_preset}", f"data.path={tokens_dir}",
                 f"tokenizer={tok_dir}", "optimizer.lr=3.0e-3", "optimizer.min_lr=3.0e-4",
                 f"schedule.warmup_steps={max(1, steps // 10)}", f"schedule.max_steps={steps}",
                 f"train.seq_len={seq_len}", "train.micro_batch_size=16", "train.precision=fp32",
                 f"checkpoint.every={steps}", "checkpoint.keep=1", f"eval.every={steps}", "eval.windows=64"]
    run_pretrain(None, overrides)
    _, evals, _ = read_metrics(workdir)
    ppl_before, ppl_after = evals[0]["eval_ppl"], evals[-1]["eval_ppl"]
    log(f"      held-out perplexity {ppl_before:.1f} -> {ppl_after:.1f}")

    log("[4/4] the model folder and a generated sample")
    model_dir = workdir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(workdir / "final", model_dir)
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
        "metrics": str((workdir / "metrics.jsonl").resolve()),
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
    log(f"  metrics:   {summary['metrics']}   (draw them: alaya plot {workdir})")
    return summary
