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
