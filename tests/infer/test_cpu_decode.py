"""The compiled whole-network decoding step computes what the PyTorch forward computes."""
import copy
import threading

import pytest
import torch

from alaya.infer import cpu_decode
from alaya.infer.backends import KernelsBackend
from alaya.infer.generate import GenerationConfig, generate
from alaya.model.mpt import AlayaForCausalLM

PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [100]]


@pytest.fixture
def pair(small_config):
    ref = AlayaForCausalLM(small_config.replace(logit_scale=0.5)).eval().requires_grad_(False)
    with torch.no_grad():  # norms away from 1, so a missing norm weight would show
        for p in ref.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
        ref.transformer.wte.weight.mul_(3)
    fast = KernelsBackend(copy.deepcopy(ref))
    return ref, fast


def _prefill(model, prompts, capacity):
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), 2)
    mask = torch.zeros(len(prompts), capacity, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(p)
        mask[i, L - len(p):L] = True
    cache = model.new_cache(len(prompts), capacity)
    model(ids, attention_mask=mask[:, :L], cache=cache)
    return cache, mask, L


def test_the_few_rows_product_with_and_without_gelu():
    import numpy as np

    rng = np.random.default_rng(0)
    for rows in range(1, cpu_decode.FEW_ROWS + 1):  # in fours and the rest
        x = rng.standard_normal((rows, 300), dtype=np.float32)
        w = rng.standard_normal((77, 300), dtype=np.float32)
        expect = torch.from_numpy(x.astype(np.float64) @ w.T.astype(np.float64))
        out = np.empty((rows, 77), dtype=np.float32)
        cpu_decode.few_rows_product(x, w, out)
        torch.testing.assert_close(torch.from_numpy(out).double(), expect, atol=1e-4, rtol=1e-5)
        cpu_decode._product(x, w, cpu_decode.NO_SCALE, out, True)
        torch.testing.assert_close(torch.from_numpy(out).double(), torch.nn.functional.gelu(expect), atol=1e-4, rtol=1e-5)
        # int8 weights with one scale per output: the same product of the widened, scaled weights
        q = rng.integers(-127, 128, (77, 300)).astype(np.int8)
        scale = rng.uniform(0.001, 0.05, 77).astype(np.float32)
        expect8 = torch.from_numpy(x.astype(np.float64) @ (q.astype(np.float64) * scale[:, None].astype(np.float64)).T)
        cpu_decode.few_rows_product(x, q, out, scale)
        torch.testing.assert_close(torch.from_numpy(out).double(), expect8, atol=1e-4, rtol=1e-5)
        cpu_decode._product(x, q, scale, out, True)
        torch.testing.assert_close(torch.from_numpy(out).double(), torch.nn.functional.gelu(expect8), atol=1e-4, rtol=1e-5)


SIX = PROMPTS + [[60, 61], [70, 71, 72, 73, 74], [80] * 7]  # four rows in one block, two in the rest


@pytest.mark.parametrize("prompts", [PROMPTS, SIX], ids=["3 rows", "6 rows"])
@torch.inference_mode()
def test_steps_give_the_torch_logits_and_cache_with_padding_and_finished_rows(pair, prompts):
    ref, fast = pair
    assert isinstance(fast.fused, cpu_decode.FusedDecodeStep)
    cap = 24
    c_ref, mask, L = _prefill(ref, prompts, cap)
    c_fast, _, _ = _prefill(fast.model, prompts, cap)
    toks = torch.arange(9, 9 + len(prompts))[:, None]
    for step in range(6):
        pos = L + step
        mask[:, pos] = True
        if step >= 3:
            mask[1, pos] = False  # row 1 finished: its new positions are padding
        fused = fast.fused(toks, mask[:, : pos + 1], c_fast)
        assert fused is not None  # the compiled path ran
        expect, _ = ref(toks, attention_mask=mask[:, : pos + 1], cache=c_ref)
        assert fused.shape == expect.shape == (len(prompts), 1, ref.config.vocab_size)
        torch.testing.assert_close(fused, expect, atol=1e-4, rtol=1e-4)
        assert c_fast.length == c_ref.length == pos + 1
        torch.testing.assert_close(c_fast.keys[:, :, :, : pos + 1], c_ref.keys[:, :, :, : pos + 1])
        torch.testing.assert_close(c_fast.values[:, :, :, : pos + 1], c_ref.values[:, :, :, : pos + 1])
        toks = expect[:, -1].argmax(-1, keepdim=True)


def test_greedy_and_seeded_sampling_equal_the_torch_model(pair):
    ref, fast = pair
    greedy = GenerationConfig(max_new_tokens=30, temperature=0, eos_token_id=-1)
    assert generate(fast, PROMPTS, greedy) == generate(ref, PROMPTS, greedy)
    assert generate(fast, SIX, greedy) == generate(ref, SIX, greedy)
    sampled = GenerationConfig(max_new_tokens=30, temperature=0.8, top_p=0.9, seed=3, repetition_penalty=1.2)
    assert generate(fast, PROMPTS, sampled) == generate(ref, PROMPTS, sampled)


@torch.inference_mode()
def test_cases_it_does_not_handle_run_the_torch_path(pair):
    ref, fast = pair
    step = fast.fused
    # a bf16 cache, more rows than the kernels take, autocast: None, and the model's forward still answers
    cache, mask, L = _prefill(fast.model, PROMPTS, 20)
    bf16 = fast.model.new_cache(3, 20, dtype=torch.bfloat16)
    assert step(torch.tensor([[1], [2], [3]]), mask[:, : L + 1], bf16) is None
    many = [[7, 8]] * (cpu_decode.FEW_ROWS + 1)
    c_many, m_many, L2 = _prefill(fast.model, many, 8)
    m_many[:, L2] = True
    tok = torch.full((len(many), 1), 9)
    assert step(tok, m_many[:, : L2 + 1], c_many) is None
    got, _ = fast.model(tok, attention_mask=m_many[:, : L2 + 1], cache=c_many)
    c_ref, _, _ = _prefill(ref, many, 8)
    expect, _ = ref(tok, attention_mask=m_many[:, : L2 + 1], cache=c_ref)
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert step(torch.tensor([[1], [2], [3]]), mask[:, : L + 1], cache) is None


@torch.inference_mode()
def test_bad_token_ids_and_masks_are_refused_with_the_reason(pair):
    _, fast = pair
    cache, mask, L = _prefill(fast.model, PROMPTS, 20)
    mask[:, L] = True
    with pytest.raises(IndexError, match=r"\[0, 320\)"):
        fast.fused(torch.tensor([[1], [320], [3]]), mask[:, : L + 1], cache)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        fast.fused(torch.tensor([[1], [2], [3]]), mask[:, :L], cache)
    cache.length = cache.capacity
    with pytest.raises(ValueError, match="KV cache holds 20 positions"):
        fast.fused(torch.tensor([[1], [2], [3]]), torch.ones(3, 21, dtype=torch.bool), cache)


def test_new_weights_are_seen_never_stale_copies(pair):
    ref, fast = pair
    cfg = GenerationConfig(max_new_tokens=12, temperature=0, eos_token_id=-1)
    generate(fast, PROMPTS, cfg)  # the step has looked at the weights once
    torch.manual_seed(1)
    other = AlayaForCausalLM(ref.config).eval().requires_grad_(False)
    fast.model.load_state_dict(other.state_dict())  # copied in place
    assert generate(fast, PROMPTS, cfg) == generate(other, PROMPTS, cfg)
    with torch.no_grad():  # replaced storage (what a cast or a move does)
        fast.model.transformer.blocks[0].ffn.up_proj.weight.data = other.transformer.blocks[0].ffn.up_proj.weight * 2
        other.transformer.blocks[0].ffn.up_proj.weight.mul_(2)
    assert generate(fast, PROMPTS, cfg) == generate(other, PROMPTS, cfg)


def test_two_threads_decoding_at_once_both_get_their_own_answer(pair):
    ref, fast = pair
    cfg = GenerationConfig(max_new_tokens=40, temperature=0, eos_token_id=-1)
    expect = [generate(ref, [p], cfg) for p in PROMPTS]
    results: dict[int, list] = {}

    def work(i):
        results[i] = generate(fast, [PROMPTS[i]], cfg)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(PROMPTS))] == expect


def test_the_decoding_loop_runs_every_step_through_the_compiled_call(pair, monkeypatch):
    _, fast = pair
    calls = []
    real = cpu_decode.FusedDecodeStep.step
    monkeypatch.setattr(cpu_decode.FusedDecodeStep, "step", lambda self, *a: calls.append(1) or real(self, *a))
    generate(fast, PROMPTS, GenerationConfig(max_new_tokens=9, temperature=0, eos_token_id=-1))
    assert len(calls) == 8  # every token after the prefill's
    calls.clear()
    many = [[7, 8]] * (cpu_decode.FEW_ROWS + 1)  # too many rows: the PyTorch path, same answers
    generate(fast, many, GenerationConfig(max_new_tokens=3, temperature=0))
    assert calls == []


def test_a_fresh_process_can_time_and_run_the_compiled_step():
    # the load-time choice times fused steps before any other compiled call; the step runs the parallel
    # products from inside compiled code, a path on which numba does not start its thread pool, and without
    # the pool the process crashed (segfault). Run in fresh processes, the first may fill numba's cache.
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from alaya.model.config import ModelConfig\n"
        "from alaya.model.mpt import AlayaForCausalLM\n"
        "from alaya.infer.backends import KernelsBackend, choose_backend\n"
        "from alaya.infer.cpu_path import relayout_for_decoding\n"
        "from alaya.infer.generate import GenerationConfig, generate\n"
        "m = AlayaForCausalLM(ModelConfig(d_model=128, n_heads=4, n_layers=1, vocab_size=4096, max_seq_len=2048))\n"
        "m.eval().requires_grad_(False)\n"
        "relayout_for_decoding(m)\n"
        "choose_backend(m, 'measure').close()\n"
        "print(generate(KernelsBackend(m), [[5, 6, 7]], GenerationConfig(max_new_tokens=4, temperature=0, eos_token_id=-1)))\n"
    )
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
        assert done.stdout.startswith("[[")


def test_step_before_the_weights_were_looked_at_says_so(pair):
    import numpy as np

    ref, _ = pair
    fresh = cpu_decode.FusedDecodeStep(ref)  # handles() never called
    cache = ref.new_cache(1, 8)
    with pytest.raises(RuntimeError, match="before handles"):
        fresh.step(np.array([5]), np.ones((1, 1), dtype=bool), cache)
