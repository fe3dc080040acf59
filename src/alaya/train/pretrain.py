"""``alaya pretrain``: the run folder, data, model, optimizer and the loop, in one place.

Run folder (DESIGN.md section 3): ``config.yaml`` (resolved), ``metrics.jsonl`` (a line per step, eval
lines, ``{"event": "resume"}`` lines), ``checkpoints/step-N``, ``final/`` (a model folder), and when the
data were raw documents, ``tokenizer/`` and ``tokens/``. The same code runs in one process and under
torchrun (DDP or FSDP2); every rank draws the same global batch and trains on its slice.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from alaya.model.config import preset
from alaya.model.hf import load_model, save_model
from alaya.model.mpt import AlayaForCausalLM
from alaya.tokenizer import AlayaTokenizer
from alaya.train import distributed
from alaya.train.checkpoint import checkpoint_dirs, load_latest, save_checkpoint
from alaya.train.config import ConfigError, dump_config, load_config
from alaya.train.data import MixtureSampler
from alaya.train.flops import measure_matmul_peak, mfu
from alaya.train.loop import evaluate_loss, train_step
from alaya.train.optim import DecoupledAdamW, cosine_lr
from alaya.train.shards import INDEX, TokenShards, tokenize_to_shards

# keys that may differ between a run and its resumption without changing what is computed
_RESUME_FREE = {("train", "stop_after"), ("log", "progress"), ("log", "every"), ("train", "compile"),
                ("checkpoint", "keep"), ("train", "peak_tflops")}


def _log(d: distributed.Dist, msg: str) -> None:
    if d.main:
        print(msg, file=sys.stderr, flush=True)


def prepare_data(cfg: dict, run_dir: Path, d: distributed.Dist, vocab_size: int) -> tuple[Path, Path]:
    """The token-shard folder and tokenizer folder of the run; raw documents are tokenized first."""
    path = cfg["data"]["path"]
    paths = path if isinstance(path, list) else [path]
    if len(paths) == 1 and (Path(str(paths[0])) / INDEX).is_file():
        data = Path(paths[0])
        tok_dir = Path(cfg["tokenizer"] or json.loads((data / INDEX).read_text(encoding="utf-8"))["tokenizer"])
        return data, tok_dir
    tok_dir = Path(cfg["tokenizer"]) if cfg["tokenizer"] else run_dir / "tokenizer"
    data = run_dir / "tokens"
    if d.main:
        if not (tok_dir / "tokenizer.json").is_file():
            from alaya.data.documents import read_texts
            from alaya.tokenizer import train_tokenizer

            _log(d, f"training a {vocab_size}-token tokenizer on {paths} into {tok_dir}")
            tok = train_tokenizer(read_texts(paths), vocab_size=vocab_size, show_progress=cfg["log"]["progress"])
            tok.save(tok_dir)
        if not (data / INDEX).is_file():
            _log(d, f"tokenizing {paths} into {data}")
            tokenize_to_shards([str(p) for p in paths], tok_dir, data, heldout_fraction=0.02,
                               progress=cfg["log"]["progress"])
    distributed.barrier(d)
    return data, tok_dir


def build_model(cfg: dict) -> AlayaForCausalLM:
    m = dict(cfg["model"])
    if "path" in m:
        path = m.pop("path")
        if m:
            raise ConfigError(f"model.path is set; model fields {sorted(m)} cannot change a trained model")
        return load_model(path)
    name = m.pop("preset")
    return AlayaForCausalLM(preset(name, **m))


def _metrics_file(run_dir: Path, resume_step: int | None) -> Path:
    """metrics.jsonl, cut back to the checkpoint's step when resuming (the steps after it are redone)."""
    path = run_dir / "metrics.jsonl"
    if resume_step is not None and path.exists():
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by the kill
            if rec.get("step", 0) <= resume_step:
                kept.append(line)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(l + "\n" for l in kept), encoding="utf-8")
        os.replace(tmp, path)
    return path


def _check_resume_config(run_dir: Path, cfg: dict) -> None:
    import yaml

    old_path = run_dir / "config.yaml"
    if not old_path.exists():
        return
    old = yaml.safe_load(old_path.read_text(encoding="utf-8"))
    diffs = []
    for section, value in cfg.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if (section, k) not in _RESUME_FREE and (old.get(section) or {}).get(k) != v:
                    diffs.append(f"{section}.{k}: {(old.get(section) or {}).get(k)!r} -> {v!r}")
        elif old.get(section) != value:
            diffs.append(f"{section}: {old.get(section)!r} -> {value!r}")
    if diffs:
        raise ConfigError("--resume with a config that changes the run: " + "; ".join(diffs)
                          + " (only train.stop_after, train.compile, train.peak_tflops, checkpoint.keep and log.* may change)")


def eval_windows(folder: Path, seq_len: int, limit: int) -> torch.Tensor | None:
    try:
        held = TokenShards(folder, "heldout")
    except ValueError:
        return None
    rows = []
    per_source = max(1, limit // len(held.sources))
    for src in held.sources.values():
        for arr in src.shards:
            n = min(len(arr) // seq_len, per_source - sum(1 for r in rows if r[0] == src.name))
            rows += [(src.name, arr[i * seq_len : (i + 1) * seq_len]) for i in range(max(0, n))]
    if not rows:
        return None
    return torch.stack([torch.from_numpy(r[1].astype("int64")) for r in rows[:limit]])


def run_pretrain(config_path: str | None, overrides: list[str], resume: bool = False) -> dict | None:
    cfg = load_config(config_path, overrides)
    t, o, s = cfg["train"], cfg["optimizer"], cfg["schedule"]
    d = distributed.init(t["device"])
    run_dir = Path(cfg["run_dir"])
    try:
        if checkpoint_dirs(run_dir) and not resume:
            raise ConfigError(f"{run_dir} already holds checkpoints; pass --resume to continue it, or set run_dir")
        if resume:
            _check_resume_config(run_dir, cfg)
        if d.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, run_dir / "config.yaml")
        distributed.barrier(d)

        torch.manual_seed(cfg["seed"])  # the same initial weights on every rank
        model = build_model(cfg)
        mc = model.config
        if t["seq_len"] > mc.max_seq_len:
            raise ConfigError(f"train.seq_len {t['seq_len']} exceeds model max_seq_len {mc.max_seq_len}")
        data_dir, tok_dir = prepare_data(cfg, run_dir, d, mc.vocab_size)
        shards = TokenShards(data_dir, "train")
        if shards.vocab_size > mc.vocab_size:
            raise ConfigError(f"the data's tokenizer has {shards.vocab_size} tokens but model vocab_size is {mc.vocab_size}")
        weights = cfg["data"]["weights"]
        if cfg["data"]["mixture"]:
            weights = json.loads(Path(cfg["data"]["mixture"]).read_text(encoding="utf-8"))["weights"]
        sampler = MixtureSampler(shards.sources, weights, t["seq_len"], cfg["seed"])
        evals = eval_windows(data_dir, t["seq_len"], cfg["eval"]["windows"])

        model.activation_checkpointing = t["activation_checkpointing"]
        model.to(d.device)
        model = distributed.wrap(model, t["parallel"], d, t["precision"])
        if t["compile"]:
            model.compile()
        opt = DecoupledAdamW(model.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                             weight_decay=o["weight_decay"])
        step, tokens = 0, 0
        resumed = None
        if resume:
            found = load_latest(run_dir, model, opt)
            if found is None:
                _log(d, f"no checkpoint in {run_dir}; starting from step 0")
            else:
                state, path = found
                step, tokens = state["step"], state["tokens"]
                sampler.load_state_dict(state["sampler"])
                resumed = step
                _log(d, f"resumed from {path} (step {step}, {tokens} tokens)")
        metrics_path = _metrics_file(run_dir, resumed if resume else None) if d.main else None
        if d.main and not resume and metrics_path.exists():
            metrics_path.unlink()
        metrics = open(metrics_path, "a", encoding="utf-8") if d.main else None

        def log(rec: dict) -> None:
            if metrics is not None:
                metrics.write(json.dumps(rec) + "\n")
                metrics.flush()

        if resumed is not None:
            log({"event": "resume", "step": step, "tokens": tokens, "time": time.time()})
        peak = (t["peak_tflops"] * 1e12) if t["peak_tflops"] else measure_matmul_peak(d.device, t["precision"])
        flops_tok = mc.flops_per_token(t["seq_len"])
        global_batch = t["micro_batch_size"] * d.world * t["grad_accum"]
        _log(d, f"{mc.num_parameters() / 1e6:.2f} M parameters, {d.world} process(es) ({t['parallel']}), global batch "
                f"{global_batch} × {t['seq_len']}, {t['precision']}, sources {sampler.weights}")
        bar = tqdm(total=s["max_steps"], initial=step, desc="pretrain", unit=" steps", mininterval=1.0,
                   disable=not (d.main and cfg["log"]["progress"]))
        last, last_eval = {}, {}
        if evals is not None and step == 0:  # the starting point of the held-out curve
            eval_loss = distributed.all_mean(evaluate_loss(model, evals, t["precision"], device=d.device), d)
            log({"step": 0, "tokens": 0, "eval_loss": round(eval_loss, 6), "eval_ppl": round(math.exp(min(eval_loss, 50)), 3)})
        while step < s["max_steps"]:
            t0 = time.perf_counter()
            micro = sampler.global_batch(t["micro_batch_size"], d.world, t["grad_accum"], d.rank)
            step += 1
            lr = cosine_lr(step, o["lr"], o["min_lr"], s["warmup_steps"], s["max_steps"])
            loss, norm = train_step(model, opt, micro, lr, o["grad_clip"], t["precision"], device=d.device)
            loss = distributed.all_mean(loss, d)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {step}; lower optimizer.lr or use fp32")
            dt = time.perf_counter() - t0
            n = global_batch * t["seq_len"]
            tokens += n
            tps = n / dt
            last = {"step": step, "loss": round(loss, 6), "lr": lr, "grad_norm": round(norm, 6), "tokens": tokens,
                    "tokens_per_s": round(tps, 1), "mfu": round(mfu(tps / d.world, flops_tok, peak), 4),
                    "time": time.time()}
            if step % cfg["log"]["every"] == 0 or step == s["max_steps"]:
                log(last)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:.0f}", mfu=f"{100 * last['mfu']:.1f}%")
            if evals is not None and (step % cfg["eval"]["every"] == 0 or step == s["max_steps"]):
                eval_loss = distributed.all_mean(evaluate_loss(model, evals, t["precision"], device=d.device), d)
                last_eval = {"step": step, "tokens": tokens, "eval_loss": round(eval_loss, 6),
                             "eval_ppl": round(math.exp(min(eval_loss, 50)), 3)}
                log(last_eval)
            if step % cfg["checkpoint"]["every"] == 0 or step == s["max_steps"]:
                save_checkpoint(run_dir, model, opt, {"step": step, "tokens": tokens, "sampler": sampler.state_dict(),
                                                      "config": cfg}, keep=cfg["checkpoint"]["keep"])
            if t["stop_after"] is not None and step >= t["stop_after"] and step < s["max_steps"]:
                _log(d, f"stopping after step {step} (train.stop_after)")
                bar.close()
                distributed.barrier(d)  # leave together: tearing gloo down under a busy peer can abort it
                return {"run_dir": str(run_dir), "stopped": True, **last} if d.main else None
        bar.close()
        final = run_dir / "final"
        _save_final(model, final, tok_dir, d)
        if metrics is not None:
            metrics.close()
        distributed.barrier(d)  # leave together: tearing gloo down under a busy peer can abort it
        if not d.main:
            return None
        return {"run_dir": str(run_dir), "final": str(final), **last,
                **{k: v for k, v in last_eval.items() if k.startswith("eval")}}
    finally:
        distributed.shutdown()


def _save_final(model: torch.nn.Module, folder: Path, tok_dir: Path, d: distributed.Dist) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if d.main:
        inner = distributed.unwrap(model)
        clean = AlayaForCausalLM(inner.config)
        clean.load_state_dict({k: v.float() for k, v in full.items()})
        save_model(clean, folder, tokenizer=AlayaTokenizer.load(tok_dir))
    distributed.barrier(d)
