"""Instruction records in every format become one shape; malformed ones are quarantined with file, line and reason."""
import gzip
import json

import pytest

from alaya.data.documents import Quarantine
from alaya.sft.formats import example_from_record, read_examples
from conftest import SHARED_DATA


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_alpaca_sharegpt_and_openai_records_give_the_same_conversation():
    alpaca = {"instruction": "Translate", "input": "你好", "output": "Hello",
              "history": [["Hi", "Hello! How can I help?"]], "system": "Be brief."}
    sharegpt = {"system": "Be brief.", "conversations": [
        {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello! How can I help?"},
        {"from": "human", "value": "Translate\n你好"}, {"from": "gpt", "value": "Hello"}]}
    openai = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello! How can I help?"},
                           {"role": "user", "content": "Translate\n你好"}, {"role": "assistant", "content": "Hello"}]}
    exs = [example_from_record(r) for r in (alpaca, sharegpt, openai)]
    assert all(e.turns == exs[0].turns and e.system == "Be brief." for e in exs)
    assert exs[0].pairs == [("Hi", "Hello! How can I help?"), ("Translate\n你好", "Hello")]
    assert example_from_record(exs[0].to_json()).turns == exs[0].turns  # what we write reads back


def test_hh_and_dialogue_records():
    hh = example_from_record({"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: why?\n\nAssistant: because"}, "hh")
    assert hh.pairs == [("hi", "hello"), ("why?", "because")]
    d = example_from_record({"turns": [{"message": "a"}, "b", {"text": "c"}]}, "dialogue")
    assert d.pairs == [("a", "b")]  # the unanswered last utterance is dropped


def test_malformed_records_are_quarantined_with_file_line_and_reason_and_the_rest_is_read(tmp_path):
    f = write_jsonl(tmp_path / "mixed.jsonl", [
        {"instruction": "ok", "output": "fine"},
        '{"instruction": "broken',
        {"instruction": "no answer", "output": ""},
        {"instruction": 5, "output": "x"},
        {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
        {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"},
                      {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "user", "content": "a"}]},
        {"instruction": "ok", "output": "fine", "category": "poetry"},
        {"instruction": "second", "output": "good", "category": "reasoning"},
    ])
    q = Quarantine()
    exs = list(read_examples([str(f)], q, fmt=None, category="general"))
    assert [e.line for e in exs] == [1, 9] and [e.category for e in exs] == ["general", "reasoning"]
    reasons = {r.line: r.reason for r in q.records}
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 8} and q.count == 7
    assert "invalid JSON" in reasons[2] and "'output' is empty" in reasons[3] and "not a string" in reasons[4]
    assert "alternate" in reasons[5] and "system turn in the middle" in reasons[6]
    assert "ends with a user turn" in reasons[7] and "poetry" in reasons[8]
    assert all(r.file == str(f) for r in q.records)


def test_json_arrays_and_gzip_files_are_read_with_their_index(tmp_path):
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps([{"instruction": "q1", "output": "a1"}, 7, {"instruction": "q2", "output": "a2"}]))
    gz = tmp_path / "b.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"conversations": [{"from": "user", "value": "x"}, {"from": "assistant", "value": "y"}]}) + "\n")
    q = Quarantine()
    exs = list(read_examples([str(arr), str(gz)], q))
    assert [(e.source.endswith("a.json"), e.line) for e in exs] == [(True, 1), (True, 3), (False, 1)]
    assert q.count == 1 and q.records[0].line == 2 and "not an object" in q.records[0].reason


@pytest.mark.skipif(not (SHARED_DATA / "lf_alpaca_zh_demo").is_dir(), reason=f"shared SFT sets not present at {SHARED_DATA}")
def test_the_shared_instruction_sets_read_without_loss():
    q = Quarantine()
    n = sum(1 for _ in read_examples([str(SHARED_DATA / "lf_alpaca_zh_demo" / "alpaca_zh_demo.json")], q))
    assert n + q.count == 1000 and q.count == 0
    q = Quarantine()
    hh = list(read_examples([str(SHARED_DATA / "hh_rlhf_harmless_test" / "test.jsonl.gz")], q, fmt="hh"))
    assert len(hh) + q.count == 2312 and len(hh) > 2200 and max(len(e.pairs) for e in hh) > 3
