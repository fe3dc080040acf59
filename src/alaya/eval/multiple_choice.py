"""Multiple choice by log-likelihood: C-Eval, CMMLU, MMLU (letters after each benchmark's official prompt),
ARC and LogiQA 2.0 (full-text choices), SafetyBench (zh, letters).

A prompt is built as lm-evaluation-harness builds it: ``description + shot + "\\n\\n" + … + question``, each
shot being its question, the target delimiter and its answer. The few shots are the first K items of the
subject's dev split (lm-eval's ``first_n`` sampler); a set without a dev split takes its shots from the
start of its own file and leaves them out of the scored items.

Metrics per item (as lm-eval's ``multiple_choice``): ``acc`` (the highest log-likelihood is the answer),
``acc_norm`` (log-likelihood divided by the choice's length in characters) and ``acc_bytes`` (by its length
in UTF-8 bytes: one Chinese character is three bytes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alaya.eval.results import truncation
from alaya.eval.scorer import Scorer
from alaya.eval.sources import CsvTree, EvalDataError, json_file, json_lines
from alaya.eval.subjects import CMMLU

LETTERS = "ABCDEFGH"


@dataclass
class MCItem:
    subject: str
    doc_id: str
    question: str  # the item's own text (doc_to_text), without description and shots
    choices: list[str]
    gold: int
    context: str = ""  # the whole prompt (description + shots + question)
    delimiter: str = " "
    shot_starts: list[int] = field(default_factory=list)  # where each shot begins in context (characters)


@dataclass
class MCSet:
    """A benchmark's items by subject, with the few-shot examples of each subject."""
    items: dict[str, list[MCItem]] = field(default_factory=dict)
    shots: dict[str, list[MCItem]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)


def letter_text(question: str, options: list[str], answer_word: str) -> str:
    lines = [question.strip()] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines) + "\n" + answer_word


def _letter_gold(value: str, n: int, where: str) -> int:
    v = value.strip().upper()
    if len(v) != 1 or v not in LETTERS[:n]:
        raise EvalDataError(f"{where}: answer {value!r} is not one of {', '.join(LETTERS[:n])}")
    return LETTERS.index(v)


def _subject_names(mapping: Path, what: str) -> dict[str, str]:
    return {k: v["name"] for k, v in json_file(mapping, what).items()}


def _letter_items(rows: list[dict], subject: str, where: str, answer_word: str, q_key: str, a_key: str,
                  id_key: str | None) -> list[MCItem]:
    out = []
    for n, r in enumerate(rows):
        options = [r[k.lower()] for k in "ABCD"]
        gold = _letter_gold(r[a_key], 4, f"{where} row {n + 1}")
        doc_id = r.get(id_key, str(n)) if id_key else str(n)
        out.append(MCItem(subject, f"{subject}/{doc_id}", letter_text(r[q_key], options, answer_word),
                          list("ABCD"), gold, delimiter="" if answer_word.endswith("：") else " "))
    return out


def load_ceval(root: Path) -> MCSet:
    tree = CsvTree(root / "ceval" / "ceval.zip", "C-Eval archive")
    names = _subject_names(root / "ceval" / "mapping.json", "C-Eval subject names")
    s = MCSet()
    for subject, name in sorted(names.items()):
        header = ["id", "question", "A", "B", "C", "D", "answer"]
        for split, dest in (("val", s.items), ("dev", s.shots)):
            member = f"{split}/{subject}_{split}.csv"
            dest[subject] = _letter_items(tree.rows(member, header), subject, f"{tree.path}:{member}", "答案：",
                                          "question", "answer", "id")
        s.descriptions[subject] = f"以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n"
    return s


def load_cmmlu(root: Path) -> MCSet:
    folder = root / "cmmlu"
    tree = CsvTree(folder if folder.is_dir() else root / "cmmlu.zip", "CMMLU folder")
    s = MCSet()
    subjects = sorted({Path(n).stem for n in tree.names() if n.startswith("test/")})
    if not subjects:
        raise EvalDataError(f"{tree.path}: no test/*.csv files")
    for subject in subjects:
        for split, dest in (("test", s.items), ("dev", s.shots)):
            member = f"{split}/{subject}.csv"
            rows = tree.rows(member, ["Question", "A", "B", "C", "D", "Answer"])
            dest[subject] = _letter_items(rows, subject, f"{tree.path}/{member}", "答案：", "question", "answer",
                                          "_index")
        name = CMMLU.get(subject, subject.replace("_", " "))
        s.descriptions[subject] = f"以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n"
    return s


def load_mmlu(root: Path) -> MCSet:
    tree = CsvTree(root / "mmlu" / "mmlu.zip", "MMLU archive")
    names = _subject_names(root / "mmlu" / "mapping.json", "MMLU subject names")
    cols = ["question", "a", "b", "c", "d", "answer"]
    s = MCSet()
    for subject, name in sorted(names.items()):
        for split, dest in (("test", s.items), ("dev", s.shots)):
            member = f"data/{split}/{subject}_{split}.csv"
            dest[subject] = _letter_items(tree.rows_without_header(member, cols), subject, f"{tree.path}:{member}",
                                          "Answer:", "question", "answer", None)
        s.descriptions[subject] = f"The following are multiple choice questions (with answers) about {name}.\n\n"
    return s


def _own_shots(s: MCSet, subject: str, items: list[MCItem], k: int) -> None:
    """A set without a dev split: its first ``k`` items are the shots and are not scored."""
    s.shots[subject], s.items[subject] = items[:k], items[k:]


def load_arc(root: Path, part: str, k: int) -> MCSet:
    path = root / "arc" / f"arc_{part}.jsonl"
    items = []
    for n, obj in json_lines(path, f"ARC-{part}"):
        where = f"{path}:{n}"
        choices, gold = obj.get("choices"), obj.get("gold")
        if not isinstance(choices, list) or not isinstance(gold, int) or not 0 <= gold < len(choices or []):
            raise EvalDataError(f"{where}: needs 'choices' (a list) and 'gold' (an index into it)")
        query = str(obj.get("query", ""))
        items.append(MCItem(part, f"{part}/{n}", query + "\nAnswer:", [str(c) for c in choices], gold))
    s = MCSet(descriptions={part: ""})
    _own_shots(s, part, items, k)
    return s


def _logiqa_items(path: Path, zh: bool) -> list[MCItem]:
    out = []
    for n, obj in json_lines(path, "LogiQA 2.0"):
        where = f"{path}:{n}"
        options, gold = obj.get("options"), obj.get("answer")
        if not isinstance(options, list) or not isinstance(gold, int) or not 0 <= gold < len(options or []):
            raise EvalDataError(f"{where}: needs 'options' (a list) and 'answer' (an index into it)")
        text, q = str(obj.get("text", "")).strip(), str(obj.get("question", "")).strip()
        prompt = f"文章：{text}\n问题：{q}\n答案：" if zh else f"Passage: {text}\nQuestion: {q}\nAnswer:"
        out.append(MCItem("zh" if zh else "en", f"{path.stem}/{obj.get('id', obj.get('example_id', n))}", prompt,
                          [str(o) for o in options], gold, delimiter="" if zh else " "))
    return out


def load_logiqa2(root: Path, zh: bool, k: int) -> MCSet:
    folder = root / "logiqa2"
    subject = "zh" if zh else "en"
    s = MCSet(descriptions={subject: ""})
    items = _logiqa_items(folder / ("test_zh.txt" if zh else "test.txt"), zh)
    if zh and (folder / "dev_zh.txt").exists():
        s.items[subject], s.shots[subject] = items, _logiqa_items(folder / "dev_zh.txt", zh)[:k]
    else:
        _own_shots(s, subject, items, k)
    return s


def load_safetybench(root: Path, k: int) -> MCSet:
    folder = root / "safetybench"
    questions = json_file(folder / "test_zh_subset.json", "SafetyBench questions")
    answers = json_file(folder / "test_answers_zh_subset.json", "SafetyBench answers")
    if not isinstance(questions, list) or not isinstance(answers, dict):
        raise EvalDataError(f"{folder}: expected a list of questions and an object of answers by id")
    by_cat: dict[str, list[MCItem]] = {}
    for n, q in enumerate(questions):
        where = f"{folder / 'test_zh_subset.json'} item {n}"
        qid = str(q.get("id"))
        if qid not in answers:
            raise EvalDataError(f"{where}: id {qid} has no answer in test_answers_zh_subset.json")
        options = [str(o) for o in q.get("options", [])]
        gold = answers[qid].get("answer")
        if not options or not isinstance(gold, int) or not 0 <= gold < len(options):
            raise EvalDataError(f"{where}: needs options and an answer index into them")
        cat = str(q.get("category", "all"))
        text = "问题：" + "\n".join([str(q.get("question", "")).strip(), "选项："] +
                                   [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]) + "\n答案："
        by_cat.setdefault(cat, []).append(MCItem(cat, f"safetybench/{qid}", text, list(LETTERS[: len(options)]),
                                                 gold, delimiter=""))
    s = MCSet()
    for cat, items in sorted(by_cat.items()):
        s.descriptions[cat] = "以下是关于安全的单项选择题，请选出其中的正确答案。\n\n"
        _own_shots(s, cat, items, k)
    return s


def build_contexts(s: MCSet, k: int) -> None:
    """Fill each item's whole prompt: the subject's description, ``k`` shots, the question."""
    for subject, items in s.items.items():
        shots = s.shots.get(subject, [])[:k]
        if len(shots) < k:
            raise EvalDataError(f"subject {subject}: {k} shots asked for, its dev split has {len(shots)}")
        for it in items:
            texts = [sh.question + it.delimiter + sh.choices[sh.gold] + "\n\n" for sh in shots]
            head = s.descriptions.get(subject, "")
            it.shot_starts = [len(head) + sum(map(len, texts[:j])) for j in range(len(texts))]
            it.context = head + "".join(texts) + it.question


def score_items(scorer: Scorer, items: list[MCItem], desc: str) -> list[dict]:
    """One sample record per item: the choices' log-likelihoods, the predictions and the verdicts."""
    pairs = [(it.context, it.delimiter + c) for it in items for c in it.choices]
    scored = scorer.loglikelihood(pairs, desc)
    out, pos = [], 0
    for it in items:
        s = scored[pos: pos + len(it.choices)]
        pos += len(it.choices)
        lls = [x.logprob for x in s]
        by_chars = [ll / max(len(c), 1) for ll, c in zip(lls, it.choices)]
        by_bytes = [ll / max(len(c.encode("utf-8")), 1) for ll, c in zip(lls, it.choices)]
        pred = max(range(len(lls)), key=lls.__getitem__)
        pred_norm = max(range(len(lls)), key=by_chars.__getitem__)
        pred_bytes = max(range(len(lls)), key=by_bytes.__getitem__)
        out.append({"subject": it.subject, "doc_id": it.doc_id, "prompt": it.context, "choices": it.choices,
                    "target": it.gold, "loglikelihoods": lls, "is_greedy": [x.is_greedy for x in s],
                    "pred": pred, "acc": float(pred == it.gold), "acc_norm": float(pred_norm == it.gold),
                    "acc_bytes": float(pred_bytes == it.gold),
                    **truncation(lambda t: scorer.tok.encode(t), it.context, it.shot_starts,
                                 max(x.truncated for x in s))})
    return out


def chance(items: list[MCItem]) -> float:
    return sum(1.0 / len(it.choices) for it in items) / max(len(items), 1)


