"""Screening: scores match their definitions, every example is kept, dropped with a reason or waiting for
review, and the reviewers' decisions come back from CSV, JSONL and Label Studio exports."""
import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F

from alaya.cli import main
from alaya.model.hf import load_model
from alaya.prompt import INSTRUCTION_FORMAT, OUTPUT_FORMAT
from alaya.sft.screen import language_match, read_decisions, repetition, translationese
from alaya.tokenizer import AlayaTokenizer


def test_simple_signals():
    assert language_match("介绍一下长城", "长城很长。") == 1 and language_match("介绍一下长城", "It is long.") == 0
    assert language_match("把这句话翻译成英文：你好", "Hello") == 1  # a translation request
    assert repetition("a b c d e f") == 0.0
    assert repetition("hi hi hi hi hi hi") == pytest.approx(1 - 1 / 4)
    assert translationese("Hello world") == 0.0
    assert translationese("他被认为是一个非常好的人,他们的他的它的") > translationese("他是好人。")


def _loss(model, ids, start):
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0][0]
    return float(F.cross_entropy(logits[start - 1 : -1], torch.tensor(ids[start:])))


@pytest.fixture
def screened(tmp_path, base_dir):
    rows = [{"instruction": f"What is {a} plus {a}?", "output": f"{a} plus {a} is {2 * a}."} for a in range(10)]
    rows += [{"instruction": "介绍一下长城", "output": "The Great Wall is long."},
             {"instruction": "Say hi", "output": "hi hi hi hi hi hi hi hi hi hi"}, {"instruction": "bad", "output": ""}]
    src = tmp_path / "in.json"
    src.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "screened"
    assert main(["sft", "screen", "--model", str(base_dir), "--input", str(src), "--output", str(out),
                 "--review-share", "0.5", "--set", "max_ifd=5"]) == 0
    return out, rows


def test_scores_follow_their_definitions_and_the_counts_add_up(screened, base_dir):
    out, rows = screened
    m = json.loads((out / "manifest.json").read_text())
    assert m["read"] == 13 == m["quarantined"] + m["dropped"] + m["accepted"] + m["review"] and m["quarantined"] == 1
    recs = [json.loads(l) for l in (out / "scores.jsonl").read_text().splitlines()]
    by_source = {r["source"].rsplit(":", 1)[1]: r for r in recs}
    assert by_source["11"]["reason"] == "answer not in the question's language"
    assert by_source["12"]["reason"].startswith("repetition")
    # IFD = loss(answer | question) / loss(answer), written out here with the model itself
    model, tok = load_model(base_dir).eval(), AlayaTokenizer.load(base_dir)
    q, a = rows[3]["instruction"], rows[3]["output"]
    prompt, answer = tok.encode(INSTRUCTION_FORMAT.format(instruction=q)), tok.encode(OUTPUT_FORMAT.format(output=a))
    cond = _loss(model, prompt + answer, len(prompt))
    plain = _loss(model, [tok.bos_id] + answer, 1)
    s = by_source["4"]["scores"]
    assert s["ifd"] == pytest.approx(cond / plain, rel=1e-3) and s["ppl"] == pytest.approx(math.exp(cond), rel=1e-3)
    tasks = json.loads((out / "review" / "label_studio.json").read_text())
    assert len(tasks) == m["review"] and all(t["predictions"][0]["result"][0]["from_name"] == "decision" for t in tasks)
    assert "<Choices name=\"decision\"" in (out / "review" / "label_config.xml").read_text()


def test_review_decisions_come_back_from_csv_jsonl_and_label_studio(screened, tmp_path):
    out, _ = screened
    queue = [json.loads(l) for l in (out / "review" / "queue.jsonl").read_text().splitlines()]
    accepted = len((out / "accepted.jsonl").read_text().splitlines())
    assert len(queue) >= 2
    ids = [r["id"] for r in queue]
    # CSV: the queue file itself with the decision column filled in for all but one
    rows = list(csv.DictReader(open(out / "review" / "queue.csv", encoding="utf-8")))
    for i, r in enumerate(rows[:-1]):
        r["decision"] = "accept" if i % 2 == 0 else "reject"
    dec = tmp_path / "d.csv"
    with open(dec, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = json.loads(_run_apply(out, dec, tmp_path / "final.jsonl"))
    n_acc = sum(1 for i in range(len(rows) - 1) if i % 2 == 0)
    assert res["accepted_by_review"] == n_acc and res["rejected_by_review"] == len(rows) - 1 - n_acc
    assert res["pending"] == 1 and res["written"] == accepted + n_acc
    assert len((tmp_path / "final.jsonl").read_text().splitlines()) == res["written"]
    # Label Studio export and our JSONL read to the same decisions
    ls = [{"data": {"id": i}, "annotations": [{"result": [{"value": {"choices": ["reject"]}}]}]} for i in ids]
    (tmp_path / "ls.json").write_text(json.dumps(ls))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"id": i, "decision": "reject"}) + "\n" for i in ids))
    assert read_decisions(str(tmp_path / "ls.json")) == read_decisions(str(tmp_path / "d.jsonl")) == {i: "reject" for i in ids}
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": ids[0], "decision": "maybe"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_decisions(str(tmp_path / "bad.jsonl"))


def _run_apply(out, decisions, final):
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["sft", "screen", "apply", str(out), str(decisions), "--output", str(final)]) == 0
    return buf.getvalue()
