"""`alaya quickstart --fast`: the whole recipe runs, leaves a chat model folder, and a rerun skips what is done."""
import json

import pytest
import torch

from conftest import SHARED_DATA

STEPS = ["curate", "tokenizer", "tokens", "pretrain", "sft-data", "sft", "merge", "infer", "eval"]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    work = tmp_path_factory.mktemp("qs") / "qs"
    lines: list[str] = []
    from alaya.quickstart import run_quickstart

    run_quickstart(workdir=work, fast=True, data_dir=SHARED_DATA, log=lines.append)
    return work, lines


@pytest.mark.slow
def test_quickstart_runs_every_step_and_leaves_a_chat_model_that_loads_in_transformers(quickstart):
    transformers = pytest.importorskip("transformers")
    work, lines = quickstart
    summary = json.loads((work / "summary.json").read_text())
    state = json.loads((work / "quickstart.json").read_text())
    assert list(state["steps"]) == STEPS
    assert summary["perplexity_after"] < summary["perplexity_before"]
    assert set(summary["chars_per_token"]) == {"en", "zh", "code"}
    # the pretraining mixture follows the recipe's language shares
    assert abs(summary["mixture_lang"]["zh"] - 0.32) < 0.02 and abs(summary["mixture_lang"]["en"] - 0.58) < 0.02
    from alaya.train.plot import read_metrics

    # how often pretraining goes over each language's tokens, from its definition: tokens drawn at the language's
    # weight over the language's tokens (40 steps × 16 rows × 256 tokens)
    from alaya.train.shards import TokenShards

    cfg = __import__("yaml").safe_load((work / "pretrain" / "config.yaml").read_text())
    w = cfg["data"]["weights"]
    tokens = {n: s.tokens for n, s in TokenShards(work / "tokens", "train").sources.items()}
    assert summary["tokens_drawn"] == 40 * 16 * 256
    assert summary["repeats"] == {k: round(40 * 16 * 256 * w[k] / sum(w.values()) / tokens[k], 2) for k in sorted(w)}
    assert any("pretraining repeats per language" in l for l in lines)
    train, evals, _ = read_metrics(work / "pretrain")
    assert len(train) == summary["steps"] == 40 and [e["step"] for e in evals] == [0, 10, 20, 30, 40]
    # SFT saw all six categories, identity and refusals generated with their held-out splits
    report = json.loads((work / "sft" / "data_report.json").read_text())
    assert {c for c, v in report["categories"].items() if v["examples"] > 0} == {
        "general", "reasoning", "hhh", "bias_refusal", "self_awareness", "role_play"}
    for name in ("identity.heldout.jsonl", "refusals.heldout.jsonl", "refusals.benign.heldout.jsonl"):
        assert (work / "sft" / "generated" / name).stat().st_size > 0
    answers = [json.loads(l) for l in (work / "sample-answers.jsonl").read_text().splitlines()]
    assert len(answers) == 8 and all("response" in a for a in answers)
    # the summary's scores are the evaluation's own numbers, rounded; their values depend on the CPU's float
    # rounding through 40 + 20 training steps, so no exact value holds on every machine
    results = json.loads((work / "eval" / "results.json").read_text())["results"]
    tasks = ["perplexity", "identity", "refusal", "over_refusal"]
    arc = (SHARED_DATA / "arc" / "arc_easy.jsonl").is_file()
    assert (summary["mc_skipped"] is None) == arc
    for task in tasks + (["arc_easy"] if arc else []):
        key = {"perplexity": "bits_per_byte,none", "arc_easy": "acc,none"}.get(task, "rate,none")
        assert summary["eval"][task] == round(results[task][key], 4), task
    for task in tasks[1:]:  # the chat-behaviour tasks say how often the model ended its reply itself
        assert summary["eval"][f"{task}_stop_rate"] == round(results[task]["stop_rate,none"], 4)
    assert any("alaya chat" in l for l in lines) and any("quickstart summary" in l for l in lines)
    model = transformers.AutoModelForCausalLM.from_pretrained(summary["model"])
    tok = transformers.AutoTokenizer.from_pretrained(summary["model"])
    ids = tok("### Instruction:\t\n你好\n\n### Output:\t\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


@pytest.mark.slow
def test_a_rerun_skips_checked_steps_redoes_a_damaged_one_and_refuses_other_settings(quickstart):
    from alaya.quickstart import run_quickstart

    work, _ = quickstart
    lines: list[str] = []
    run_quickstart(workdir=work, fast=True, data_dir=SHARED_DATA, log=lines.append)
    assert sum(l.endswith("; skipped") for l in lines) == len(STEPS)
    (work / "model" / "model.safetensors").unlink()  # outputs are checked, not just their folders
    lines.clear()
    run_quickstart(workdir=work, fast=True, data_dir=SHARED_DATA, log=lines.append)
    redone = [l for l in lines if l.startswith("[") and "skipped" not in l]
    assert len(redone) == 1 and "merging" in redone[0]
    assert (work / "model" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="--restart"):
        run_quickstart(workdir=work, fast=True, steps=41, data_dir=SHARED_DATA, log=lines.append)


def test_quickstart_checks_its_inputs_before_any_work(tmp_path):
    from alaya.quickstart import run_quickstart

    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        run_quickstart(workdir=tmp_path / "w", corpus=[str(tmp_path / "missing.jsonl")])
    with pytest.raises(ValueError, match="unknown model preset"):
        run_quickstart(workdir=tmp_path / "w", model_preset="alaya-huge")
