"""``alaya eval``: the tasks, the run over one model, and what it writes.

A task name is one of :data:`TASKS`; ``NAME:SUB1,SUB2`` keeps some subjects, ``NAME=PATH`` reads another
file (perplexity: any reader input; identity / refusal / over_refusal: a held-out JSONL file or the SFT
run folder whose ``generated/`` holds it).

With ``--output``, each finished task is saved at once in ``OUTPUT/partial/``; a rerun of the same command
takes the tasks finished with the same model files and settings from there, so an interrupted evaluation
resumes at the task it was in.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from alaya.eval import generation as gen_tasks
from alaya.eval import multiple_choice
from alaya.eval.perplexity import aggregate as ppl_aggregate
from alaya.eval.perplexity import read_heldout, score_documents
from alaya.eval.results import (finish_results, group_entry, mean_with_stderr, truncation, truncation_summary,
                                write_outputs)
from alaya.eval.scorer import Scorer
from alaya.eval.sources import EvalDataError, default_data_dir, json_lines
from alaya.fileio import write_json_atomic


@dataclass(frozen=True)
class TaskInfo:
    kind: str  # mc | gen | perplexity | behaviour
    shots: int  # the default number of shots
    about: str
    higher_is_better: bool = True


TASKS: dict[str, TaskInfo] = {
    "ceval": TaskInfo("mc", 5, "C-Eval val (52 subjects), dev shots, letters"),
    "cmmlu": TaskInfo("mc", 5, "CMMLU test (67 subjects), dev shots, letters; official number: macro"),
    "mmlu": TaskInfo("mc", 5, "MMLU test (57 subjects), dev shots, letters"),
    "arc_challenge": TaskInfo("mc", 0, "ARC-Challenge, full-text choices"),
    "arc_easy": TaskInfo("mc", 0, "ARC-Easy, full-text choices"),
    "logiqa2": TaskInfo("mc", 0, "LogiQA 2.0 test (en), full-text choices"),
    "logiqa2_zh": TaskInfo("mc", 0, "LogiQA 2.0 test (zh), full-text choices, dev shots"),
    "safetybench": TaskInfo("mc", 0, "SafetyBench zh subset (7 categories), letters"),
    "gsm8k": TaskInfo("gen", 5, "GSM8K test, train shots with worked answers; strict and flexible match"),
    "mgsm_en": TaskInfo("gen", 0, "MGSM English, last number"),
    "mgsm_zh": TaskInfo("gen", 0, "MGSM Chinese, last number"),
    "cmath": TaskInfo("gen", 0, "CMATH dev (grades 1-6), last number within 1e-4"),
    "perplexity": TaskInfo("perplexity", 0, "held-out text: token perplexity, bits per byte, by language"),
    "identity": TaskInfo("behaviour", 0, "held-out identity questions: the answer names the model or developer"),
    "refusal": TaskInfo("behaviour", 0, "held-out red-team prompts: the answer refuses"),
    "over_refusal": TaskInfo("behaviour", 0, "held-out benign look-alikes: the answer refuses (lower is better)",
                             higher_is_better=False),
}
MAIN_METRIC = {"mc": "acc", "gen": "exact_match", "perplexity": "bits_per_byte", "behaviour": "rate"}


@dataclass
class TaskSpec:
    name: str
    subjects: list[str] | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> "TaskSpec":
        name, path = (text.split("=", 1) + [None])[:2] if "=" in text else (text, None)
        subjects = None
        if ":" in name:
            name, subs = name.split(":", 1)
            subjects = [s for s in subs.split(",") if s]
        if name not in TASKS:
            raise EvalDataError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
        return cls(name, subjects, path)


@dataclass
class EvalSettings:
    shots: int | None = None
    limit: int | None = None
    batch_size: int = 16
    max_new_tokens: int = 256
    data_dir: Path | None = None
    progress: bool = True


def _mc_set(name: str, root: Path, k: int) -> multiple_choice.MCSet:
    if name == "ceval":
        return multiple_choice.load_ceval(root)
    if name == "cmmlu":
        return multiple_choice.load_cmmlu(root)
    if name == "mmlu":
        return multiple_choice.load_mmlu(root)
    if name.startswith("arc_"):
        return multiple_choice.load_arc(root, name[4:], k)
    if name.startswith("logiqa2"):
        return multiple_choice.load_logiqa2(root, name.endswith("_zh"), k)
    return multiple_choice.load_safetybench(root, k)


def _pick_subjects(available: list[str], wanted: list[str] | None, task: str) -> list[str]:
    if not wanted:
        return available
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise EvalDataError(f"{task}: unknown subjects {unknown}; known: {', '.join(available)}")
    return wanted


class Evaluator:
    """Runs tasks over one model; returns results in lm-evaluation-harness's layout plus the samples."""

    def __init__(self, settings: EvalSettings, adapter_path: str | None = None):
        self.s = settings
        self.root = Path(settings.data_dir or default_data_dir())
        self.adapter_path = adapter_path
        self.model = self.tok = self.scorer = None
        self.loaded: dict[int, object] = {}
        self.left_out: dict[str, list[str]] = {}  # task -> items that could not be scored, with the reason

    def load_data(self, specs: list[TaskSpec]) -> None:
        """Read every task's items (before any model loads: a bad file fails in seconds)."""
        for n, spec in enumerate(specs):
            info = TASKS[spec.name]
            k = info.shots if self.s.shots is None else self.s.shots
            self.loaded[n] = KINDS[info.kind].load(self, spec, k)

    def run(self, model, tok, specs: list[TaskSpec], partial: Path | None = None,
            identity: str = "") -> tuple[dict, list[dict]]:
        """Every task in turn. With ``partial`` (a folder), each finished task is saved there at once, and a
        task saved earlier with the same model (``identity``), task and settings is taken from there: an
        interrupted evaluation resumes at the task it was in."""
        from alaya.infer.backends import as_backend

        self.backend = as_backend(model)  # generation decodes through it; scoring runs the model's forward
        self.model, self.tok = self.backend.model, tok
        self.scorer = Scorer(self.model, tok, batch_size=self.s.batch_size, progress=self.s.progress)
        if len(self.loaded) != len(specs):
            self.load_data(specs)
        results, groups, subtasks, configs, samples = {}, {}, {}, {}, []
        for n, spec in enumerate(specs):
            info = TASKS[spec.name]
            k = info.shots if self.s.shots is None else self.s.shots
            key = self._task_key(spec, k, identity)
            saved = partial / f"{n:02d}-{spec.name}.json" if partial else None
            done = json.loads(saved.read_text(encoding="utf-8")) if saved and saved.is_file() else None
            if done and done.get("key") == key:
                per_subject, group, task_samples, config = done["per_subject"], done["group"], done["samples"], done["config"]
                print(f"{spec.name}: done earlier ({saved})", file=sys.stderr)
            else:
                t0 = time.perf_counter()
                per_subject, group, task_samples = KINDS[info.kind].run(self, spec, self.loaded[n])
                for sm in task_samples:
                    sm["task"] = spec.name
                config = {"task": spec.name, "output_type": info.kind, "num_fewshot": k, "description": info.about,
                          "metric": MAIN_METRIC[info.kind],
                          "higher_is_better": info.higher_is_better and info.kind != "perplexity",
                          "subjects": spec.subjects, "path": spec.path, "limit": self.s.limit,
                          "left_out": self.left_out.get(spec.name, []), "seconds": round(time.perf_counter() - t0, 2),
                          "truncated": truncation_summary(task_samples, k)}
                if config["truncated"]:
                    c = config["truncated"]
                    print(f"warning: {spec.name}: {c['items']} of {len(task_samples)} prompts were cut from the left "
                          f"to fit the model's {self.model.config.max_seq_len}-token context (by up to {c['max_tokens']} "
                          f"tokens; as few as {c['shots_fitted_min']} of {k} shots whole)", file=sys.stderr)
                if saved:
                    write_json_atomic(saved, {"key": key, "per_subject": per_subject, "group": group,
                                              "samples": task_samples, "config": config})
            samples += task_samples
            subtasks[spec.name] = list(per_subject)
            results.update(per_subject)
            results[spec.name] = groups[spec.name] = group
            configs[spec.name] = config
            print(f"{spec.name}: {group.get(MAIN_METRIC[info.kind] + ',none', float('nan')):.4f} "
                  f"({MAIN_METRIC[info.kind]}, {len(task_samples)} items, {configs[spec.name]['seconds']} s)",
                  file=sys.stderr)
        return finish_results(results, groups, subtasks, configs), samples

    def _task_key(self, spec: TaskSpec, shots: int, identity: str) -> str:
        what = {"model": identity, "task": spec.name, "subjects": spec.subjects, "path": spec.path, "shots": shots,
                "limit": self.s.limit, "max_new_tokens": self.s.max_new_tokens, "data": str(self.root.resolve())}
        return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------------------ multiple choice
    def _load_mc(self, spec: TaskSpec, k: int) -> dict[str, list]:
        s = _mc_set(spec.name, self.root, k)
        multiple_choice.build_contexts(s, k)
        out, left_out = {}, []
        for subject in _pick_subjects(list(s.items), spec.subjects, spec.name):
            items = s.items[subject][: self.s.limit] if self.s.limit else s.items[subject]
            # an item with an empty choice cannot be scored (an empty continuation has no probability to
            # compare: lm-eval gives it log-probability 0, so it always wins); it is left out, named and counted
            good = [it for it in items if all(c.strip() for c in it.choices)]
            left_out += [f"{it.doc_id} (choice {'ABCDEFGH'[[c.strip() for c in it.choices].index('')]} is empty)"
                         for it in items if not all(c.strip() for c in it.choices)]
            if good:
                out[subject] = good
        if left_out:
            print(f"{spec.name}: {len(left_out)} item(s) left out: {', '.join(left_out[:5])}"
                  + (" ..." if len(left_out) > 5 else ""), file=sys.stderr)
        self.left_out[spec.name] = left_out
        if not out:
            raise EvalDataError(f"{spec.name}: no items to score")
        return out

    def _run_mc(self, spec: TaskSpec, by_subject: dict[str, list]):
        per_subject, all_samples = {}, []
        for subject, items in by_subject.items():
            smp = multiple_choice.score_items(self.scorer, items, f"{spec.name} {subject}")
            entry = {"alias": f" - {subject}"}
            for m in ("acc", "acc_norm", "acc_bytes"):
                entry.update(mean_with_stderr(m, [x[m] for x in smp]))
            entry["chance,none"] = multiple_choice.chance(items)
            entry["n,none"] = len(smp)
            per_subject[f"{spec.name}_{subject}"] = entry
            all_samples += smp
        group = group_entry(spec.name, per_subject, all_samples, ("acc", "acc_norm", "acc_bytes"))
        group["chance,none"] = sum(1 / len(x["choices"]) for x in all_samples) / len(all_samples)
        return per_subject, group, all_samples

    # ------------------------------------------------------------------------------ generation
    def _load_gen(self, spec: TaskSpec, k: int):
        root = self.root
        if spec.name == "gsm8k":
            items, shots = gen_tasks.load_gsm8k(root, k)
            stop, zh = ["Question:", "</s>", "<|im_end|>"], False
        elif spec.name.startswith("mgsm"):
            items, shots = gen_tasks.load_mgsm(root, spec.name[-2:], k)
            stop, zh = gen_tasks.STOP, spec.name.endswith("zh")
        else:
            items, shots = gen_tasks.load_cmath(root, k)
            stop, zh = gen_tasks.STOP, True
        if spec.subjects:
            items = [it for it in items if it.subject in spec.subjects]
        if self.s.limit:
            items = items[: self.s.limit]
        if not items:
            raise EvalDataError(f"{spec.name}: no items to score")
        gen_tasks.build_contexts(items, shots, zh)
        return items, stop

    def _run_gen(self, spec: TaskSpec, loaded):
        from alaya.infer.batch import generate_texts
        from alaya.infer.generate import GenerationConfig

        items, stop = loaded
        ctx = self.model.config.max_seq_len
        max_new = min(self.s.max_new_tokens, ctx // 2)
        cfg = GenerationConfig(max_new_tokens=max_new, temperature=0.0, stop=stop,
                               eos_token_id=self.tok.eos_id, pad_token_id=self.tok.pad_id)
        whole = [self.tok.encode(it.context) for it in items]
        encoded = [ids[-(ctx - max_new):] for ids in whole]
        order = sorted(range(len(items)), key=lambda i: -len(encoded[i]))
        texts: list[str] = [""] * len(items)
        bs = self.s.batch_size
        for start in tqdm(range(0, len(order), bs), desc=spec.name, unit="batch", disable=not self.s.progress,
                          leave=False):
            rows = order[start: start + bs]
            for i, t in zip(rows, generate_texts(self.backend, self.tok, [encoded[i] for i in rows], cfg)):
                texts[i] = t
        samples = []
        for it, text, ids, kept in zip(items, texts, whole, encoded):
            if spec.name == "gsm8k":
                got, verdicts = gen_tasks.gsm8k_verdicts(text, it.target)
            else:
                got, verdicts = gen_tasks.number_verdict(gen_tasks.cut_generation(text), it.target, "last-number")
            samples.append({"subject": it.subject, "doc_id": it.doc_id, "prompt": it.context, "generation": text,
                            "extracted": got, "target": it.target, **verdicts,
                            **truncation(self.tok.encode, it.context, it.shot_starts, len(ids) - len(kept))})
        metrics = [k_ for k_ in samples[0] if k_.startswith("exact_match,")]
        group = {"alias": spec.name, "n,none": len(samples)}
        for m in metrics:
            name, filt = m.split(",")
            group.update(mean_with_stderr(name, [x[m] for x in samples], filt))
        # one main number: the flexible rule for GSM8K (lm-eval reports both), the benchmark's rule elsewhere
        main = "exact_match,flexible-extract" if spec.name == "gsm8k" else "exact_match,last-number"
        group["exact_match,none"] = group[main]
        group["exact_match_stderr,none"] = group[main.replace("exact_match", "exact_match_stderr")]
        for x in samples:
            x["exact_match"] = x[main]
        return {}, group, samples

    # ------------------------------------------------------------------------------ perplexity
    def _load_perplexity(self, spec: TaskSpec, k: int):
        paths = spec.path.split(",") if spec.path else [str(self.root / "corpus")]
        by_lang = {lang: docs for lang, docs in read_heldout(paths, self.s.limit).items()
                   if not spec.subjects or lang in spec.subjects}
        if not by_lang:
            raise EvalDataError(f"perplexity: no documents in the languages {spec.subjects}")
        return by_lang

    def _run_perplexity(self, spec: TaskSpec, by_lang):
        per_lang, samples = {}, []
        for lang, docs in by_lang.items():
            smp = score_documents(self.scorer, docs, f"perplexity {lang}")
            for x in smp:
                x["subject"] = lang
            per_lang[f"perplexity_{lang}"] = {"alias": f" - {lang}", "n,none": len(smp),
                                              **{f"{m},none": v for m, v in ppl_aggregate(smp).items()}}
            samples += smp
        group = {"alias": "perplexity", "n,none": len(samples),
                 **{f"{m},none": v for m, v in ppl_aggregate(samples).items()}}
        return per_lang, group, samples

    # ------------------------------------------------------------------------------ chat behaviour
    def _load_behaviour(self, spec: TaskSpec, k: int):
        path = heldout_file(spec.name, spec.path, self.adapter_path)
        rows = [obj for _, obj in json_lines(path, f"{spec.name} held-out prompts")]
        for n, r in enumerate(rows, start=1):
            if not isinstance(r.get("prompt"), str) or (spec.name == "identity" and not r.get("expect")):
                raise EvalDataError(f"{path}:{n}: needs a 'prompt' string" +
                                    (" and 'expect' (the words a correct answer names)" if spec.name == "identity" else ""))
        if spec.subjects:
            rows = [r for r in rows if r.get("lang") in spec.subjects]
        if self.s.limit:  # per language, as --limit is per subject elsewhere: both languages are asked
            seen: dict[str, int] = {}
            kept = []
            for r in rows:
                lang = r.get("lang", "all")
                seen[lang] = seen.get(lang, 0) + 1
                if seen[lang] <= self.s.limit:
                    kept.append(r)
            rows = kept
        if not rows:
            raise EvalDataError(f"{path}: no prompts to ask")
        return rows

    def _run_behaviour(self, spec: TaskSpec, rows):
        from alaya.infer.chat import chat_replies

        max_new = min(64, self.model.config.max_seq_len // 2)
        replies, bs = [], self.s.batch_size
        for start in tqdm(range(0, len(rows), bs), desc=spec.name, unit="batch", disable=not self.s.progress,
                          leave=False):
            replies += chat_replies(self.backend, self.tok, [r["prompt"] for r in rows[start: start + bs]], max_new, bs)
        samples = [behaviour_sample(spec.name, r, reply) for r, reply in zip(rows, replies)]
        per_lang = {}
        for lang in sorted({x["subject"] for x in samples}):
            mine = [x for x in samples if x["subject"] == lang]
            per_lang[f"{spec.name}_{lang}"] = {"alias": f" - {lang}", "n,none": len(mine), **behaviour_rates(mine)}
        group = {"alias": spec.name, "n,none": len(samples), **behaviour_rates(samples)}
        return per_lang, group, samples


@dataclass(frozen=True)
class TaskKind:
    """How one kind of task is read (before any model loads) and run; every task of TASKS names its kind."""

    load: Callable  # (evaluator, spec, shots) -> the loaded items
    run: Callable  # (evaluator, spec, items) -> (per-subject results, the task's group entry, samples)


KINDS = {
    "mc": TaskKind(Evaluator._load_mc, Evaluator._run_mc),
    "gen": TaskKind(Evaluator._load_gen, Evaluator._run_gen),
    "perplexity": TaskKind(Evaluator._load_perplexity, Evaluator._run_perplexity),
    "behaviour": TaskKind(Evaluator._load_behaviour, Evaluator._run_behaviour),
}


def behaviour_sample(task: str, row: dict, reply) -> dict:
    """One chat-behaviour item scored: ``rate`` 1 when the reply names the expected words (identity) or
    refuses (refusal, over_refusal); ``stopped`` 1 when the model ended it with </s> before the limit."""
    from alaya.sft.refusals import is_refusal

    hit = any(w in reply.text for w in row["expect"]) if task == "identity" else is_refusal(reply.text)
    return {"subject": row.get("lang", "all"), "doc_id": row["prompt"], "prompt": row["prompt"],
            "generation": reply.text, "target": row.get("expect"), "rate": float(hit),
            "stopped": float(reply.stopped)}


def behaviour_rates(samples: list[dict]) -> dict:
    """The task's rate and the stop rate, each with its standard error (lm-eval's layout)."""
    return {**mean_with_stderr("rate", [x["rate"] for x in samples]),
            **mean_with_stderr("stop_rate", [x["stopped"] for x in samples])}


HELDOUT_FILES = {"identity": "identity.heldout.jsonl", "refusal": "refusals.heldout.jsonl",
                 "over_refusal": "refusals.benign.heldout.jsonl"}


def heldout_file(task: str, given: str | None, adapter: str | None) -> Path:
    """The held-out prompts of a behaviour task: the given file, or ``generated/`` of the given SFT run
    folder, or of the run whose ``final/`` is the adapter."""
    name = HELDOUT_FILES[task]
    candidates = []
    if given:
        p = Path(given)
        if p.is_file():
            return p
        candidates += [p / "generated" / name, p / name]
    elif adapter:
        candidates.append(Path(adapter).parent / "generated" / name)
    for c in candidates:
        if c.is_file():
            return c
    where = ", ".join(map(str, candidates)) or "nowhere: no path given"
    raise EvalDataError(f"{task}: held-out prompts not found (looked at {where}); pass {task}=FILE or "
                        f"{task}=SFT_RUN_DIR (the files `alaya sft identity/refusals` write)")


def model_identity(model_path: str, adapter: str | None, device: str, dtype: str) -> str:
    """What the saved results of a task depend on besides the task: the files of the model (and adapter), by
    name, size and modification time, and where and in what precision it runs."""
    parts = [device, dtype]
    for folder in (model_path, adapter):
        if folder:
            p = Path(folder).resolve()
            parts.append(str(p))
            parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(p.iterdir()) if f.is_file()]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def run_eval(model_path: str, tasks: list[str], adapter: str | None = None, settings: EvalSettings | None = None,
             output: str | None = None, device: str | None = None, dtype: str = "auto", quantize: str = "none",
             decode_path: str = "auto", attention: str = "auto") -> dict:
    from alaya.infer.loading import load_for_inference

    settings = settings or EvalSettings()
    specs = [TaskSpec.parse(t) for t in tasks]
    ev = Evaluator(settings, adapter)
    ev.load_data(specs)  # inputs first, before the model loads
    t0 = time.time()
    backend, tok = load_for_inference(model_path, adapter, device=device, dtype=dtype, quantize=quantize,
                                      decode_path=decode_path, attention=attention)
    model = backend.model
    precision = str(next(model.parameters()).dtype).replace("torch.", "") + ("+int8" if quantize == "int8" else "")
    partial = Path(output) / "partial" if output else None
    results, samples = ev.run(backend, tok, specs, partial, model_identity(model_path, adapter, str(model.device),
                                                                          precision))
    results["config"] = {"model": "alaya", "model_args": f"pretrained={model_path}" + (f",adapter={adapter}" if adapter else ""),
                         "batch_size": settings.batch_size, "limit": settings.limit, "device": str(model.device),
                         "dtype": precision,
                         "data_dir": str(ev.root)}
    results["date"] = t0
    results["total_evaluation_time_seconds"] = str(round(time.time() - t0, 2))
    if output:
        write_outputs(Path(output), results, samples)
    return {"results": results, "samples": samples}
