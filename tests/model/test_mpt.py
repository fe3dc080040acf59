import math

import pytest
import torch

from alaya.model.attention import alibi_slopes
from alaya.model.mpt import AlayaForCausalLM


def test_alibi_slopes_follow_the_recipe_for_power_of_two_and_other_head_counts():
    s8 = alibi_slopes(8, 8)
    assert torch.allclose(s8, torch.tensor([2 ** (-8 * h / 8) for h in range(1, 9)]))
    s6 = alibi_slopes(6, 8)  # N = 8: concat(s[1::2], s[::2])[:6] with s the 8 slopes above
    full = [2 ** (-8 * h / 8) for h in range(1, 9)]
    assert torch.allclose(s6, torch.tensor((full[1::2] + full[::2])[:6]))


def test_future_tokens_do_not_change_past_logits(small_config):
    model = AlayaForCausalLM(small_config).eval()
    a = torch.randint(0, 320, (1, 12))
    b = a.clone()
    b[0, 8:] = torch.randint(0, 320, (4,))
    with torch.no_grad():
        la, _ = model(a)
        lb, _ = model(b)
    assert torch.allclose(la[0, :8], lb[0, :8], atol=1e-6)
    assert not torch.allclose(la[0, 8:], lb[0, 8:])


def test_left_padding_gives_the_same_logits_as_the_unpadded_sequence(small_config):
    model = AlayaForCausalLM(small_config).eval()
    seq = torch.randint(4, 320, (1, 9))
    padded = torch.cat([torch.full((1, 5), 2), seq], dim=1)
    mask = torch.cat([torch.zeros(1, 5, dtype=torch.long), torch.ones(1, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone, _ = model(seq)
        batched, _ = model(padded, attention_mask=mask)
    assert torch.allclose(alone[0], batched[0, 5:], atol=1e-5)
    assert torch.isfinite(batched).all()  # padded query rows give no NaN


def test_kv_cache_decoding_matches_a_full_forward(small_config):
    model = AlayaForCausalLM(small_config).eval()
    ids = torch.randint(0, 320, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, :3] = 0
    with torch.no_grad():
        full, _ = model(ids, attention_mask=mask)
        cache = model.new_cache(2, 32)
        step_logits = [model(ids[:, :10], attention_mask=mask[:, :10], cache=cache)[0]]
        for t in range(10, 16):
            step_logits.append(model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache)[0])
    inc = torch.cat(step_logits, dim=1)
    assert cache.length == 16
    assert torch.allclose(full[0], inc[0], atol=1e-5)
    assert torch.allclose(full[1, 3:], inc[1, 3:], atol=1e-5)


def test_loss_is_next_token_cross_entropy_with_ignore_index(small_config):
    model = AlayaForCausalLM(small_config).eval()
    ids = torch.randint(0, 320, (2, 10))
    labels = ids.clone()
    labels[:, :4] = -100
    logits, loss = model(ids, labels=labels)
    ref = torch.nn.functional.cross_entropy(logits[:, 3:-1].reshape(-1, 320), ids[:, 4:].reshape(-1))
    assert torch.allclose(loss, ref, atol=1e-6)


def test_initialisation_is_kaiming_fan_in_with_scaled_residual_projections():
    from alaya.model.config import ModelConfig

    cfg = ModelConfig(d_model=256, n_heads=4, n_layers=8, vocab_size=1024, max_seq_len=64)
    model = AlayaForCausalLM(cfg)
    blk = model.transformer.blocks[0]
    std = math.sqrt(2 / 256)
    assert blk.attn.Wqkv.weight.std().item() == pytest.approx(std, rel=0.05)
    assert blk.ffn.down_proj.weight.std().item() == pytest.approx(math.sqrt(2 / 1024) / 4, rel=0.05)
    assert blk.attn.out_proj.weight.std().item() == pytest.approx(std / 4, rel=0.05)
    assert torch.all(blk.norm_1.weight == 1)
    assert all(not n.endswith("bias") for n, _ in model.named_parameters())


def test_bf16_autocast_and_bf16_weights_stay_close_to_fp32(small_config):
    model = AlayaForCausalLM(small_config).eval()
    ids = torch.randint(0, 320, (2, 24))
    with torch.no_grad():
        ref, _ = model(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto, _ = model(ids)
        bf16, _ = model.to(torch.bfloat16)(ids)
    assert auto.dtype == torch.bfloat16 and bf16.dtype == torch.bfloat16
    for out in (auto.float(), bf16.float()):
        assert (out - ref).abs().max() < 0.1 * ref.abs().max()
        assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_training_backward_with_activation_checkpointing_matches(small_config):
    model = AlayaForCausalLM(small_config).train()
    ids = torch.randint(0, 320, (2, 16))
    _, loss = model(ids, labels=ids)
    loss.backward()
    g1 = model.transformer.wte.weight.grad.clone()
    model.zero_grad()
    model.activation_checkpointing = True
    _, loss2 = model(ids, labels=ids)
    loss2.backward()
    assert torch.allclose(loss, loss2)
    assert torch.allclose(g1, model.transformer.wte.weight.grad, atol=1e-6)


def test_the_decoding_step_bias_equals_the_general_bias():
    from alaya.model.attention import attention_bias, decode_bias

    g = torch.Generator().manual_seed(0)
    slopes = alibi_slopes(6)
    for S in (1, 2, 9):
        valid = torch.rand(3, S, generator=g) > 0.4  # padding anywhere, the last key sometimes padding too
        for dtype in (torch.float32, torch.bfloat16):
            want = attention_bias(slopes, torch.tensor([S - 1]), valid, S, dtype)
            got = decode_bias(slopes, valid, dtype)
            assert got.shape == want.shape == (3, 6, 1, S) and got.dtype == dtype
            assert torch.equal(got, want)
