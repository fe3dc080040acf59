"""FlexAttention (alaya.model.flex) computes the attention of the plain definition, written here with its own
broadcasting: softmax(q k^T / sqrt(d) + slope_h (j - i)) v over the keys a query may see (causal, its own
packed segment, valid keys, and always itself). Its forward runs on the CPU; its backward runs on CUDA only,
where benchmarks/gpu.py checks gradients against SDPA."""
import math

import pytest
import torch

from alaya.model.attention import alibi_slopes
from alaya.model.flex import ATTENTIONS, flex_layout, resolve_attention
from alaya.model.mpt import AlayaForCausalLM

H, D = 6, 16  # 6 heads: not a power of two, MPT's slope interleaving


def definition(q, k, v, slopes, past, valid=None, seg=None):
    B, _, T, d = q.shape
    S = k.shape[2]
    i = torch.arange(T)[:, None] + past
    j = torch.arange(S)[None, :]
    allowed = (j <= i)[None].expand(B, T, S)
    if seg is not None:
        allowed = allowed & (seg[:, :, None] == seg[:, None, :])
    if valid is not None:
        allowed = (allowed & valid.bool()[:, None, :]) | (j == i)[None]
    scores = q.double() @ k.double().transpose(-1, -2) / math.sqrt(d)
    scores = scores + slopes.double()[:, None, None] * (j - i).double()
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    return (scores.softmax(-1) @ v.double()).float()


def qkv(B, T, S, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, D, generator=g), torch.randn(B, H, S, D, generator=g),
            torch.randn(B, H, S, D, generator=g))


@pytest.mark.parametrize("rows", ["padded", "packed", "left padded"])
def test_flex_attention_equals_the_definition(rows):
    B, T = 3, 150  # not a multiple of the 128-token block
    q, k, v = qkv(B, T, T)
    slopes = alibi_slopes(H)
    valid, seg = torch.ones(B, T, dtype=torch.long), None
    if rows == "padded":
        for b, n in enumerate([150, 97, 3]):
            valid[b, n:] = 0
    elif rows == "left padded":
        for b, n in enumerate([150, 40, 130]):
            valid[b, : T - n] = 0
    else:  # packed rows: segments 1, 2, ... and padding (0) at the end
        seg = torch.zeros(B, T, dtype=torch.long)
        for b, lengths in enumerate([[60, 90], [10, 20, 30, 40], [149]]):
            at = 0
            for s, n in enumerate(lengths, 1):
                seg[b, at : at + n] = s
                at += n
        valid = (seg > 0).long()
    ours = flex_layout(slopes, valid, seg, 0, T).attend(q, k, v)
    torch.testing.assert_close(ours, definition(q, k, v, slopes, 0, valid, seg), atol=1e-5, rtol=1e-4)


def test_flex_attention_after_cached_keys_equals_the_definition():
    """A prefill of T tokens after ``past`` cached ones (queries at past.., keys 0..past+T-1)."""
    B, past, T = 2, 50, 100
    q, k, v = qkv(B, T, past + T, seed=1)
    slopes = alibi_slopes(H)
    valid = torch.ones(B, past + T, dtype=torch.long)
    valid[1, :30] = 0
    ours = flex_layout(slopes, valid, None, past, T).attend(q, k, v)
    torch.testing.assert_close(ours, definition(q, k, v, slopes, past, valid), atol=1e-5, rtol=1e-4)


def test_the_model_gives_the_same_logits_with_flex_as_with_sdpa(small_config):
    model = AlayaForCausalLM(small_config).eval()
    ids = torch.randint(0, 320, (2, 40))
    seg = torch.tensor([[1] * 15 + [2] * 20 + [0] * 5, [1] * 33 + [0] * 7])
    mask = (seg > 0).long()
    with torch.no_grad():
        want, _ = model(ids, attention_mask=mask, segment_ids=seg)
        model.attention = "flex"
        got, _ = model(ids, attention_mask=mask, segment_ids=seg)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=2e-5, rtol=1e-5)


def test_the_attention_choice():
    assert ATTENTIONS == ("auto", "sdpa", "flex")
    assert resolve_attention("auto", "cpu", training=True) == "sdpa"
    assert resolve_attention("auto", "cpu", training=False) == "sdpa"
    assert resolve_attention("flex", "cpu", training=False) == "flex"
    assert resolve_attention("sdpa", "cpu", training=True) == "sdpa"
    with pytest.raises(ValueError, match="no FlexAttention backward"):
        resolve_attention("flex", "cpu", training=True)
    with pytest.raises(ValueError, match="one of auto, sdpa, flex"):
        resolve_attention("dense", "cpu", training=True)


def test_one_compiled_block_serves_every_layer_and_new_batches_do_not_recompile(small_config):
    """train.compile compiles each block (alaya.train.builder.compile_for_training): the blocks share one code,
    so one graph serves all the layers; a new batch's block mask (a new closure over the same code) reuses it."""
    from torch._dynamo.utils import counters

    from alaya.train.builder import compile_for_training

    torch._dynamo.reset()
    model = AlayaForCausalLM(small_config.__class__(**{**small_config.__dict__, "n_layers": 4})).eval()
    model.attention = "flex"
    compile_for_training(model)
    assert model._compiled_call_impl is None  # the blocks are compiled, not the model
    assert all(block._compiled_call_impl is not None for block in model.transformer.blocks)
    ids = torch.randint(0, 320, (2, 64))
    graphs = []
    for cut in (10, 25, 40):
        seg = torch.ones(2, 64, dtype=torch.long)
        seg[:, cut:] = 2
        seg[1, 60:] = 0
        before = counters["stats"]["unique_graphs"]
        with torch.no_grad():
            model(ids, attention_mask=(seg > 0).long(), segment_ids=seg)
        graphs.append(counters["stats"]["unique_graphs"] - before)
    assert graphs == [1, 0, 0]
