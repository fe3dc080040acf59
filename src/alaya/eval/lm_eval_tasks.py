"""Task files for lm-evaluation-harness that read the local benchmark files with the prompts of
``alaya eval``, so lm-eval itself can evaluate Alaya folders (or any model) offline and the two agree.

The templates are ``configs/eval/lm_eval/_alaya_*.yaml``. :func:`write_lm_eval_tasks` writes, for the chosen
benchmarks, the data as JSONL (archives extracted, every column a string) and one self-contained task YAML
per subject (``alaya_mmlu_anatomy``, ``alaya_ceval_accountant``, …, ``alaya_arc_easy``, ``alaya_gsm8k``).
Run lm-eval with ``--include_path DIR/tasks``.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from alaya.eval.sources import CsvTree, EvalDataError, json_file, need_file
from alaya.eval.subjects import CMMLU
from alaya.fileio import write_text_atomic

TEMPLATES = Path(__file__).resolve().parents[3] / "configs" / "eval" / "lm_eval"
SUPPORTED = ("mmlu", "ceval", "cmmlu", "arc_easy", "arc_challenge", "gsm8k")


def _template(folder: Path, name: str) -> dict:
    path = need_file(folder / f"_alaya_{name}.yaml", "lm-eval task template")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _jsonl(path: Path, rows: list[dict]) -> str:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path.resolve())


def _write_task(tasks_dir: Path, name: str, template: dict, data_files: dict, description: str | None = None) -> str:
    cfg = {"task": name, **template, "dataset_kwargs": {"data_files": data_files}}
    if description is not None:
        cfg["description"] = description
    write_text_atomic(tasks_dir / f"{name}.yaml", yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    return name


def write_lm_eval_tasks(root: Path, out: Path, benchmarks: list[str], subjects: list[str] | None = None,
                        templates: Path = TEMPLATES) -> list[str]:
    """Write data and task files under ``out`` (``out/data``, ``out/tasks``); return the task names."""
    bad = [b for b in benchmarks if b not in SUPPORTED]
    if bad:
        raise EvalDataError(f"no lm-eval task files for {bad}; supported: {', '.join(SUPPORTED)}")
    data, tasks_dir = out / "data", out / "tasks"
    names: list[str] = []
    for bench in benchmarks:
        if bench in ("mmlu", "ceval", "cmmlu"):
            names += _letter_benchmark(bench, root, data, tasks_dir, _template(templates, bench), subjects)
        elif bench.startswith("arc_"):
            src = need_file(root / "arc" / f"{bench}.jsonl", "ARC")
            names.append(_write_task(tasks_dir, f"alaya_{bench}", _template(templates, "arc"),
                                     {"test": str(src.resolve())}))
        else:
            test = need_file(root / "gsm8k_test" / "test.jsonl", "GSM8K test")
            train = need_file(root / "gsm8k_train" / "train.jsonl", "GSM8K train")
            names.append(_write_task(tasks_dir, "alaya_gsm8k", _template(templates, "gsm8k"),
                                     {"test": str(test.resolve()), "train": str(train.resolve())}))
    return names


def _letter_benchmark(bench: str, root: Path, data: Path, tasks_dir: Path, template: dict,
                      subjects: list[str] | None) -> list[str]:
    names = []
    if bench == "mmlu":
        tree = CsvTree(root / "mmlu" / "mmlu.zip", "MMLU archive")
        mapping = {k: v["name"] for k, v in json_file(root / "mmlu" / "mapping.json", "MMLU names").items()}
        splits = {"test": "data/test/{s}_test.csv", "dev": "data/dev/{s}_dev.csv"}
        describe = "The following are multiple choice questions (with answers) about {name}.\n\n"
    elif bench == "ceval":
        tree = CsvTree(root / "ceval" / "ceval.zip", "C-Eval archive")
        mapping = {k: v["name"] for k, v in json_file(root / "ceval" / "mapping.json", "C-Eval names").items()}
        splits = {"val": "val/{s}_val.csv", "dev": "dev/{s}_dev.csv"}
        describe = "以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n"
    else:
        tree = CsvTree(root / "cmmlu", "CMMLU folder")
        mapping = {Path(n).stem: CMMLU.get(Path(n).stem, Path(n).stem) for n in tree.names() if n.startswith("test/")}
        splits = {"test": "test/{s}.csv", "dev": "dev/{s}.csv"}
        describe = "以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n"
    for s in sorted(mapping):
        if subjects and s not in subjects:
            continue
        files = {}
        for split, member in splits.items():
            m = member.format(s=s)
            rows = (tree.rows_without_header(m, ["question", "A", "B", "C", "D", "answer"]) if bench == "mmlu"
                    else _raw_rows(tree, m))
            files[split] = _jsonl(data / bench / f"{s}_{split}.jsonl", rows)
        names.append(_write_task(tasks_dir, f"alaya_{bench}_{s}", template, files, describe.format(name=mapping[s])))
    return names


def _raw_rows(tree: CsvTree, member: str) -> list[dict]:
    """Rows with the file's own column names (C-Eval: question/answer, CMMLU: Question/Answer), only the
    columns the templates read, so every split has the same columns (C-Eval's dev adds explanation)."""
    records = tree.records(member)
    if not records:
        raise EvalDataError(f"{tree.where(member)}: empty file")
    header = records[0][1]
    keep = {"id", "question", "Question", "A", "B", "C", "D", "answer", "Answer"}
    return [{h: v for h, v in zip(header, row) if h in keep} for _, row in records[1:]]
