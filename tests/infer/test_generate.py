import pytest
import torch

from alaya.infer.generate import GenerationConfig, generate
from alaya.model.mpt import AlayaForCausalLM


@pytest.fixture
def model(small_config):
    m = AlayaForCausalLM(small_config).eval()
    with torch.no_grad():
        m.transformer.wte.weight.mul_(3)
    return m


PROMPTS = [[5, 6, 7], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50], [100]]


def test_greedy_output_is_the_same_alone_and_inside_a_batch_of_mixed_lengths(model):
    cfg = GenerationConfig(max_new_tokens=20, temperature=0)
    batched = generate(model, PROMPTS, cfg)
    for p, out in zip(PROMPTS, batched):
        assert generate(model, [p], cfg)[0] == out


def test_sampling_is_reproducible_for_a_seed_and_top_k_1_is_greedy(model):
    cfg = GenerationConfig(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    assert generate(model, PROMPTS, cfg) == generate(model, PROMPTS, cfg)
    greedy = generate(model, PROMPTS, GenerationConfig(max_new_tokens=16, temperature=0))
    top1 = generate(model, PROMPTS, GenerationConfig(max_new_tokens=16, temperature=0.7, top_k=1, top_p=1.0, seed=1))
    assert top1 == greedy


def test_banned_ids_never_appear_and_eos_stops_a_row(model):
    cfg = GenerationConfig(max_new_tokens=30, temperature=0, banned_token_ids=[3])
    plain = generate(model, PROMPTS, cfg)
    favourite = plain[0][0]
    banned = generate(model, PROMPTS, GenerationConfig(max_new_tokens=30, temperature=0, banned_token_ids=[3, favourite]))
    assert favourite not in banned[0]
    stopped = generate(model, PROMPTS, GenerationConfig(max_new_tokens=30, temperature=0, eos_token_id=favourite))
    assert stopped[0] == []  # the first greedy token is now the end of sequence
    assert all(3 not in row for row in plain + banned)
    # rows with different banned lists in one batch: each row follows its own list
    mixed = generate(model, PROMPTS, [GenerationConfig(max_new_tokens=30, temperature=0, banned_token_ids=[3, favourite]),
                                      cfg, GenerationConfig(max_new_tokens=30, temperature=0, banned_token_ids=[])])
    assert mixed[0] == banned[0] and mixed[1] == plain[1]
    assert mixed[2] == generate(model, [PROMPTS[2]], GenerationConfig(max_new_tokens=30, temperature=0,
                                                                       banned_token_ids=[]))[0]


def test_prompt_plus_new_tokens_beyond_the_context_is_refused(model):
    with pytest.raises(ValueError, match="exceeds the model's context"):
        generate(model, [[1] * 90], GenerationConfig(max_new_tokens=10, temperature=0))


def test_extreme_settings_never_produce_nan(model):
    for cfg in [GenerationConfig(max_new_tokens=8, repetition_penalty=5e-324, seed=0),
                GenerationConfig(max_new_tokens=8, temperature=1e-300, seed=0),
                GenerationConfig(max_new_tokens=8, temperature=1e-30, top_p=1e-9, top_k=1, seed=0)]:
        out = generate(model, PROMPTS, cfg)
        assert all(len(row) <= 8 and 3 not in row for row in out)
