"""Generated SFT data: identity dialogues and refusals with their held-out splits."""
import json

import pytest

from alaya.cli import main
from alaya.sft.identity import HELDOUT, QUESTIONS
from alaya.sft.refusals import BENIGN, REFUSALS, refusal_text
from conftest import SHARED_DATA


def lines(path):
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]


def test_identity_dialogues_name_the_configured_identity_in_both_languages(tmp_path):
    out = tmp_path / "id.jsonl"
    assert main(["sft", "identity", "--output", str(out), "--name", "Nova", "--name-zh", "新星",
                 "--developer", "Acme Labs", "--developer-zh", "极客实验室", "--examples", "3000"]) == 0
    rows = lines(out)
    assert len(rows) == 3000 and len({json.dumps(r["messages"], ensure_ascii=False) for r in rows}) == 3000
    langs = {r["meta"]["lang"] for r in rows}
    assert langs == {"en", "zh"} and sum(len(r["messages"]) > 2 for r in rows) > 500  # multi-turn too
    for r in rows:
        answer = r["messages"][-1]["content"]
        assert r["category"] == "self_awareness" and ("Nova" in answer or "新星" in answer)
        assert "Alaya" not in answer and "{" not in answer
    assert any("ChatGPT" in r["messages"][-2]["content"] for r in rows)  # denials
    held = lines(tmp_path / "id.heldout.jsonl")
    trained = {m["content"] for r in rows for m in r["messages"] if m["role"] == "user"}
    assert held and not any(h["prompt"] in trained for h in held)  # phrasings never seen in training
    assert {h["lang"] for h in held} == {"en", "zh"} and "新星" in held[0]["expect"]


def test_heldout_phrasings_are_disjoint_from_training_phrasings():
    for lang in ("en", "zh"):
        train = {c for cores in QUESTIONS[lang].values() for c in cores}
        assert not train & {c for cores in HELDOUT[lang].values() for c in cores}


def test_refusals_say_why_and_offer_an_alternative_and_vary():
    import random

    rng = random.Random(0)
    for lang in ("en", "zh"):
        for harm in REFUSALS[lang]:
            if harm == "open":
                continue
            texts = {refusal_text(lang, harm, rng) for _ in range(40)}
            assert len(texts) >= 4  # not one fixed sentence
            t = next(iter(texts))
            assert any(w in t for w in REFUSALS[lang][harm]["why"]) and any(a in t for a in REFUSALS[lang][harm]["alt"])
    assert set(BENIGN["en"]) == set(BENIGN["zh"]) == set(REFUSALS["en"]) - {"open"}


@pytest.mark.skipif(not (SHARED_DATA / "xsafety").is_dir(), reason=f"red-team sets not present at {SHARED_DATA}")
def test_refusal_data_from_the_red_team_sets(tmp_path):
    out = tmp_path / "ref.jsonl"
    assert main(["sft", "refusals", "--input", str(SHARED_DATA / "xsafety"), str(SHARED_DATA / "flames"),
                 "--output", str(out)]) == 0
    train, held = lines(out), lines(tmp_path / "ref.heldout.jsonl")
    benign, benign_held = lines(tmp_path / "ref.benign.jsonl"), lines(tmp_path / "ref.benign.heldout.jsonl")
    # XSafety: 14 files x 200 prompts per language, commonsense (2 x 200) skipped; Flames: 1000
    assert len(train) + len(held) == 2 * 13 * 200 + 1000
    assert 0.05 < len(held) / (len(train) + len(held)) < 0.15
    assert {r["meta"]["lang"] for r in train} == {"en", "zh"} and all(r["category"] == "bias_refusal" for r in train)
    trained = {r["messages"][0]["content"] for r in train}
    assert not any(h["prompt"] in trained for h in held)
    assert benign and benign_held and all(r["category"] == "hhh" for r in benign)
    assert {h["harm"] for h in benign_held} == set(BENIGN["en"])
