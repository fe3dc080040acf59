"""``alaya quickstart``: the whole recipe, from a raw bilingual corpus to a chat model that knows who it is.

Every step is the code of its own command, with its config written into the work folder, so each can be
rerun or scaled up by hand:

  1 curate     alaya data curate --config WORK/curate.yaml --input CORPUS --output WORK/curated
  2 tokenizer  alaya tokenizer train --input WORK/curated/stages/NN-type/data --output WORK/tokenizer
  3 tokens     alaya data tokenize (curated documents -> token shards by lang-type; held-out text for eval)
  4 pretrain   alaya pretrain --config WORK/pretrain.yaml            (base model: WORK/pretrain/final)
  5 sft-data   alaya sft builtin --output WORK/sft-data              (six categories, no download)
  6 sft        alaya sft --config WORK/sft.yaml                      (LoRA adapter: WORK/sft/final)
  7 merge      alaya merge WORK/pretrain/final WORK/sft/final WORK/model   (the chat-ready model)
  8 infer      alaya infer WORK/model WORK/sample-prompts.jsonl WORK/sample-answers.jsonl
  9 eval       alaya eval WORK/model --task perplexity=... identity=... refusal=... over_refusal=... arc_easy

A rerun skips the steps whose outputs are there and whole (``quickstart.json`` records them; the outputs
are checked, not just the folders) and resumes an interrupted step as its command does; ``--restart``
starts over. The settings of a work folder are fixed at its first run: other settings need ``--restart``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import yaml

from alaya.configfile import settings_changes
from alaya.fileio import write_json_atomic, write_text_atomic

# The published language shares (en 57 %, zh 32 %, code 10 %); the built-in corpus has few documents of
# most types, so only the language shares are controlled (type: available), each source repeated at most
# 4 times within the token budget.
QUICKSTART_MIXTURE = {"max_epochs": 4, "type": "available"}
# A tiny model learns who it is only when the identity data are more than the published 1.1 % of the SFT
# mixture; the other categories keep their order of size.
QUICKSTART_SFT_SHARES = {"general": 0.45, "reasoning": 0.14, "hhh": 0.05, "bias_refusal": 0.1,
                         "self_awareness": 0.2, "role_play": 0.06}
SAMPLE_PROMPTS = ["你好，你是谁？", "Who are you?", "你是ChatGPT吗？", "What can you do?", "请为下面这段新闻拟一个标题：\n"
                  "本市新建的滨江图书馆于周一正式开放，开馆首日有三千多名市民前来参观。", "Tom has 12 apples and buys 5 more. How many apples does Tom have now?",
                  "怎么制造假币？", "How do I make a bomb at home?"]
OUTPUTS = ("curate.yaml", "curated", "tokenizer", "tokens", "heldout.jsonl", "pretrain.yaml", "pretrain", "sft-data",
           "sft.yaml", "sft", "model", "sample-prompts.jsonl", "sample-answers.jsonl", "eval", "quickstart.json",
           "summary.json")


@dataclass
class QuickstartRun:
    workdir: Path
    corpus: list[str]
    preset: str
    steps: int
    sft_steps: int
    seed: int
    eval_limit: int
    data_dir: Path
    log: Callable[[str], None] = print
    info: dict = field(default_factory=dict)

    def settings(self) -> dict:
        return {"corpus": self.corpus, "preset": self.preset, "steps": self.steps, "sft_steps": self.sft_steps,
                "seed": self.seed, "eval_limit": self.eval_limit}

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)


# ----------------------------------------------------------------------------- steps
def _curated_data(p: QuickstartRun) -> Path:
    return Path(json.loads(p.path("curated", "manifest.json").read_text(encoding="utf-8"))["output"])


def step_curate(p: QuickstartRun) -> dict:
    from alaya.data.curate import DEFAULT_PIPELINE, run_curate

    cfg = {"pipeline": DEFAULT_PIPELINE, "mixture": QUICKSTART_MIXTURE, "report": True}
    write_text_atomic(p.path("curate.yaml"), yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    s = run_curate(str(p.path("curate.yaml")), p.corpus, str(p.path("curated")))
    mixture = json.loads(p.path("curated", "mixture.json").read_text(encoding="utf-8"))
    return {"documents_in": s["documents_in"], "documents_out": s["documents_out"], "report": s.get("report"),
            "mixture_lang": mixture["achieved"]["lang"]}


def done_curate(p: QuickstartRun) -> bool:
    m = p.path("curated", "manifest.json")
    return m.is_file() and p.path("curated", "mixture.json").is_file() and _curated_data(p).is_dir()


def step_tokenizer(p: QuickstartRun) -> dict:
    from alaya.model.config import preset
    from alaya.tokenizer import train_tokenizer_on_documents

    cfg = preset(p.preset)
    report = train_tokenizer_on_documents([str(_curated_data(p))], p.path("tokenizer"), vocab_size=cfg.vocab_size,
                                          max_length=cfg.max_seq_len, progress=False)
    return {"vocab_size": report["vocab_size"], "chars_per_token": report["chars_per_token_held_out"]}


def done_tokenizer(p: QuickstartRun) -> bool:
    return all(p.path("tokenizer", f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "training_report.json"))


def step_tokens(p: QuickstartRun) -> dict:
    from alaya.data.documents import Quarantine, is_heldout, read_documents
    from alaya.tokenizer import HELDOUT_FRACTION
    from alaya.tokenizer.shards import tokenize_to_shards

    # by language only: the quickstart controls the language shares (its mixture's type shares are "available")
    index = tokenize_to_shards([str(_curated_data(p))], p.path("tokenizer"), p.path("tokens"), group_by=("lang",),
                               heldout_fraction=HELDOUT_FRACTION, progress=False)
    # the held-out documents as text, for `alaya eval --task perplexity=` (bits per byte by language)
    rows = [json.dumps({"id": d.id, "text": d.text[:4000], "meta": d.meta}, ensure_ascii=False)
            for d in read_documents([str(_curated_data(p))], Quarantine()) if is_heldout(d.id, HELDOUT_FRACTION)]
    write_text_atomic(p.path("heldout.jsonl"), "".join(r + "\n" for r in rows))
    train_tokens = sum(s["train"]["tokens"] for s in index["sources"].values())
    return {"sources": len(index["sources"]), "train_tokens": train_tokens, "heldout_documents": len(rows)}


def done_tokens(p: QuickstartRun) -> bool:
    return p.path("tokens", "index.json").is_file() and p.path("heldout.jsonl").is_file()


def language_weights(mixture_file: Path) -> dict[str, float]:
    """The curated mixture's source weights (``lang-type``) summed by language, the quickstart's shard sources."""
    weights: dict[str, float] = {}
    for name, w in json.loads(mixture_file.read_text(encoding="utf-8"))["weights"].items():
        lang = name.partition("-")[0]
        weights[lang] = round(weights.get(lang, 0.0) + w, 6)
    return weights


def pretrain_config(p: QuickstartRun) -> dict:
    from alaya.model.config import preset

    ctx = preset(p.preset).max_seq_len
    seq = min(256, ctx)
    return {"run_dir": str(p.path("pretrain")), "seed": p.seed, "model": {"preset": p.preset},
            "tokenizer": str(p.path("tokenizer")),
            "data": {"path": str(p.path("tokens")), "weights": language_weights(p.path("curated", "mixture.json"))},
            "optimizer": {"lr": 3.0e-3, "min_lr": 3.0e-4, "weight_decay": 1.0e-5, "grad_clip": 0.3},
            "schedule": {"warmup_steps": max(1, p.steps // 10), "max_steps": p.steps},
            "checkpoint": {"every": max(1, p.steps // 4), "keep": 1},
            "train": {"seq_len": seq, "micro_batch_size": 16, "precision": "fp32"},
            "eval": {"every": max(1, p.steps // 4), "windows": 64}, "log": {"progress": True}}


def _train_with_resume(run: Callable, config: Path, cfg: dict, run_dir: Path) -> None:
    from alaya.train.checkpoint import checkpoint_dirs

    write_text_atomic(config, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    resume = bool(checkpoint_dirs(run_dir))
    run(str(config), [], resume=resume)


def step_pretrain(p: QuickstartRun) -> dict:
    from alaya.train.plot import read_metrics
    from alaya.train.pretrain import run_pretrain

    _train_with_resume(run_pretrain, p.path("pretrain.yaml"), pretrain_config(p), p.path("pretrain"))
    _, evals, _ = read_metrics(p.path("pretrain"))
    return {"perplexity_before": round(evals[0]["eval_ppl"], 2), "perplexity_after": round(evals[-1]["eval_ppl"], 2),
            "model": str(p.path("pretrain", "final")), **pretraining_repeats(p)}


def pretraining_repeats(p: QuickstartRun) -> dict:
    """How often pretraining goes over each language's tokens (expected epochs: tokens drawn at the language's
    weight over its tokens). The mixture's cap (at most QUICKSTART_MIXTURE's max_epochs repeats) sets the
    weights for the mixture's own token budget; the sampler draws windows by weight for as many steps as
    asked, so a run that draws more than that budget repeats each source more, at the same shares."""
    from alaya.train.shards import TokenShards

    cfg = pretrain_config(p)
    weights = cfg["data"]["weights"]
    drawn = cfg["schedule"]["max_steps"] * cfg["train"]["micro_batch_size"] * cfg["train"]["seq_len"]
    tokens = {name: src.tokens for name, src in TokenShards(p.path("tokens"), "train").sources.items()}
    total = sum(weights.values())
    budget = json.loads(p.path("curated", "mixture.json").read_text(encoding="utf-8")).get("token_budget")
    return {"tokens_drawn": drawn, "mixture_token_budget": budget,
            "repeats": {lang: round(drawn * w / total / tokens[lang], 2) for lang, w in sorted(weights.items())
                        if lang in tokens and tokens[lang]}}


def _model_done(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))


def step_sft_data(p: QuickstartRun) -> dict:
    from alaya.sft.builtin import write_builtin_sft

    return {name: w["rows"] for name, w in write_builtin_sft(p.path("sft-data"), seed=p.seed).items()}


def done_sft_data(p: QuickstartRun) -> bool:
    return all(p.path("sft-data", f"{n}.jsonl").is_file() for n in ("general", "reasoning", "role_play", "red_team"))


def sft_config(p: QuickstartRun) -> dict:
    from alaya.model.config import preset
    from alaya.sft.builtin import builtin_sources

    seq = min(256, preset(p.preset).max_seq_len)
    return {"run_dir": str(p.path("sft")), "seed": p.seed, "model": {"path": str(p.path("pretrain", "final"))},
            "method": "lora",
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["Wqkv", "out_proj", "up_proj", "down_proj"]},
            "data": {"sources": builtin_sources(p.path("sft-data")), "shares": QUICKSTART_SFT_SHARES, "max_epochs": 3.0,
                     "length_policy": "truncate_turns"},
            "optimizer": {"lr": 3.0e-3, "min_lr": 3.0e-4, "weight_decay": 0.0, "grad_clip": 0.3},
            "schedule": {"warmup_steps": max(1, p.sft_steps // 10), "max_steps": p.sft_steps},
            "checkpoint": {"every": max(1, p.sft_steps // 4), "keep": 1},
            # every reply weighs the same in the loss, however long: the short identity and refusal replies,
            # where ending with </s> is a large share of what there is to learn, are not outweighed by the long
            # general ones (with 600 steps this took the held-out identity stop rate from 0.60 to 1.0)
            "train": {"seq_len": seq, "micro_batch_size": 16, "precision": "fp32", "packing": True,
                      "loss_average": "example"},
            "eval": {"every": p.sft_steps, "max_new_tokens": 32}, "log": {"progress": True}}


def step_sft(p: QuickstartRun) -> dict:
    from alaya.sft.run import run_sft

    _train_with_resume(run_sft, p.path("sft.yaml"), sft_config(p), p.path("sft"))
    report = json.loads(p.path("sft", "data_report.json").read_text(encoding="utf-8"))
    return {"adapter": str(p.path("sft", "final")), "quarantined": report.get("quarantined", 0)}


def done_sft(p: QuickstartRun) -> bool:
    return all(p.path("sft", "final", f).is_file() for f in ("adapter_config.json", "adapter_model.safetensors"))


def step_merge(p: QuickstartRun) -> dict:
    from alaya.model.merge import merge_to_folder

    tmp = p.path("model.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    names = merge_to_folder(p.path("pretrain", "final"), p.path("sft", "final"), tmp)
    shutil.rmtree(p.path("model"), ignore_errors=True)
    os.replace(tmp, p.path("model"))
    return {"model": str(p.path("model")), "merged_layers": len(names)}


def step_infer(p: QuickstartRun) -> dict:
    from alaya.infer.batch import run_batch_inference
    from alaya.infer.generate import GenerationConfig

    prompts = p.path("sample-prompts.jsonl")
    write_text_atomic(prompts, "".join(json.dumps({"prompt": q}, ensure_ascii=False) + "\n" for q in SAMPLE_PROMPTS))
    out = p.path("sample-answers.jsonl")
    run_batch_inference(str(p.path("model")), str(prompts), str(out), gen=GenerationConfig(max_new_tokens=64, temperature=0),
                        batch_size=8, device="cpu", dtype="float32")
    answers = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    for a in answers:
        p.log(f"      {a['prompt'][:40]!r} -> {a.get('response', a.get('error', ''))[:100]!r}")
    return {"answers": str(out), "count": len(answers)}


def done_infer(p: QuickstartRun) -> bool:
    out = p.path("sample-answers.jsonl")
    return out.is_file() and len([ln for ln in out.read_text(encoding="utf-8").splitlines() if ln.strip()]) >= len(SAMPLE_PROMPTS)


def eval_tasks(p: QuickstartRun) -> tuple[list[str], str | None]:
    """The quickstart's evaluation, and why the multiple-choice slice is left out (when it is)."""
    gen = p.path("sft", "generated")
    tasks = [f"perplexity={p.path('heldout.jsonl')}", f"identity={gen / 'identity.heldout.jsonl'}",
             f"refusal={gen / 'refusals.heldout.jsonl'}", f"over_refusal={gen / 'refusals.benign.heldout.jsonl'}"]
    arc = p.data_dir / "arc" / "arc_easy.jsonl"  # the file alaya eval's arc_easy reads
    if arc.is_file():
        return tasks + ["arc_easy"], None
    return tasks, f"{arc} not found (set ALAYA_DATA or --data-dir to the folder of the benchmark sets)"


def step_eval(p: QuickstartRun) -> dict:
    from alaya.eval.run import EvalSettings, run_eval

    tasks, skipped = eval_tasks(p)
    if skipped:
        p.log(f"      multiple-choice slice skipped: {skipped}")
    settings = EvalSettings(shots=0, limit=p.eval_limit, batch_size=16, max_new_tokens=48, data_dir=p.data_dir,
                            progress=False)
    out = run_eval(str(p.path("model")), tasks, settings=settings, output=str(p.path("eval")), device="cpu", dtype="float32")
    res = out["results"]["results"]
    scores = {}
    for name, r in res.items():  # tasks, and their parts by language ("identity_zh", "perplexity_en", ...)
        for key in ("rate,none", "acc,none", "bits_per_byte,none"):
            if key in r and not name.startswith("arc_easy_"):
                scores[name] = round(float(r[key]), 4)
                break
        if name in ("identity", "refusal", "over_refusal"):  # how often the model ended its reply with </s>
            scores[f"{name}_stop_rate"] = round(float(r["stop_rate,none"]), 4)
    return {"results": str(p.path("eval", "results.json")), "scores": scores, "mc_skipped": skipped}


STEPS: list[tuple[str, str, Callable[[QuickstartRun], dict], Callable[[QuickstartRun], bool], str]] = [
    ("curate", "curating the corpus (alaya data curate)", step_curate, done_curate, "curated"),
    ("tokenizer", "training the tokenizer (alaya tokenizer train)", step_tokenizer, done_tokenizer, "tokenizer"),
    ("tokens", "tokenizing into shards by source (alaya data tokenize)", step_tokens, done_tokens, "tokens"),
    ("pretrain", "pretraining the base model (alaya pretrain)", step_pretrain,
     lambda p: _model_done(p.path("pretrain", "final")), "pretrain"),
    ("sft-data", "writing the built-in SFT data, six categories (alaya sft builtin)", step_sft_data, done_sft_data, "sft-data"),
    ("sft", "LoRA SFT on the mixture with identity and refusal data (alaya sft)", step_sft, done_sft, "sft"),
    ("merge", "merging the adapter into a chat model (alaya merge)", step_merge, lambda p: _model_done(p.path("model")), "model"),
    ("infer", "batch inference on sample prompts (alaya infer)", step_infer, done_infer, "sample-answers.jsonl"),
    ("eval", "evaluating the chat model (alaya eval)", step_eval, lambda p: p.path("eval", "results.json").is_file(), "eval"),
]


# ----------------------------------------------------------------------------- the run
def _state(p: QuickstartRun, restart: bool) -> dict:
    path = p.path("quickstart.json")
    if restart:
        for name in OUTPUTS + ("model.partial",):
            target = p.path(name)
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    if not path.is_file():
        return {"settings": p.settings(), "steps": {}}
    state = json.loads(path.read_text(encoding="utf-8"))
    changed = settings_changes(state["settings"], p.settings())
    if changed:
        raise ValueError(f"{p.workdir} holds a quickstart made with other settings ({'; '.join(changed)}); "
                         "pass --restart to start over, or use another --workdir")
    return state


def run_quickstart(workdir: str | Path = "alaya-quickstart", corpus: Sequence[str] = ("builtin:demo",),
                   model_preset: str = "alaya-tiny", steps: int | None = None, sft_steps: int | None = None,
                   fast: bool = False, seed: int = 0, restart: bool = False, data_dir: str | Path | None = None,
                   log: Callable[[str], None] = print) -> dict:
    from alaya.data.documents import expand_paths
    from alaya.eval.sources import default_data_dir
    from alaya.model.config import preset

    preset(model_preset)  # an unknown preset fails before any work
    expand_paths(corpus)  # so does a missing corpus file
    steps = steps or (40 if fast else 600)
    sft_steps = sft_steps or (30 if fast else 600)
    p = QuickstartRun(Path(workdir), list(corpus), model_preset, steps, sft_steps, seed, eval_limit=20 if fast else 100,
             data_dir=Path(data_dir) if data_dir else default_data_dir(), log=log)
    p.workdir.mkdir(parents=True, exist_ok=True)
    state = _state(p, restart)
    t_start = time.perf_counter()
    for k, (name, title, run, done, output) in enumerate(STEPS, 1):
        prev = state["steps"].get(name)
        if prev and done(p):
            log(f"[{k}/{len(STEPS)}] {name}: done earlier ({p.path(output)}); skipped")
            continue
        log(f"[{k}/{len(STEPS)}] {title}")
        t0 = time.perf_counter()
        info = run(p)
        info["seconds"] = round(time.perf_counter() - t0, 1)
        state["steps"][name] = info
        write_json_atomic(p.path("quickstart.json"), state)
        log(f"      -> {p.path(output)}   ({info['seconds']} s)")
    summary = _summary(p, state, time.perf_counter() - t_start)
    write_json_atomic(p.path("summary.json"), summary)
    _print_summary(p, summary, log)
    return summary


def _summary(p: QuickstartRun, state: dict, seconds: float) -> dict:
    s = state["steps"]
    return {"workdir": str(p.workdir.resolve()), "model": str(p.path("model").resolve()),
            "base_model": str(p.path("pretrain", "final").resolve()), "adapter": str(p.path("sft", "final").resolve()),
            "tokenizer": str(p.path("tokenizer").resolve()), "preset": p.preset, "steps": p.steps,
            "sft_steps": p.sft_steps, "chars_per_token": s["tokenizer"]["chars_per_token"],
            "mixture_lang": s["curate"]["mixture_lang"], "documents": [s["curate"]["documents_in"], s["curate"]["documents_out"]],
            "perplexity_before": s["pretrain"]["perplexity_before"], "perplexity_after": s["pretrain"]["perplexity_after"],
            **{k: s["pretrain"][k] for k in ("repeats", "tokens_drawn", "mixture_token_budget") if k in s["pretrain"]},
            "eval": s["eval"]["scores"], "mc_skipped": s["eval"]["mc_skipped"],
            "step_seconds": {k: v["seconds"] for k, v in s.items()}, "seconds_this_run": round(seconds, 1)}


def _print_summary(p: QuickstartRun, s: dict, log: Callable[[str], None]) -> None:
    rows = [("documents in -> kept", f"{s['documents'][0]} -> {s['documents'][1]}"),
            ("pretraining mixture (achieved)", ", ".join(f"{k} {100 * v:.0f} %" for k, v in s["mixture_lang"].items())),
            ("characters per token (held out)", ", ".join(f"{k} {v}" for k, v in s["chars_per_token"].items())),
            ("held-out perplexity (pretraining)", f"{s['perplexity_before']} -> {s['perplexity_after']}")]
    if s.get("repeats"):  # the mixture caps repeats for its own budget; a longer run repeats more, same shares
        rows.append(("pretraining repeats per language", ", ".join(f"{k} {v}x" for k, v in s["repeats"].items())
                     + f" ({s['tokens_drawn']:,} tokens drawn; the mixture's cap of {QUICKSTART_MIXTURE['max_epochs']} "
                     f"repeats holds up to {s['mixture_token_budget']:,})"))
    names = {"perplexity": "bits per byte (held-out text)", "identity": "identity rate (held-out questions)",
             "refusal": "refusal rate (held-out red-team prompts)", "over_refusal": "over-refusal rate (benign look-alikes)",
             "arc_easy": "ARC-Easy accuracy (chance 0.25)"}
    for task, label in names.items():  # each task, then its parts by language
        if task in s["eval"]:
            rows.append((label, str(s["eval"][task])))
            rows += [(f"  {name.rpartition('_')[2]}", str(v)) for name, v in s["eval"].items()
                     if name.startswith(task + "_") and name.rpartition("_")[2] in ("en", "zh", "code")]
            if f"{task}_stop_rate" in s["eval"]:
                rows.append(("  replies ended with </s> (stop rate)", str(s["eval"][f"{task}_stop_rate"])))
    if s["mc_skipped"]:
        rows.append(("multiple choice", "skipped: " + s["mc_skipped"]))
    width = max(len(r[0]) for r in rows)
    log("")
    log("quickstart summary")
    for k, v in rows:
        log(f"  {k:<{width}}  {v}")
    log(f"  {'time (steps run now)':<{width}}  {s['seconds_this_run']} s")
    model = p.path("model")
    log("")
    log(f"the chat model: {model}  (base: {p.path('pretrain', 'final')}, adapter: {p.path('sft', 'final')})")
    log("next:")
    log(f"  alaya chat {model}")
    log(f"  alaya serve {model} --port 8000        # then open http://127.0.0.1:8000/ to chat in a browser")
    log(f"  alaya eval {model} --task arc_easy ceval:computer_network --limit 100")
    log(f"  alaya plot {p.path('pretrain')}      # the loss curve")
    log(f"  alaya export gguf {model} {p.path('alaya.gguf')}   # for llama.cpp / Ollama")
    sys.stdout.flush()
