"""LoRA for training: peft's layer math and init, PEFT folders that peft loads, merging."""
import copy

import pytest
import torch

from alaya.model.config import preset
from alaya.model.hf import save_model
from alaya.model.lora import (LoRALinear, lora_modules, adapter_config, adapter_state_dict, add_lora, merge_adapter, merge_lora,
                              save_adapter)
from alaya.model.mpt import AlayaForCausalLM

peft = pytest.importorskip("peft")
from transformers import MptForCausalLM  # noqa: E402


def tiny():
    torch.manual_seed(0)
    return AlayaForCausalLM(preset("alaya-tiny", vocab_size=320, d_model=64, n_heads=4, n_layers=2, max_seq_len=64))


def test_add_lora_freezes_the_base_and_starts_as_the_identity():
    m = tiny()
    ids = torch.randint(4, 320, (2, 12))
    with torch.no_grad():
        before = m(ids)[0]
    names = add_lora(m, r=4, alpha=8, dropout=0.0)
    assert len(names) == 8 and all(isinstance(m.get_submodule(n), LoRALinear) for n in names)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    with torch.no_grad():
        torch.testing.assert_close(m(ids)[0], before)  # B = 0 at init, as peft
    with pytest.raises(ValueError, match="match no Linear"):
        add_lora(tiny(), targets=["q_proj"])


def test_saved_adapter_loads_in_peft_and_gives_our_logits_and_merges_exactly(tmp_path):
    m = tiny()
    base_dir = tmp_path / "base"
    save_model(m, base_dir)
    add_lora(m, r=4, alpha=16, dropout=0.05, rslora=True)
    with torch.no_grad():  # a trained-looking adapter
        for n, p in m.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    m.eval()
    save_adapter(tmp_path / "adapter", adapter_config(4, 16, 0.05, ["Wqkv", "out_proj", "up_proj", "down_proj"], True,
                                                     str(base_dir)), adapter_state_dict(m))
    ids = torch.randint(4, 320, (2, 12))
    with torch.no_grad():
        ours = m(ids)[0]
        hf = peft.PeftModel.from_pretrained(MptForCausalLM.from_pretrained(base_dir), tmp_path / "adapter").eval()
        torch.testing.assert_close(hf(input_ids=ids).logits, ours, atol=2e-5, rtol=1e-4)
        # folding in place, and merging the saved folder into a fresh base, both give the adapted logits
        merged = merge_lora(m)
        assert not any(isinstance(x, LoRALinear) for x in merged.modules())
        torch.testing.assert_close(merged(ids)[0], ours, atol=2e-5, rtol=1e-4)
        fresh = tiny()
        merge_adapter(fresh, tmp_path / "adapter")
        torch.testing.assert_close(fresh(ids)[0], ours, atol=2e-5, rtol=1e-4)


def test_cpu_dropout_drops_at_rate_p_and_the_adapter_is_unbiased():
    from alaya.model.lora import cpu_dropout

    torch.manual_seed(0)
    x = torch.randn(512, 1024) + 3.0  # no exact zeros in x itself
    torch.manual_seed(1)
    y, keep = cpu_dropout(x, 0.05)
    assert keep == pytest.approx(1 - 3277 / 65536)
    dropped = y == 0
    n = x.numel()
    sigma = (0.05 * 0.95 / n) ** 0.5
    assert abs(float(dropped.float().mean()) - (1 - keep)) < 5 * sigma
    torch.testing.assert_close(y[~dropped], x[~dropped])  # kept values untouched (the scale goes elsewhere)
    torch.manual_seed(1)
    assert torch.equal(cpu_dropout(x, 0.05)[0], y)  # the default generator's draws: seeded, resumable
    # each of the four 16-bit draws in a 64-bit number drops at the same rate (none of them biased)
    for k in range(4):
        assert abs(float(dropped.flatten()[k::4].float().mean()) - (1 - keep)) < 5 * 2 * sigma

    # the layer: E[train output] equals the eval output (dropout's 1 / keep is in the adapter's scale)
    lin = LoRALinear(torch.nn.Linear(64, 32, bias=False), r=4, alpha=8, dropout=0.3, rslora=False)
    torch.nn.init.normal_(lin.lora_B.weight)
    inp = torch.randn(8, 64)
    with torch.no_grad():
        lin.eval()
        expected = lin(inp)
        lin.train()
        mean = sum(lin(inp) for _ in range(2000)) / 2000
    assert float((mean - expected).abs().max()) < 0.05 * float(expected.abs().max())
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(torch.nn.Linear(4, 4, bias=False), r=2, alpha=4, dropout=1.0, rslora=False)


def test_a_compiled_training_model_draws_the_dropout_eager_draws(small_config):
    """train.compile (alaya.train.builder.compile_for_training, each block compiled): the same RNG state gives
    the same dropout masks compiled and eager, so the outputs agree to float rounding (different masks
    differ by far more)."""
    from alaya.train.builder import compile_for_training

    torch.manual_seed(0)
    eager = AlayaForCausalLM(small_config)
    add_lora(eager, r=4, alpha=8, dropout=0.5)
    for m in lora_modules(eager).values():
        torch.nn.init.normal_(m.lora_B.weight)
    eager.train()
    compiled = copy.deepcopy(eager)
    compile_for_training(compiled)
    assert compiled.blocks_compiled
    x = torch.randint(0, small_config.vocab_size, (2, 24))
    outs = []
    for m in (eager, compiled, eager):
        torch.manual_seed(7)
        outs.append(m(x)[0])
    assert torch.equal(outs[0], outs[2])  # the seed fixes the masks
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4, rtol=1e-4)
    torch.manual_seed(8)
    assert (compiled(x)[0] - outs[0]).abs().max() > 0.1  # another draw: other masks, far apart  # another draw: other masks, far apart


def test_a_bf16_frozen_base_gives_the_bf16_lora_step_of_the_fp32_base(small_config):
    """train.precision bf16 + LoRA stores the frozen base in bf16 (alaya.sft.run.prepare_lora): under autocast
    the products saw those same bf16 weights, so the loss and the adapter's gradients are bitwise the same."""
    from alaya.model.lora import frozen_to
    from alaya.train.loop import loss_sum

    torch.manual_seed(0)
    fp32 = AlayaForCausalLM(small_config)
    add_lora(fp32, r=4, alpha=8, dropout=0.05)
    for m in lora_modules(fp32).values():
        torch.nn.init.normal_(m.lora_B.weight)
    bf16 = copy.deepcopy(fp32)
    frozen = [n for n, p in fp32.named_parameters() if not p.requires_grad and n != "transformer.wte.weight"]
    assert frozen_to(bf16, torch.bfloat16) == len(frozen)
    dtypes = {n: p.dtype for n, p in bf16.named_parameters()}
    assert {dtypes[n] for n in frozen} == {torch.bfloat16} and dtypes["transformer.wte.weight"] == torch.float32
    assert {p.dtype for p in bf16.parameters() if p.requires_grad} == {torch.float32}
    ids = torch.randint(0, small_config.vocab_size, (3, 40))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    losses, grads = [], []
    for model in (fp32, bf16):
        torch.manual_seed(3)  # the same dropout masks
        loss = loss_sum(model.train(), batch, torch.device("cpu"), "bf16")
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    assert torch.equal(losses[0], losses[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
