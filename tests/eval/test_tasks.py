"""Benchmark readers, prompts, answer rules and metrics, on the real files where present and on small
files written here for the error paths."""
from __future__ import annotations

import json
import zipfile
from fractions import Fraction

import pytest

from alaya.eval import generation as g
from alaya.eval import multiple_choice as mc
from alaya.eval.scorer import Scored
from alaya.eval.sources import CsvTree, EvalDataError
from conftest import SHARED_DATA

needs = lambda *parts: pytest.mark.skipif(not SHARED_DATA.joinpath(*parts).exists(),  # noqa: E731
                                          reason=f"{'/'.join(parts)} not present in {SHARED_DATA}")


@needs("ceval", "ceval.zip")
def test_ceval_subjects_prompt_and_shots():
    s = mc.load_ceval(SHARED_DATA)
    assert len(s.items) == 52 and sum(map(len, s.items.values())) == 1346
    mc.build_contexts(s, 2)
    it = s.items["accountant"][0]
    assert it.context.startswith("以下是中国关于注册会计师考试的单项选择题，请选出其中的正确答案。\n\n")
    assert it.context.count("答案：") == 3 and it.context.endswith("\n答案：")
    assert "答案：B\n\n" in it.context  # the first dev shot's answer, right after 答案： (no space)
    assert it.choices == ["A", "B", "C", "D"] and it.delimiter == ""


@needs("cmmlu")
def test_cmmlu_names_and_answers_stay_strings():
    s = mc.load_cmmlu(SHARED_DATA)
    assert len(s.items) == 67
    mc.build_contexts(s, 0)
    assert s.items["agronomy"][0].context.startswith("以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n")
    assert all(it.gold in range(4) for items in s.items.values() for it in items)


@needs("mmlu", "mmlu.zip")
def test_mmlu_has_no_header_and_57_subjects():
    s = mc.load_mmlu(SHARED_DATA)
    assert len(s.items) == 57 and len(s.items["anatomy"]) == 135 and len(s.shots["anatomy"]) == 5
    mc.build_contexts(s, 5)
    c = s.items["anatomy"][0].context
    assert c.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
    assert c.count("\nAnswer:") == 6


@needs("arc", "arc_easy.jsonl")
def test_arc_shots_come_from_the_file_and_are_not_scored():
    s0, s3 = mc.load_arc(SHARED_DATA, "easy", 0), mc.load_arc(SHARED_DATA, "easy", 3)
    assert len(s3.items["easy"]) == len(s0.items["easy"]) - 3
    assert s3.items["easy"][0].doc_id == s0.items["easy"][3].doc_id


@needs("logiqa2")
def test_logiqa2_zh_and_safetybench():
    s = mc.load_logiqa2(SHARED_DATA, True, 1)
    mc.build_contexts(s, 1)
    it = s.items["zh"][0]
    assert it.context.startswith("文章：") and it.context.endswith("答案：") and len(it.choices) == 4
    sb = mc.load_safetybench(SHARED_DATA, 0)
    assert len(sb.items) == 7 and all(len(it.choices) in (2, 3, 4) for v in sb.items.values() for it in v)


def test_a_csv_with_a_wrong_header_names_the_file_and_member(tmp_path):
    z = tmp_path / "bench.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("val/x_val.csv", "id,question,A,B,C,answer\n0,q,1,2,3,A\n")
        f.writestr("val/y_val.csv", "id,question,A,B,C,D,answer\n0,q,0.50,2,3\n")
        f.writestr("val/z_val.csv", "id,question,A,B,C,D,answer\n0,q,0.50,1e3,NA,None,A\n")
    tree = CsvTree(z, "test archive")
    with pytest.raises(EvalDataError, match=r"bench.zip:val/x_val.csv: the header .* lacks the columns \['D'\]"):
        tree.rows("val/x_val.csv", ["id", "question", "A", "B", "C", "D", "answer"])
    with pytest.raises(EvalDataError, match=r"y_val.csv:2: 5 columns, the header has 7"):
        tree.rows("val/y_val.csv", ["id", "question"])
    (row,) = tree.rows("val/z_val.csv", ["question", "A", "B", "C", "D", "answer"])
    assert [row[k] for k in "abcd"] == ["0.50", "1e3", "NA", "None"]  # strings as written, never numbers or NaN
    with pytest.raises(EvalDataError, match="not found"):
        CsvTree(tmp_path / "missing.zip", "C-Eval archive")


def test_a_bad_answer_letter_and_a_bad_jsonl_line_are_named(tmp_path):
    (tmp_path / "ceval").mkdir()
    with zipfile.ZipFile(tmp_path / "ceval" / "ceval.zip", "w") as f:
        f.writestr("val/s_val.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,E\n")
        f.writestr("dev/s_dev.csv", "id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n")
    (tmp_path / "ceval" / "mapping.json").write_text(json.dumps({"s": {"name": "科目", "category": "x"}}))
    with pytest.raises(EvalDataError, match=r"val/s_val.csv row 1: answer 'E' is not one of A, B, C, D"):
        mc.load_ceval(tmp_path)
    (tmp_path / "arc").mkdir()
    (tmp_path / "arc" / "arc_easy.jsonl").write_text('{"query": "q", "choices": ["a"], "gold": 0}\n{"query": \n')
    with pytest.raises(EvalDataError, match=r"arc_easy.jsonl:2: invalid JSON"):
        mc.load_arc(tmp_path, "easy", 0)


class FakeScorer:
    """Log-likelihoods chosen by the test, to check the metrics' definitions."""

    def __init__(self, values):
        self.values = values

    def loglikelihood(self, pairs, desc):
        assert len(pairs) == len(self.values)
        return [Scored(v, False, 1) for v in self.values]


def test_acc_acc_norm_and_acc_bytes_follow_their_definitions():
    it = mc.MCItem("s", "s/0", "Q", ["ab", "abcdefgh", "中文"], gold=1, context="Q")
    # raw: choice 0 wins (-2.5); per character: -1.25, -1.0, -1.5 → choice 1, the gold;
    # per byte (中文 is 6 bytes): -1.25, -1.0, -0.5 → choice 2
    (rec,) = mc.score_items(FakeScorer([-2.5, -8.0, -3.0]), [it], "t")
    assert rec["pred"] == 0 and rec["acc"] == 0.0
    assert rec["acc_norm"] == 1.0
    assert rec["acc_bytes"] == 0.0


def test_gsm8k_rules_match_lm_evals_filters():
    gen = "She has 3 + 4 = 7 apples.\n#### 1,234.\nQuestion: next"
    got, v = g.gsm8k_verdicts(gen, "worked answer\n#### 1234")
    assert got == {"strict-match": "1,234.", "flexible-extract": "1,234."}
    assert v == {"exact_match,strict-match": 1.0, "exact_match,flexible-extract": 1.0}
    got, v = g.gsm8k_verdicts("The answer is $18.", "#### 18")
    assert got["strict-match"] == "[invalid]" and v["exact_match,flexible-extract"] == 1.0
    lm_filters = pytest.importorskip("lm_eval.filters.extraction")
    f = lm_filters.RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
    for text in ["a 12 b 3.5 c", "no number", "x -7 y", "cost $1,000 total 20."]:
        assert g.gsm8k_extract(text)["flexible-extract"] == list(f.apply([[text]], [None]))[0][0]


def test_cmath_number_rule():
    assert g.last_number("答：还剩 9 页。") == 9
    assert g.last_number("是 3/4 米") == Fraction(3, 4)
    assert g.last_number("占 25%") == Fraction(1, 4)
    assert g.numbers_equal(g.last_number("约 0.33333"), Fraction(1, 3), rel=1e-4) is True
    assert g.number_verdict("所以答案是 1,200 元", "1200", "last-number")[1] == {"exact_match,last-number": 1.0}
    assert g.number_verdict("没有数字", "5", "last-number")[1] == {"exact_match,last-number": 0.0}
    with pytest.raises(EvalDataError, match="not a number"):
        g.number_verdict("1", "abc", "m")


@needs("gsm8k_test", "test.jsonl")
def test_gsm8k_shots_are_train_problems_with_worked_answers():
    items, shots = g.load_gsm8k(SHARED_DATA, 3)
    assert len(items) == 1319 and len(shots) == 3
    g.build_contexts(items, shots, zh=False)
    c = items[0].context
    assert c.count("Question: ") == 4 and c.count("#### ") == 3 and c.endswith("\nAnswer:")


def test_an_item_with_an_empty_choice_is_left_out_named_and_counted(tmp_path, capsys):
    # LogiQA 2.0 zh has such an item (test_zh/14133, whose empty choice is the gold one): lm-eval would give the
    # empty continuation log-probability 0, so it would always be picked
    from alaya.eval.run import EvalSettings, Evaluator, TaskSpec

    (tmp_path / "arc").mkdir()
    rows = [{"query": "Question: Which is a fruit?", "choices": ["apple", "stone"], "gold": 0},
            {"query": "Question: Which is empty?", "choices": ["", "full"], "gold": 0},
            {"query": "Question: Which is blue?", "choices": ["sky", "grass"], "gold": 0}]
    (tmp_path / "arc" / "arc_easy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ev = Evaluator(EvalSettings(shots=0, data_dir=tmp_path, progress=False))
    ev.load_data([TaskSpec.parse("arc_easy")])
    kept = [it for items in ev.loaded[0].values() for it in items]
    assert [it.choices[0] for it in kept] == ["apple", "sky"]
    assert len(ev.left_out["arc_easy"]) == 1 and "choice A is empty" in ev.left_out["arc_easy"][0]
    assert "arc_easy: 1 item(s) left out" in capsys.readouterr().err
