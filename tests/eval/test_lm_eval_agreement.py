"""`alaya eval` and lm-evaluation-harness itself (its `hf` backend over transformers' MPT) on the same tiny
model folder, the same local files and the task YAMLs of configs/eval/lm_eval: the same per-item
log-likelihoods and choices, the same accuracy, the same GSM8K generations and verdicts."""
from __future__ import annotations


import pytest

from alaya.eval.lm_eval_tasks import write_lm_eval_tasks
from alaya.eval.run import EvalSettings, Evaluator, TaskSpec
from alaya.infer.loading import load_for_inference
from conftest import SHARED_DATA

NEEDED = [SHARED_DATA / "mmlu" / "mmlu.zip", SHARED_DATA / "ceval" / "ceval.zip", SHARED_DATA / "arc" / "arc_easy.jsonl",
          SHARED_DATA / "gsm8k_test" / "test.jsonl", SHARED_DATA / "gsm8k_train" / "train.jsonl"]
LIMIT = 6


@pytest.mark.slow
@pytest.mark.skipif(not all(p.exists() for p in NEEDED), reason=f"benchmark sets not present at {SHARED_DATA}")
def test_alaya_eval_agrees_with_lm_eval_per_item(model_dir, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                 "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(k, v)
    from lm_eval.tasks import TaskManager

    names = write_lm_eval_tasks(SHARED_DATA, tmp_path / "lm", ["mmlu", "ceval", "arc_easy", "gsm8k"],
                                subjects=["anatomy", "accountant"])
    assert names == ["alaya_mmlu_anatomy", "alaya_ceval_accountant", "alaya_arc_easy", "alaya_gsm8k"]
    ctx = 128
    max_new = ctx // 2  # what alaya eval uses on a 128-token model
    shots = 2
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},max_length={ctx},dtype=float32,device=cpu",
        tasks=names, num_fewshot=shots, limit=LIMIT, task_manager=TaskManager(include_path=str(tmp_path / "lm" / "tasks")),
        log_samples=True, batch_size=4, gen_kwargs=f"max_gen_toks={max_new}")

    model_backend, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    model = model_backend.model
    ev = Evaluator(EvalSettings(shots=shots, limit=LIMIT, batch_size=4, max_new_tokens=max_new, data_dir=SHARED_DATA,
                                progress=False))
    specs = [TaskSpec.parse(t) for t in ("mmlu:anatomy", "ceval:accountant", "gsm8k")]
    ours, samples = ev.run(model, tok, specs)

    for task, lm_task in (("mmlu", "alaya_mmlu_anatomy"), ("ceval", "alaya_ceval_accountant")):
        mine = [s for s in samples if s["task"] == task]
        their = sorted(theirs["samples"][lm_task], key=lambda s: s["doc_id"])
        assert len(mine) == len(their) == LIMIT
        for m, t in zip(mine, their):
            assert m["prompt"] == t["arguments"][0][0]  # the same prompt, shots included
            lls = [r[0][0] for r in t["resps"]]
            assert m["loglikelihoods"] == pytest.approx(lls, abs=2e-3)
            assert m["pred"] == max(range(len(lls)), key=lls.__getitem__)
            assert m["target"] == t["target"]
        assert ours["results"][task]["acc,none"] == pytest.approx(theirs["results"][lm_task]["acc,none"])
        assert ours["results"][task]["acc_norm,none"] == pytest.approx(theirs["results"][lm_task]["acc_norm,none"])

    mine = [s for s in samples if s["task"] == "gsm8k"]
    their = sorted((s for s in theirs["samples"]["alaya_gsm8k"] if s["filter"] == "strict-match"),
                   key=lambda s: s["doc_id"])  # lm-eval logs each item once per filter
    assert len(mine) == len(their) == LIMIT
    # greedy: the same text, but for one rule: where the token limit cuts a character in two, lm-eval shows
    # a trailing U+FFFD and alaya drops the incomplete character (its answers never end inside one)
    from alaya.infer.generate import GenerationConfig, generate

    for m, t in zip(mine, their):
        assert m["prompt"] == t["arguments"][0][0]
        ids = tok.encode(m["prompt"])[-(ctx - max_new):]
        new = generate(model, [ids], GenerationConfig(max_new_tokens=max_new, temperature=0.0))[0]
        cut = len(new) == max_new and tok.ends_inside_a_character(new) and t["resps"][0][0].endswith("\ufffd")
        assert m["generation"] == (t["resps"][0][0][:-1] if cut else t["resps"][0][0])
    for filt in ("strict-match", "flexible-extract"):
        assert ours["results"]["gsm8k"][f"exact_match,{filt}"] == pytest.approx(
            float(theirs["results"]["alaya_gsm8k"][f"exact_match,{filt}"]))


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "arc" / "arc_easy.jsonl").exists(), reason=f"ARC not present at {SHARED_DATA}")
def test_full_text_choices_agree_with_lm_eval(model_dir, tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(k, v)
    from lm_eval.tasks import TaskManager

    names = write_lm_eval_tasks(SHARED_DATA, tmp_path / "lm", ["arc_easy"])
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},max_length=128,dtype=float32,device=cpu", tasks=names,
        num_fewshot=0, limit=LIMIT * 2, task_manager=TaskManager(include_path=str(tmp_path / "lm" / "tasks")),
        log_samples=True, batch_size=4)
    model_backend, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    model = model_backend.model
    ours, samples = Evaluator(EvalSettings(shots=0, limit=LIMIT * 2, data_dir=SHARED_DATA, progress=False)).run(
        model, tok, [TaskSpec.parse("arc_easy")])
    their = sorted(theirs["samples"]["alaya_arc_easy"], key=lambda s: s["doc_id"])
    assert len(samples) == len(their) == LIMIT * 2
    for m, t in zip(samples, their):
        assert m["loglikelihoods"] == pytest.approx([r[0][0] for r in t["resps"]], abs=2e-3)
    for metric in ("acc", "acc_norm"):
        assert ours["results"]["arc_easy"][f"{metric},none"] == pytest.approx(theirs["results"]["alaya_arc_easy"][f"{metric},none"])


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "arc" / "arc_easy.jsonl").exists(), reason=f"ARC not present at {SHARED_DATA}")
def test_lm_eval_local_completions_scores_through_alaya_serve(model_dir, tmp_path, monkeypatch):
    """lm-eval's `local-completions` backend asks `alaya serve` for prompt log-probabilities (echo +
    logprobs) and gets the accuracy `alaya eval` computes in-process. ARC's first items fit the tiny
    model's 128 tokens: lm-eval's API backend keeps one token less of a too-long input than its hf backend."""
    lm_eval = pytest.importorskip("lm_eval")
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}.items():
        monkeypatch.setenv(k, v)
    from lm_eval.tasks import TaskManager

    from conftest import start_server

    names = write_lm_eval_tasks(SHARED_DATA, tmp_path / "lm", ["arc_easy"])
    proc, url = start_server(model_dir, "--model-name", "alaya-test")
    try:
        theirs = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=f"model=alaya-test,base_url={url}/v1/completions,tokenizer_backend=huggingface,"
                       f"tokenizer={model_dir},tokenized_requests=True,max_length=128,num_concurrent=1,max_retries=1",
            tasks=names, num_fewshot=0, limit=8, task_manager=TaskManager(include_path=str(tmp_path / "lm" / "tasks")),
            log_samples=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    model_backend, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    model = model_backend.model
    ours, samples = Evaluator(EvalSettings(shots=0, limit=8, data_dir=SHARED_DATA, progress=False)).run(
        model, tok, [TaskSpec.parse("arc_easy")])
    their = sorted(theirs["samples"]["alaya_arc_easy"], key=lambda s: s["doc_id"])
    assert len(samples) == len(their) == 8
    for m, t in zip(samples, their):
        assert m["loglikelihoods"] == pytest.approx([r[0][0] for r in t["resps"]], abs=2e-3)
    for metric in ("acc", "acc_norm"):
        assert ours["results"]["arc_easy"][f"{metric},none"] == pytest.approx(theirs["results"]["alaya_arc_easy"][f"{metric},none"])
