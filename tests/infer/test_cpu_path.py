import copy

import pytest
import torch

from alaya.infer.cpu_path import KernelLinear, switch_to_cpu_kernels, use_fastest_cpu_path
from alaya.infer.generate import BatchDecoder, GenerationConfig, generate
from alaya.infer.cpu_path import relayout_for_decoding
from alaya.model.mpt import AlayaForCausalLM

PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [100]]


@pytest.fixture
def pair(small_config):
    torch.manual_seed(0)
    ref = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    with torch.no_grad():
        ref.transformer.wte.weight.mul_(3)
    fast = copy.deepcopy(ref)
    relayout_for_decoding(fast)
    switch_to_cpu_kernels(fast)
    return ref, fast


def test_cpu_kernels_keep_parameters_and_give_the_same_logits_and_greedy_output(pair):
    ref, fast = pair
    assert fast.cpu_kernels and any(isinstance(m, KernelLinear) for m in fast.modules())
    assert list(fast.state_dict()) == list(ref.state_dict())
    ids = torch.tensor([PROMPTS[1]])
    with torch.inference_mode():
        a, _ = ref(ids)
        b, _ = fast(ids)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    cfg = GenerationConfig(max_new_tokens=20, temperature=0)
    assert generate(fast, PROMPTS, cfg) == generate(ref, PROMPTS, cfg)


def test_training_through_kernel_linear_still_has_gradients(pair):
    _, fast = pair
    fast.train().requires_grad_(True)
    _, loss = fast(torch.tensor([PROMPTS[1]]), labels=torch.tensor([PROMPTS[1]]))
    loss.backward()
    assert all(p.grad is not None for p in fast.parameters())
    with torch.no_grad():  # evaluation inside training: parameters still require grad
        logits, _ = fast(torch.tensor([PROMPTS[0]]))
    assert torch.isfinite(logits).all()


def test_torch_runs_one_thread_while_decoding_and_gets_its_threads_back(pair):
    _, fast = pair
    before = torch.get_num_threads()
    seen = []
    decoder = BatchDecoder(fast, PROMPTS, GenerationConfig(max_new_tokens=4, temperature=0))
    for _ in decoder:
        seen.append(torch.get_num_threads())
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
    # a consumer that stops early (a client gone) also restores them
    decoder = BatchDecoder(fast, PROMPTS, GenerationConfig(max_new_tokens=50, temperature=0))
    it = iter(decoder)
    next(it)
    it.close()
    assert torch.get_num_threads() == before
    # two decoders alive at once, finished in either order: the count comes back once both are done
    a = iter(BatchDecoder(fast, PROMPTS, GenerationConfig(max_new_tokens=50, temperature=0)))
    b = iter(BatchDecoder(fast, PROMPTS, GenerationConfig(max_new_tokens=50, temperature=0)))
    next(a), next(b)
    a.close()
    assert torch.get_num_threads() == 1
    b.close()
    assert torch.get_num_threads() == before


def test_bf16_models_keep_torch(small_config):
    m = AlayaForCausalLM(small_config).to(torch.bfloat16).eval()
    assert use_fastest_cpu_path(m) is False and not m.cpu_kernels
    assert not any(isinstance(x, KernelLinear) for x in m.modules())


def test_switching_back_restores_torch(pair):
    from alaya.infer.cpu_path import switch_to_torch

    ref, fast = pair
    switch_to_torch(fast)
    assert not fast.cpu_kernels and not any(isinstance(m, KernelLinear) for m in fast.modules())
    assert fast.head_linear is torch.nn.functional.linear
    ids = torch.tensor([PROMPTS[1]])
    with torch.inference_mode():
        assert torch.allclose(fast(ids)[0], ref(ids)[0], atol=1e-5)


@pytest.mark.parametrize("path", ["torch", "kernels"])
def test_alaya_cpu_path_sets_the_path_without_measuring(path, small_config, monkeypatch):
    monkeypatch.setenv("ALAYA_CPU_PATH", path)
    monkeypatch.setattr("alaya.infer.cpu_path._decode_step_seconds", lambda m: pytest.fail("measured"))
    m = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    relayout_for_decoding(m)
    assert use_fastest_cpu_path(m) is (path == "kernels")
    assert m.cpu_kernels is (path == "kernels") and any(isinstance(x, KernelLinear) for x in m.modules()) is (path == "kernels")


def test_the_choice_leaves_a_consistent_model_either_way(small_config, monkeypatch):
    monkeypatch.setenv("ALAYA_CPU_PATH", "measure")  # the tests pin the path (conftest); this one measures
    torch.manual_seed(0)
    ref = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    m = copy.deepcopy(ref)
    relayout_for_decoding(m)
    chose_kernels = use_fastest_cpu_path(m)  # which way depends on the machine; the model must work either way
    assert chose_kernels == m.cpu_kernels == any(isinstance(x, KernelLinear) for x in m.modules())
    assert (m.head_linear is torch.nn.functional.linear) != chose_kernels
    cfg = GenerationConfig(max_new_tokens=12, temperature=0)
    assert generate(m, PROMPTS, cfg) == generate(ref, PROMPTS, cfg)
