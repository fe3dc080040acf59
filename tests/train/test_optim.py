import math

import pytest
import torch

from alaya.train.optim import DecoupledAdamW, cosine_lr, set_lr


def test_cosine_schedule_with_linear_warmup_hand_values():
    kw = dict(lr_max=1.2e-4, min_lr=1.2e-5, warmup_steps=100, max_steps=1100)
    assert cosine_lr(0, **kw) == 0.0
    assert cosine_lr(50, **kw) == pytest.approx(0.6e-4)
    assert cosine_lr(100, **kw) == pytest.approx(1.2e-4)
    # halfway through the cosine: alpha + (1 - alpha) / 2 = 0.55 of lr_max
    assert cosine_lr(600, **kw) == pytest.approx(1.2e-4 * 0.55)
    assert cosine_lr(1100, **kw) == pytest.approx(1.2e-5)
    assert cosine_lr(5000, **kw) == pytest.approx(1.2e-5)  # tau clipped to 1


def test_decoupled_adamw_first_steps_match_hand_computation():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = DecoupledAdamW([p], lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.5)
    g = torch.tensor([0.5, 0.25])
    set_lr(opt, 0.05)  # lr_t / lr_max = 0.5
    p.grad = g.clone()
    opt.step()
    # decay first: p * (1 - 0.5 * 0.5); then Adam's first step moves by lr * sign(g) (m_hat / sqrt(v_hat) = 1)
    expected = torch.tensor([1.0, -2.0]) * 0.75 - 0.05 * torch.sign(g)
    assert torch.allclose(p.detach(), expected, atol=1e-6)
    # second step, by hand
    g2 = torch.tensor([-0.1, 0.3])
    p.grad = g2.clone()
    set_lr(opt, 0.1)
    before = p.detach().clone()
    opt.step()
    m = 0.9 * 0.1 * g + 0.1 * g2
    v = 0.95 * 0.05 * g**2 + 0.05 * g2**2
    m_hat, v_hat = m / (1 - 0.9**2), v / (1 - 0.95**2)
    expected2 = before * (1 - 1.0 * 0.5) - 0.1 * m_hat / (v_hat.sqrt() + 1e-8)
    assert torch.allclose(p.detach(), expected2, atol=1e-6)


def test_weight_decay_is_not_scaled_by_the_learning_rate_itself():
    p = torch.nn.Parameter(torch.ones(3))
    opt = DecoupledAdamW([p], lr=1e-3, weight_decay=0.1)
    p.grad = torch.zeros(3)
    opt.step()  # zero gradient: only the decay acts, by the full factor since lr_t == lr_max
    assert torch.allclose(p.detach(), torch.full((3,), 0.9))
    assert not math.isclose(0.9, 1 - 1e-3 * 0.1)


def _tiny_model():
    from alaya.model.config import preset
    from alaya.model.mpt import AlayaForCausalLM

    torch.manual_seed(0)
    return AlayaForCausalLM(preset("alaya-tiny", vocab_size=64, d_model=32, n_heads=4, n_layers=2, max_seq_len=32))


def test_train_step_clips_the_global_gradient_norm_to_0_3():
    from alaya.train.loop import train_step

    model = _tiny_model()
    batch = torch.randint(0, 64, (4, 16))
    model(batch, labels=batch)[1].backward()
    raw = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    model.zero_grad()
    seen = {}
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    orig = opt.step

    def spy(*a, **k):  # the gradients the optimizer receives
        seen["norm"] = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
        return orig(*a, **k)

    opt.step = spy
    loss, norm, _ = train_step(model, opt, [{"input_ids": batch, "labels": batch}], lr=0.0, grad_clip=0.3,
                               precision="fp32")
    assert norm == pytest.approx(float(raw), rel=1e-5) and raw > 0.3  # the reported norm is before clipping
    assert float(seen["norm"]) == pytest.approx(0.3, rel=1e-4)


def test_gradient_accumulation_equals_one_big_batch_and_checkpointing_changes_nothing():
    from alaya.train.loop import train_step

    batch = torch.randint(0, 64, (4, 16))
    results = []
    for micro, ckpt, precision in [([batch], False, "fp32"), ([batch[:2], batch[2:]], False, "fp32"),
                                   ([batch], True, "fp32"), ([batch], False, "bf16")]:
        model = _tiny_model()
        model.activation_checkpointing = ckpt
        # SGD: the update is the (clipped) gradient itself; Adam's first step would turn tiny rounding
        # differences of near-zero gradients into full-size sign flips
        opt = torch.optim.SGD(model.parameters(), lr=1e-2)
        micro = [{"input_ids": b, "labels": b} for b in micro]
        loss, norm, _ = train_step(model, opt, micro, lr=1e-2, grad_clip=0.3, precision=precision)
        results.append((loss, norm, torch.cat([p.detach().flatten() for p in model.parameters()])))
    one, accum, ckpt, bf16 = results
    assert accum[0] == pytest.approx(one[0], rel=1e-6) and accum[1] == pytest.approx(one[1], rel=1e-5)
    assert torch.allclose(accum[2], one[2], atol=1e-6)
    assert ckpt[0] == one[0] and torch.equal(ckpt[2], one[2])  # recomputation is exact
    assert bf16[0] == pytest.approx(one[0], rel=2e-2)  # bf16 autocast: close, not equal


@pytest.mark.parametrize("kernel", [{"foreach": True}, {"fused": True}])
def test_multi_tensor_and_fused_kernels_give_the_per_tensor_update(kernel):
    """Decoupled AdamW through torch's multi-tensor (foreach) or fused Adam kernels, as the builder runs it on
    CUDA, gives the per-tensor update: the same parameters after 5 steps, decay and schedule included."""
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(5)]
    runs = []
    for kwargs in ({"foreach": False}, kernel):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = DecoupledAdamW(params, lr=1e-2, weight_decay=0.1, **kwargs)
        for step, gs in enumerate(grads, 1):
            set_lr(opt, cosine_lr(step, 1e-2, 1e-3, 2, 5))
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()
        runs.append([p.detach() for p in params])
    for a, b in zip(*runs):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)
    assert any((a - s).abs().max() > 1e-3 for a, s in zip(runs[0], start))  # the steps moved the parameters
