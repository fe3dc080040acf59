"""Decoding backends: the compiled CPU kernels decode what PyTorch decodes, the choice between them, and a
model that no backend has patched."""
import copy

import pytest
import torch

from alaya.infer.backends import KernelsBackend, TorchBackend, choose_backend
from alaya.infer.cpu_path import KernelHead, KernelLinear, relayout_for_decoding
from alaya.infer.generate import BatchDecoder, GenerationConfig, generate
from alaya.model.mpt import AlayaForCausalLM, TiedHead

PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [100]]


def _kernel_modules(model) -> int:
    return sum(isinstance(m, (KernelLinear, KernelHead)) for m in model.modules())


@pytest.fixture
def pair(small_config):
    torch.manual_seed(0)
    ref = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    with torch.no_grad():
        ref.transformer.wte.weight.mul_(3)
    fast = copy.deepcopy(ref)
    relayout_for_decoding(fast)
    return ref, KernelsBackend(fast)


def test_cpu_kernels_keep_parameters_and_give_the_same_logits_and_greedy_output(pair):
    ref, fast = pair
    # every Linear and the tied head multiply in the kernels; the parameters and state dict are the model's
    assert _kernel_modules(fast.model) == 4 * ref.config.n_layers + 1
    assert list(fast.model.state_dict()) == list(ref.state_dict())
    ids = torch.tensor([PROMPTS[1]])
    with torch.inference_mode():
        a, _ = ref(ids)
        b, _ = fast.model(ids)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    cfg = GenerationConfig(max_new_tokens=20, temperature=0)
    assert generate(fast, PROMPTS, cfg) == generate(ref, PROMPTS, cfg)


def test_no_backend_patches_attributes_onto_the_model(small_config):
    m = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    before = set(vars(m))
    backend = KernelsBackend(m)
    assert set(vars(m)) == before  # its modules changed places, nothing was added to the model
    backend.close()
    assert set(vars(m)) == before and _kernel_modules(m) == 0
    assert isinstance(m.head, TiedHead)


def test_training_through_kernel_linear_still_has_gradients(pair):
    _, fast = pair
    model = fast.model.train().requires_grad_(True)
    _, loss = model(torch.tensor([PROMPTS[1]]), labels=torch.tensor([PROMPTS[1]]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():  # evaluation inside training: parameters still require grad
        logits, _ = model(torch.tensor([PROMPTS[0]]))
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


def test_bf16_models_decode_with_torch_and_refuse_the_kernels_by_name(small_config):
    m = AlayaForCausalLM(small_config).to(torch.bfloat16).eval()
    for path in ("auto", "measure", "torch"):
        assert type(choose_backend(m, path)) is TorchBackend
    assert _kernel_modules(m) == 0
    with pytest.raises(ValueError, match="--decode-path kernels runs on CPU in float32"):
        choose_backend(m, "kernels")
    with pytest.raises(ValueError, match="--decode-path must be one of auto, torch, kernels, graphs, measure"):
        choose_backend(m, "fast")


def test_closing_gives_the_model_back_to_torch(pair):
    ref, fast = pair
    fast.close()
    assert _kernel_modules(fast.model) == 0
    ids = torch.tensor([PROMPTS[1]])
    with torch.inference_mode():
        assert torch.allclose(fast.model(ids)[0], ref(ids)[0], atol=1e-5)


@pytest.mark.parametrize("path", ["torch", "kernels"])
def test_alaya_cpu_path_sets_what_auto_means_without_measuring(path, small_config, monkeypatch):
    monkeypatch.setenv("ALAYA_CPU_PATH", path)
    monkeypatch.setattr("alaya.infer.backends._measure", lambda *a: pytest.fail("measured"))
    m = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    relayout_for_decoding(m)
    backend = choose_backend(m, "auto")
    assert backend.name == path and (_kernel_modules(m) > 0) is (path == "kernels")


@pytest.mark.parametrize("path", ["torch", "kernels"])
def test_the_decode_path_setting_wins_over_the_kept_choice(path, small_config, monkeypatch):
    monkeypatch.setenv("ALAYA_CPU_PATH", "kernels" if path == "torch" else "torch")
    monkeypatch.setattr("alaya.infer.backends._measure", lambda *a: pytest.fail("measured"))
    m = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    assert choose_backend(m, path).name == path


def test_auto_uses_the_kept_measurement_and_measure_renews_it(small_config, monkeypatch):
    from alaya.infer.cpu_path import remember_choice

    monkeypatch.setenv("ALAYA_CPU_PATH", "auto")
    m = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    remember_choice(m, "kernels", {"torch_step_ms": 2.0, "kernels_step_ms": 1.0})
    monkeypatch.setattr("alaya.infer.backends._measure", lambda *a: pytest.fail("measured"))
    backend = choose_backend(m, "auto")
    assert backend.name == "kernels"
    backend.close()
    monkeypatch.setattr("alaya.infer.backends._measure", lambda model, pair, margin: "torch")
    assert choose_backend(m, "measure").name == "torch"


def test_the_measured_choice_leaves_a_consistent_model_either_way(small_config, monkeypatch):
    from alaya.infer.cpu_path import read_choice

    torch.manual_seed(0)
    ref = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    m = copy.deepcopy(ref)
    relayout_for_decoding(m)
    backend = choose_backend(m, "measure")  # which way depends on the machine; the model must work either way
    assert read_choice(m) == backend.name
    assert (_kernel_modules(m) > 0) is (backend.name == "kernels")
    cfg = GenerationConfig(max_new_tokens=12, temperature=0)
    assert generate(backend, PROMPTS, cfg) == generate(ref, PROMPTS, cfg)


def test_the_cli_offers_every_decode_path():
    from alaya.cli import build_parser
    from alaya.infer.backends import DECODE_PATHS

    parser = build_parser()
    for cmd in (["infer", "m", "in", "out"], ["chat", "m"], ["serve", "m"], ["eval", "m", "--task", "arc_easy"]):
        assert parser.parse_args(cmd).decode_path == "auto"
        for path in DECODE_PATHS:
            assert parser.parse_args(cmd + ["--decode-path", path]).decode_path == path
        assert parser.parse_args(cmd).attention == "auto"
        assert parser.parse_args(cmd + ["--attention", "flex"]).attention == "flex"


def test_flex_attention_for_prompts_answers_what_sdpa_answers(model_dir):
    """--attention flex: the prompts (left-padded, batched) attend through FlexAttention, the decoding steps
    through SDPA; the greedy answers are those of --attention sdpa, and auto is sdpa when decoding."""
    from alaya.infer.loading import load_for_inference

    prompts = ["你好，请介绍一下长城。", "Who are you?", "Tell me about the Great Wall of China in one sentence."]
    cfg = GenerationConfig(max_new_tokens=12, temperature=0)
    answers = {}
    for attention in ("sdpa", "flex", "auto"):
        backend, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32", decode_path="torch",
                                          attention=attention)
        assert backend.model.attention == ("sdpa" if attention == "auto" else attention)
        answers[attention] = generate(backend, [tok.encode(p) for p in prompts], cfg)
    assert answers["flex"] == answers["sdpa"] == answers["auto"]


@pytest.mark.parametrize("other", ["kernels", "graphs"])
def test_auto_falls_back_to_the_torch_path_when_the_other_path_fails_to_build(other, small_config, monkeypatch,
                                                                             capsys):
    """The timed pass of ``auto`` never leaves a user without decoding: when the other path fails here (a
    kernel that does not compile, a graph that cannot be captured), it says so, keeps ``torch`` as this
    machine's choice with the reason, and the model decodes as it did."""
    from alaya.infer import backends
    from alaya.infer.cpu_path import _read_choices, read_choice

    torch.manual_seed(0)
    ref = AlayaForCausalLM(small_config).eval().requires_grad_(False)
    m = copy.deepcopy(ref)
    relayout_for_decoding(m)

    def broken(*a, **kw):
        raise RuntimeError("no kernel for this machine\nsecond line")

    if other == "kernels":
        monkeypatch.setattr(backends, "FusedDecodeStep", broken)  # fails after the Linears were swapped
    else:
        monkeypatch.setattr(backends, "decode_step_seconds",
                            lambda b: broken() if b.name == "graphs" else 1.0)
    assert backends._measure(m, ("torch", other), 1.15) == "torch"
    err = capsys.readouterr().err
    assert f"--decode-path {other} failed on this machine (RuntimeError: no kernel for this machine)" in err
    assert read_choice(m) == "torch"
    assert next(v for v in _read_choices().values() if v.get("failed") == other)["error"].startswith("RuntimeError")
    assert _kernel_modules(m) == 0
    cfg = GenerationConfig(max_new_tokens=12, temperature=0)
    assert generate(TorchBackend(m), PROMPTS, cfg) == generate(ref, PROMPTS, cfg)
