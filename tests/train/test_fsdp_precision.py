"""FSDP2 under train.precision=bf16 computes with bf16 parameters and keeps fp32 master weights and gradients
(MixedPrecisionPolicy, as torchtitan sets it); fp32 stays fp32. One process, a gloo group of one."""
import pytest
import torch
import torch.distributed as dist

from alaya.model.config import preset
from alaya.model.mpt import AlayaForCausalLM
from alaya.train import distributed
from conftest import free_port

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")


@pytest.fixture
def group():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield distributed.Dist(device=torch.device("cpu"))
    dist.destroy_process_group()


@pytest.mark.parametrize("precision,compute", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_fsdp_parameters_compute_in_the_training_precision(precision, compute, group):
    torch.manual_seed(0)
    model = AlayaForCausalLM(preset("alaya-tiny", vocab_size=64, d_model=32, n_heads=2, n_layers=2, max_seq_len=16))
    seen = []
    model.transformer.blocks[0].attn.Wqkv.register_forward_pre_hook(lambda m, args: seen.append(m.weight.dtype))
    model = distributed.wrap(model, "fsdp", group, precision)
    ids = torch.randint(0, 64, (2, 8))
    logits = model(ids)[0]
    logits.float().sum().backward()
    assert seen == [compute]
    w = model.transformer.blocks[0].attn.Wqkv.weight
    assert w.dtype == torch.float32 and w.grad.dtype == torch.float32  # master weights and gradients stay fp32
