"""Generation with exact match: GSM8K, MGSM (en, zh), CMATH. Few-shot chain-of-thought prompts, greedy
decoding through the project's one generation loop, answers extracted by each benchmark's rule.

- GSM8K as lm-evaluation-harness scores it: ``strict-match`` takes the number after ``#### ``, and
  ``flexible-extract`` the last number-like string; both compare after removing ``,``, ``$``, everything up
  to ``#### `` and a final ``.``, case-insensitively. Shots: the first K problems of GSM8K's train split
  with their worked answers.
- MGSM: the last number of the answer equals the reference number. Shots: the first K problems of the
  file, whose answers are the reference numbers; they are not scored.
- CMATH, its own rule: the numbers of the answer are read (fractions ``a/b`` and percentages converted)
  and the last one must equal the reference within a relative 1e-4 (the reference may itself be a
  fraction or a percentage).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from fractions import Fraction
from pathlib import Path

from alaya.eval.sources import EvalDataError, field, json_lines, tsv_rows


@dataclass
class GenItem:
    subject: str
    doc_id: str
    question: str
    target: str  # the reference as the benchmark writes it
    context: str = ""
    shot_starts: list[int] = dataclass_field(default_factory=list)  # where each shot begins in context (characters)


STOP = ["Question:", "问题：", "</s>", "<|im_end|>", "\n\n\n"]
GSM_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
GSM_FLEX = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
GSM_IGNORE = [re.compile(r","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$")]
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+(?:\.\d+)?)?%?")


def _prompt(question: str, zh: bool) -> str:
    return f"问题：{question}\n答案：" if zh else f"Question: {question}\nAnswer:"


def load_gsm8k(root: Path, k: int) -> tuple[list[GenItem], list[tuple[str, str]]]:
    path = root / "gsm8k_test" / "test.jsonl"
    items = [GenItem("gsm8k", f"gsm8k/{n}", field(o, "question", f"{path}:{n}"), field(o, "answer", f"{path}:{n}"))
             for n, o in json_lines(path, "GSM8K test")]
    shots: list[tuple[str, str]] = []
    if k:
        train = root / "gsm8k_train" / "train.jsonl"
        for n, o in json_lines(train, "GSM8K train (the few-shot examples)"):
            shots.append((field(o, "question", f"{train}:{n}"), field(o, "answer", f"{train}:{n}")))
            if len(shots) == k:
                break
    return items, shots


def load_mgsm(root: Path, lang: str, k: int) -> tuple[list[GenItem], list[tuple[str, str]]]:
    path = root / "mgsm" / f"mgsm_{lang}.tsv"
    rows = tsv_rows(path, f"MGSM {lang}", 2)
    items = [GenItem(lang, f"mgsm_{lang}/{n}", q, a.strip()) for n, (q, a) in rows]
    return items[k:], [(it.question, it.target) for it in items[:k]]


def load_cmath(root: Path, k: int) -> tuple[list[GenItem], list[tuple[str, str]]]:
    path = root / "cmath" / "cmath_dev.jsonl"
    items = []
    for n, o in json_lines(path, "CMATH dev"):
        where = f"{path}:{n}"
        items.append(GenItem(f"grade_{o.get('grade', '?')}", f"cmath/{n}", field(o, "input", where),
                             str(field(o, "golden", where, kind=None))))
    return items[k:], [(it.question, it.target) for it in items[:k]]


def build_contexts(items: list[GenItem], shots: list[tuple[str, str]], zh: bool) -> None:
    texts = [_prompt(q, zh) + " " + a + "\n\n" for q, a in shots]
    starts = [sum(map(len, texts[:j])) for j in range(len(texts))]
    for it in items:
        it.context = "".join(texts) + _prompt(it.question, zh)
        it.shot_starts = starts


# ------------------------------------------------------------------------------------------ answer rules
def _gsm_clean(s: str) -> str:
    for rx in GSM_IGNORE:
        s = rx.sub("", s)
    return s.strip().lower()


def gsm8k_extract(generation: str) -> dict[str, str]:
    strict = GSM_STRICT.search(generation)
    flex = GSM_FLEX.findall(generation)
    last = next((g for g in flex[-1] if g), "") if flex else ""
    return {"strict-match": strict.group(1) if strict else "[invalid]", "flexible-extract": last or "[invalid]"}


def gsm8k_verdicts(generation: str, target: str) -> tuple[dict[str, str], dict[str, float]]:
    got = gsm8k_extract(generation)
    ref = _gsm_clean(target)
    return got, {f"exact_match,{k}": float(_gsm_clean(v) == ref) for k, v in got.items()}


def _to_number(s: str) -> Fraction | None:
    s = s.replace(",", "").strip()
    pct = s.endswith("%")
    s = s.rstrip("%")
    try:
        if "/" in s:
            a, b = s.split("/", 1)
            v = Fraction(a) / Fraction(b)
        else:
            v = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return v / 100 if pct else v


def last_number(text: str) -> Fraction | None:
    found = [v for v in (_to_number(m) for m in NUMBER.findall(text)) if v is not None]
    return found[-1] if found else None


def numbers_equal(a: Fraction | None, b: Fraction | None, rel: float = 1e-4) -> bool:
    if a is None or b is None:
        return False
    return abs(a - b) <= rel * max(abs(b), Fraction(1, 10 ** 9))


def number_verdict(generation: str, target: str, metric: str) -> tuple[dict[str, str], dict[str, float]]:
    ref = _to_number(target)
    if ref is None:
        raise EvalDataError(f"reference answer {target!r} is not a number")
    got = last_number(generation)
    shown = "[invalid]" if got is None else (str(got.numerator) if got.denominator == 1 else f"{float(got):g}")
    return {metric: shown}, {f"exact_match,{metric}": float(numbers_equal(got, ref))}


def cut_generation(text: str) -> str:
    """The answer to this problem only: what comes before the next few-shot style question."""
    for s in STOP:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text
