import numpy as np
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


def run_decoder(model, prompts, cfgs, overlap, stop_row_at=None):
    """Decode with the accelerator's overlapped loop (or the host loop); optionally stop a row from outside
    after a number of steps, as a stop string or a gone client does."""
    from alaya.infer.generate import BatchDecoder

    decoder = BatchDecoder(model, prompts, cfgs)
    decoder.overlap = overlap
    for step, _ in enumerate(decoder):
        if stop_row_at and step == stop_row_at[1]:
            decoder.stop(stop_row_at[0], "cancelled")
    return decoder.tokens, decoder.finish_reason


def test_the_overlapped_loop_decodes_what_the_host_loop_decodes(model):
    """On an accelerator the chosen tokens are fed back on the device and the next step queued before they are
    read (BatchDecoder._overlapped_steps): every row's tokens and finish reason are the host loop's, with rows
    ending at eos, at their own lengths, stopped from outside, sampled with seeds and with a penalty."""
    greedy = GenerationConfig(max_new_tokens=20, temperature=0)
    first = generate(model, PROMPTS, greedy)
    k = next(k for k in range(1, 20) if first[0][k] not in first[0][:k])
    favourite = first[0][k]  # a token row 0 first gives after some steps becomes an end of sequence
    cases = [
        [greedy] * 3,
        [greedy.with_(eos_token_id=favourite), greedy.with_(max_new_tokens=5), greedy.with_(eos_token_id=favourite)],
        [GenerationConfig(max_new_tokens=12, temperature=0.9, top_p=0.8, seed=s) for s in (1, 2, 3)],
        [greedy.with_(repetition_penalty=1.3)] * 3,
    ]
    for cfgs in cases:
        assert run_decoder(model, PROMPTS, cfgs, True) == run_decoder(model, PROMPTS, cfgs, False)
    assert run_decoder(model, PROMPTS, [greedy] * 3, True, stop_row_at=(0, 3)) == \
        run_decoder(model, PROMPTS, [greedy] * 3, False, stop_row_at=(0, 3))
    tokens, reasons = run_decoder(model, PROMPTS, cases[1], True)
    assert reasons[1] == "length" and len(tokens[1]) == 5 and "stop" in reasons  # the cases did happen


def test_the_inverse_cdf_draw_is_the_definition():
    """sample_from against a plain-Python statement of inverse-CDF sampling: the first token whose running
    sum of probabilities exceeds u times the total. Probabilities in 64ths, so every sum is exact."""
    from alaya.infer.generate import sample_from

    g = torch.Generator().manual_seed(0)
    weights = torch.randint(0, 5, (6, 40), generator=g)
    weights[:, 0] = 0  # a token of probability 0 first ...
    weights[:, -3:] = 0  # ... and last (a banned or truncated token) is never drawn
    weights[:, 7] += 1  # every row has some mass
    probs = weights.float() / 64
    for u in [0.0, 1 / 2**24, 0.25, 0.5, 0.999, 1 - 1 / 2**24, *torch.rand(20, generator=g).tolist()]:
        drawn = sample_from(probs, torch.full((6,), u)).tolist()
        for row, token in zip(probs.tolist(), drawn):
            running, want = 0.0, None
            for k, p in enumerate(row):
                running += p
                if running > u * sum(row):
                    want = k
                    break
            assert token == want and row[token] > 0


def test_sampled_tokens_follow_the_distribution_and_each_row_its_own_seed():
    """row_uniforms are uniform: 20000 draws of a fixed distribution land within 4 standard deviations of
    each probability; one seed's stream is always the same, another seed's is not; no value reaches 1."""
    from alaya.infer.generate import row_uniforms, sample_from

    u = row_uniforms(12345, 20000)
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    assert np.array_equal(u, row_uniforms(12345, 20000)) and not np.array_equal(u[:50], row_uniforms(12346, 50))
    assert np.array_equal(row_uniforms(7, 30)[:10], row_uniforms(7, 10))  # draw t does not depend on the run's length
    probs = torch.tensor([0.5, 0.0, 0.2, 0.15, 0.1, 0.05])
    drawn = sample_from(probs.expand(len(u), -1), torch.from_numpy(u))
    freq = torch.bincount(drawn, minlength=len(probs)).double() / len(u)
    sigma = (probs.double() * (1 - probs.double()) / len(u)).sqrt()
    assert (freq - probs.double()).abs().le(4 * sigma + 1e-12).all(), freq
    assert freq[1] == 0


def test_a_step_of_sixteen_sampled_rows_is_one_draw_without_a_host_read(model):
    """Sampling is vectorised: a step of 16 seeded rows makes one inverse-CDF draw (one searchsorted), no
    multinomial per row, and, with the tokens kept on the device (the accelerator's loop), no host read."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from alaya.infer.generate import BatchDecoder

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.__name__)
            return func(*args, **(kwargs or {}))

    prompts = [PROMPTS[i % 3] for i in range(16)]
    cfgs = [GenerationConfig(max_new_tokens=4, temperature=0.8, top_p=0.9, seed=s) for s in range(16)]
    decoder = BatchDecoder(model, prompts, cfgs)
    assert decoder.candidates == 256  # on the CPU: topk among 256 first, and a host read to check they sufficed
    decoder.candidates = None  # what a decoder on an accelerator has: the vocabulary sorted, nothing read
    logits = torch.randn(16, model.config.vocab_size)
    with Ops() as ops:
        decoder._choose(logits, decoder.ids, 0, host=False)
    assert ops.names.count("searchsorted.Tensor") == 1 and not any("multinomial" in n for n in ops.names)
    assert not any(n.startswith(("_local_scalar_dense", "item", "nonzero")) for n in ops.names)



@pytest.mark.parametrize("candidates", [None, 4, 64])
def test_top_k_and_top_p_keep_what_transformers_keeps(candidates):
    """Each row's kept tokens against transformers' TopKLogitsWarper then TopPLogitsWarper, the reference a
    user knows, over rows of different settings in one batch: peaked and flat rows, top-k alone, top-p alone,
    both, neither. ``candidates`` small makes the CPU's search among the best tokens widen (4 -> 64 -> all)."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    from alaya.infer.generate import _filter_logits

    g = torch.Generator().manual_seed(0)
    settings = [(0, 0.9), (5, 1.0), (20, 0.8), (0, 1.0), (3, 0.5), (0, 0.3), (50, 0.95), (0, 0.99)]
    V = 300
    logits = torch.randn(len(settings), V, generator=g) * torch.tensor([6.0, 1, 4, 2, 0.5, 8, 1, 0.2])[:, None]
    temperature = torch.full((len(settings), 1), 0.7)
    top_k = torch.tensor([[k] for k, _ in settings])
    top_p = torch.tensor([[p] for _, p in settings])
    ours = _filter_logits(logits, temperature, top_k, top_p, True, candidates)
    for i, (k, p) in enumerate(settings):
        ref = logits[i : i + 1] / 0.7
        if k:
            ref = TopKLogitsWarper(top_k=k)(None, ref)
        if p < 1:
            ref = TopPLogitsWarper(top_p=p)(None, ref)
        kept = torch.isfinite(ours[i]).nonzero().flatten().tolist()
        assert kept == torch.isfinite(ref[0]).nonzero().flatten().tolist(), (i, k, p)
        torch.testing.assert_close(ours[i, kept], ref[0, kept])
    assert len(torch.isfinite(ours[7]).nonzero()) > 64  # the flat row's nucleus did reach past 64 candidates
