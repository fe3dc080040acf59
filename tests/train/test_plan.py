import pytest
import torch

from alaya.cli import main
from alaya.model.config import preset
from alaya.model.mpt import AlayaForCausalLM
from alaya.train.plan import activation_bytes, measure_saved_activation_bytes, plan


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("shape", [(2, 128, 4, 256, 4, 4096), (3, 96, 6, 128, 2, 1000)])
def test_activation_estimate_matches_what_autograd_keeps(shape, precision, checkpointing):
    L, d, h, s, b, V = shape
    cfg = preset("alaya-tiny", n_layers=L, d_model=d, n_heads=h, max_seq_len=s, vocab_size=V)
    model = AlayaForCausalLM(cfg)
    measured = measure_saved_activation_bytes(model, torch.randint(0, V, (b, s)), precision, checkpointing)
    estimate = activation_bytes(cfg, s, b, precision, checkpointing)
    assert abs(estimate - measured) / measured < 0.02, (estimate, measured)


def test_plan_for_the_7b_recipe(capsys):
    p = plan("alaya-7b", gpus=8, micro_batch=4)
    mem = p["memory_gb"]
    assert p["parameters"] == 6_689_132_544 and p["seq_len"] == 2048
    assert mem["ddp"]["optimizer"] == pytest.approx(8 * 6.689, rel=1e-3)
    assert mem["fsdp"]["optimizer"] == pytest.approx(8 * 6.689 / 8, rel=1e-3)
    assert mem["ddp"]["fits"] is False and mem["fsdp+ckpt"]["fits"] is True
    assert mem["fsdp+ckpt"]["activations"] < mem["fsdp"]["activations"] / 4
    # time: 6N + 12 L d s FLOPs per token at 40 % of 989 TFLOP/s per GPU
    expect = (6 * 6_689_132_544 + 12 * 32 * 4096 * 2048) * 4 * 2048 * 8 / (8 * 989e12 * 0.4)
    assert p["step_seconds"] == pytest.approx(expect, rel=1e-3)
    assert main(["plan", "--model", "alaya-7b", "--gpus", "8"]) == 0
    assert "fsdp+ckpt" in capsys.readouterr().out
    assert main(["plan", "--model", "alaya-7b", "--mfu", "2"]) == 2
