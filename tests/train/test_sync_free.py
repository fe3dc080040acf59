"""A training step waits for the accelerator nowhere: run on the accelerator layout (no per-example CPU
attention), inside a TorchDispatchMode, it calls none of the ops that read a device tensor on the host.
The batch's layout (real tokens, supervised positions) is computed on the host beforehand."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from alaya.model.attention import Unpadded
from alaya.model.config import preset
from alaya.model.mpt import AlayaForCausalLM
from alaya.train.batch import with_host_layout
from alaya.train.loop import train_step
from alaya.train.optim import DecoupledAdamW

aten = torch.ops.aten
SYNCS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.item.default}


class SyncRecorder(TorchDispatchMode):
    """Records every op that reads a tensor's values on the host (on a GPU: a sync)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCS or (func is aten._to_copy.default and (kwargs or {}).get("device") == torch.device("cpu")
                             and args[0].device.type != "cpu"):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def sft_like_batches():
    """Padded rows (some padding, so the real-token path runs) with prompts masked out of the loss."""
    g = torch.Generator().manual_seed(0)
    out = []
    for lengths in ([30, 12, 25], [8, 31, 20]):
        B, T = len(lengths), 32
        ids = torch.randint(4, 500, (B, T), generator=g)
        mask = torch.zeros(B, T, dtype=torch.long)
        labels = torch.full((B, T), -100)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
            labels[i, n // 2: n] = ids[i, n // 2: n]  # the second half is the reply
        out.append(with_host_layout({"input_ids": ids, "labels": labels, "attention_mask": mask}))
    return out


@pytest.mark.parametrize("pretraining", [False, True])
def test_a_training_step_calls_no_host_read_on_the_accelerator_layout(pretraining, monkeypatch):
    monkeypatch.setattr(Unpadded, "BY_EXAMPLE_DEVICES", ())  # attention on the [B, T] layout, as on a GPU
    torch.manual_seed(0)
    model = AlayaForCausalLM(preset("alaya-tiny", vocab_size=512, max_seq_len=64, n_layers=2))
    # the accelerator's optimizer: torch's fused Adam (alaya.train.builder.make_optimizer on CUDA), which keeps
    # its step count on the device; the per-tensor CPU kernel reads it with .item()
    opt = DecoupledAdamW(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=True)
    if pretraining:
        ids = torch.randint(4, 500, (2, 32))
        batches = [with_host_layout({"input_ids": ids, "labels": ids})]
    else:
        batches = sft_like_batches()
    with SyncRecorder() as rec:
        loss, norm, n = train_step(model, opt, batches, lr=1e-3, grad_clip=0.3, precision="fp32", read=False)
    assert rec.seen == []
    assert isinstance(loss, torch.Tensor) and isinstance(norm, torch.Tensor) and n > 0
    # reading them is one host read each: the recorder sees it (so the check above can fail)
    with SyncRecorder() as rec:
        float(loss), float(norm)
    assert rec.seen.count("aten._local_scalar_dense.default") == 2


def test_the_unread_step_computes_what_the_read_step_computes(monkeypatch):
    torch.manual_seed(0)
    a = AlayaForCausalLM(preset("alaya-tiny", vocab_size=512, max_seq_len=64, n_layers=2))
    b = AlayaForCausalLM(preset("alaya-tiny", vocab_size=512, max_seq_len=64, n_layers=2))
    b.load_state_dict(a.state_dict())
    opt_a = DecoupledAdamW(a.parameters(), lr=1e-3, weight_decay=1e-5)
    opt_b = DecoupledAdamW(b.parameters(), lr=1e-3, weight_decay=1e-5)
    for batches in (sft_like_batches(), sft_like_batches()):
        la, na, sa = train_step(a, opt_a, batches, lr=1e-3, grad_clip=0.3, precision="fp32", read=True)
        lb, nb, sb = train_step(b, opt_b, batches, lr=1e-3, grad_clip=0.3, precision="fp32", read=False)
        assert la == float(lb) and na == float(nb) and sa == sb
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_building_the_flex_attention_block_mask_reads_nothing_on_the_host():
    """train.attention flex (CUDA's default): the block mask of a padded or packed batch, built once per forward,
    is made without a host read (its backward runs on CUDA only, so the step itself is checked there:
    benchmarks/flex_parity.py)."""
    from alaya.model.attention import alibi_slopes
    from alaya.model.flex import flex_layout

    seg = torch.tensor([[1] * 100 + [2] * 150 + [0] * 6, [1] * 200 + [0] * 56])
    for mask, segments in (((seg > 0).long(), seg), ((seg > 0).long(), None)):
        with SyncRecorder() as rec:
            layout = flex_layout(alibi_slopes(6), mask, segments, 0, seg.shape[1])
        assert rec.seen == [] and layout.block_mask is not None
