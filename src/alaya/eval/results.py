"""Results in lm-evaluation-harness's layout (``results → task → "acc,none"``, ``groups``,
``group_subtasks``, ``configs``, ``n-shot``, ``higher_is_better``, ``n-samples``), the samples file, the
Markdown table, and the paired comparison of two models on the same items (bootstrap)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from alaya.fileio import write_json_atomic, write_text_atomic

LOWER_IS_BETTER = {"token_perplexity", "bits_per_byte", "byte_perplexity", "word_perplexity"}


def mean_with_stderr(metric: str, values: list[float], filt: str = "none") -> dict[str, float]:
    """The mean and its standard error (sample standard deviation / sqrt(n)), as lm-eval computes them."""
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {f"{metric},{filt}": mean, f"{metric}_stderr,{filt}": math.sqrt(var / n) if n else float("nan")}


def group_entry(name: str, per_subject: dict, samples: list[dict], metrics) -> dict:
    """A benchmark's numbers over its subjects: the micro average over items (``acc,none``, lm-eval's
    size-weighted group number) and the macro average over subjects (``acc_macro,none``)."""
    group = {"alias": name, "n,none": len(samples)}
    for m in metrics:
        group.update(mean_with_stderr(m, [x[m] for x in samples]))
        subj = [e[f"{m},none"] for e in per_subject.values()]
        group[f"{m}_macro,none"] = sum(subj) / len(subj) if subj else float("nan")
    group["subjects,none"] = len(per_subject)
    return group


def finish_results(results: dict, groups: dict, subtasks: dict, configs: dict) -> dict:
    owner = {sub: task for task, subs in subtasks.items() for sub in subs}
    higher = {}
    for task, entry in results.items():
        up = configs[owner.get(task, task)].get("higher_is_better", True)  # over_refusal: lower is better
        higher[task] = {k.split(",")[0]: up and k.split(",")[0] not in LOWER_IS_BETTER
                        for k in entry if "," in k and "_stderr" not in k and not k.startswith(("n,", "chance,"))}
    return {
        "results": results,
        "groups": groups,
        "group_subtasks": subtasks,
        "configs": configs,
        "versions": {t: 1.0 for t in results},
        "n-shot": {t: c["num_fewshot"] for t, c in configs.items()},
        "higher_is_better": higher,
        "n-samples": {t: {"original": int(results[t].get("n,none", 0)), "effective": int(results[t].get("n,none", 0))}
                      for t in results},
    }


def truncation(encode, context: str, shot_starts: list[int], cut: int) -> dict:
    """An item's record of its prompt cut from the left to fit the context: the tokens cut and the shots still
    whole (a shot is whole when the tokens before it are at least those cut). ``encode``: the tokenizer's."""
    if not cut:
        return {"truncated_tokens": 0}
    return {"truncated_tokens": cut, "shots_fitted": sum(1 for start in shot_starts if len(encode(context[:start])) >= cut)}


def truncation_summary(samples: list[dict], shots: int) -> dict:
    """How many of a task's prompts were cut from the left to fit the context, by how much, and the fewest
    shots left whole ({} when none was cut)."""
    cut = [s for s in samples if s.get("truncated_tokens")]
    if not cut:
        return {}
    tokens = [s["truncated_tokens"] for s in cut]
    return {"items": len(cut), "max_tokens": max(tokens), "mean_tokens": round(sum(tokens) / len(tokens), 1),
            "shots_fitted_min": min(s.get("shots_fitted", shots) for s in cut)}


def markdown_table(results: dict) -> str:
    """One row per task (and per subject below it): items, shots, the main metric ± stderr, and chance."""
    lines = ["| task | items | shots | metric | value | ± stderr | chance / extra |", "|---|---:|---:|---|---:|---:|---|"]
    for task, cfg in results["configs"].items():
        metric = cfg["metric"]
        for name in [task] + results["group_subtasks"].get(task, []):
            e = results["results"][name]
            value = e.get(f"{metric},none", float("nan"))
            err = e.get(f"{metric}_stderr,none")
            extra = []
            if "chance,none" in e:
                extra.append(f"chance {e['chance,none']:.3f}")
            if f"{metric}_macro,none" in e:
                extra.append(f"macro {e[f'{metric}_macro,none']:.4f}")
            if "acc_norm,none" in e:
                extra.append(f"acc_norm {e['acc_norm,none']:.4f}")
            if "exact_match,strict-match" in e:
                extra.append(f"strict {e['exact_match,strict-match']:.4f}")
            if "stop_rate,none" in e:
                extra.append(f"stopped {e['stop_rate,none']:.3f}")
            if "token_perplexity,none" in e:
                extra.append(f"token ppl {e['token_perplexity,none']:.2f}")
            label = task if name == task else "  " + e.get("alias", name).strip(" -")
            shots = cfg["num_fewshot"] if name == task else ""
            cut = cfg.get("truncated") or {}
            if name == task and cut:  # prompts cut from the left to fit the context: say so where the shots are
                shots = f"{shots} (≥{cut['shots_fitted_min']} fitted)" if cut["shots_fitted_min"] < shots else shots
                extra.append(f"{cut['items']} prompts cut (≤{cut['max_tokens']} tokens)")
            lines.append(f"| {label} | {int(e.get('n,none', 0))} | {shots} | {metric} | {value:.4f} | "
                         f"{'' if err is None else f'{err:.4f}'} | {', '.join(extra)} |")
    return "\n".join(lines) + "\n"


def write_outputs(folder: Path, results: dict, samples: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "results.json", results)
    write_text_atomic(folder / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    write_text_atomic(folder / "results.md", markdown_table(results))


# ------------------------------------------------------------------------------------------ comparison
def item_values(results: dict, samples: list[dict]) -> dict[tuple[str, str], float]:
    """(task, doc_id) → the task's main per-item value."""
    out = {}
    for s in samples:
        metric = results["configs"][s["task"]]["metric"]
        out[(s["task"], s["doc_id"])] = float(s[metric])
    return out


def paired_bootstrap(a: list[float], b: list[float], rounds: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean difference b − a over paired items, its 95 % interval and a two-sided p-value from resampling
    items with replacement (the share of resamples whose difference has the other sign, doubled)."""
    n = len(a)
    diffs = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    mean = float(diffs.mean())
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // n)  # resamples drawn a few million indices at a time
    stats = np.sort(np.concatenate([diffs[rng.integers(0, n, size=(min(chunk, rounds - r), n))].mean(axis=1)
                                    for r in range(0, rounds, chunk)]))
    lo, hi = float(stats[int(0.025 * rounds)]), float(stats[min(int(0.975 * rounds), rounds - 1)])
    if mean == 0:
        p = 1.0
    else:
        other = int((stats <= 0).sum() if mean > 0 else (stats >= 0).sum())
        p = min(1.0, 2 * other / rounds)
    return {"n": n, "a": float(np.mean(a)), "b": float(np.mean(b)), "diff": mean, "ci_low": lo, "ci_high": hi, "p": p}


def compare(res_a: dict, smp_a: list[dict], res_b: dict, smp_b: list[dict]) -> dict[str, dict]:
    va, vb = item_values(res_a, smp_a), item_values(res_b, smp_b)
    out = {}
    for task in res_a["configs"]:
        keys = sorted(k for k in va if k[0] == task and k in vb)
        if keys:
            out[task] = {"metric": res_a["configs"][task]["metric"],
                         **paired_bootstrap([va[k] for k in keys], [vb[k] for k in keys])}
    return out


def compare_table(diffs: dict[str, dict], name_a: str, name_b: str) -> str:
    lines = [f"A = {name_a}", f"B = {name_b}", "",
             "| task | metric | items | A | B | B − A | 95 % interval | p |", "|---|---|---:|---:|---:|---:|---|---:|"]
    for task, d in diffs.items():
        lines.append(f"| {task} | {d['metric']} | {d['n']} | {d['a']:.4f} | {d['b']:.4f} | {d['diff']:+.4f} | "
                     f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] | {d['p']:.3f} |")
    return "\n".join(lines) + "\n"
