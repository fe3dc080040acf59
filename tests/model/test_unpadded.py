"""A padded or packed batch runs on its real tokens only (and, on the CPU, attention example by example),
and the training loss takes the head's logits only where a label is supervised. Each is checked against
the definition: every example run alone, unpadded, with the full logits and a plain cross-entropy."""
import pytest
import torch
import torch.nn.functional as F

from alaya.model.attention import Unpadded, _contiguous_runs
from alaya.model.mpt import AlayaForCausalLM
from alaya.train.loop import IGNORE, loss_sum, row_losses

LENGTHS = [20, 7, 33, 1, 12]


@pytest.fixture(params=["by example", "padded layout"])
def attention_path(request, monkeypatch):
    """The CPU's example-by-example attention, and the accelerators' (padded layout + mask) run here."""
    if request.param == "padded layout":
        monkeypatch.setattr(Unpadded, "BY_EXAMPLE_DEVICES", ())
    return request.param


def padded_batch(lengths, vocab=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(0, vocab, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    labels = torch.full((len(lengths), T), IGNORE)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        labels[b, n // 2 : n] = ids[b, n // 2 : n]  # an answer in the second half of each example
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def reference_loss(model, batch):
    """Each example alone, without a mask, full logits, cross-entropy with ignore_index, summed."""
    total = 0.0
    for b, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        logits, _ = model(batch["input_ids"][b : b + 1, :n])
        total = total + F.cross_entropy(logits[0, :-1], batch["labels"][b, 1:n], ignore_index=IGNORE, reduction="sum")
    return total


def test_a_padded_batch_gives_each_example_its_own_logits(small_config, attention_path):
    model = AlayaForCausalLM(small_config).eval()
    batch = padded_batch(LENGTHS)
    with torch.no_grad():
        logits, _ = model(batch["input_ids"], attention_mask=batch["attention_mask"])
        for b, n in enumerate(LENGTHS):
            alone, _ = model(batch["input_ids"][b : b + 1, :n])
            torch.testing.assert_close(logits[b, :n], alone[0], atol=2e-5, rtol=1e-5)


def test_packed_segments_attend_only_inside_their_example(small_config, attention_path):
    model = AlayaForCausalLM(small_config).eval()
    ids = torch.randint(0, 320, (2, 24))
    seg = torch.tensor([[1] * 5 + [2] * 10 + [3] * 3 + [0] * 6, [1] * 24])
    with torch.no_grad():
        logits, _ = model(ids, attention_mask=(seg > 0).long(), segment_ids=seg)
        for row, start, n in [(0, 0, 5), (0, 5, 10), (0, 15, 3), (1, 0, 24)]:
            alone, _ = model(ids[row : row + 1, start : start + n])
            torch.testing.assert_close(logits[row, start : start + n], alone[0], atol=2e-5, rtol=1e-5)


def test_the_training_loss_and_its_gradients_equal_the_definition(small_config, attention_path):
    torch.manual_seed(0)
    model = AlayaForCausalLM(small_config)
    batch = padded_batch(LENGTHS, seed=1)
    ours = loss_sum(model, batch, torch.device("cpu"), "fp32")
    ours.backward()
    g_ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ref = reference_loss(model, batch)
    ref.backward()
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
    for a, b in zip(g_ours, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_row_losses_are_each_examples_summed_loss_and_count(small_config, attention_path):
    model = AlayaForCausalLM(small_config).eval()
    batch = padded_batch(LENGTHS, seed=2)
    sums, counts = row_losses(model, batch, torch.device("cpu"))
    with torch.no_grad():
        for b, n in enumerate(LENGTHS):
            one = {k: v[b : b + 1, :n] for k, v in batch.items()}
            assert float(sums[b]) == pytest.approx(float(reference_loss(model, one)), rel=1e-5, abs=1e-6)
            assert int(counts[b]) == int((batch["labels"][b, 1:n] != IGNORE).sum())


def test_logits_at_selects_positions_in_row_major_order(small_config):
    model = AlayaForCausalLM(small_config).eval()
    ids = torch.randint(0, 320, (3, 10))
    at = torch.rand(3, 10) > 0.5
    with torch.no_grad():
        full, _ = model(ids)
        some, _ = model(ids, logits_at=at)
    torch.testing.assert_close(some, full[at])
    with pytest.raises(ValueError, match="logits_at"):
        model(ids, logits_at=at, last_token_only=True)


def test_examples_that_are_not_one_run_of_tokens_fall_back_to_the_batch_mask(small_config):
    mask = torch.ones(1, 6, dtype=torch.long)
    assert _contiguous_runs(mask, torch.tensor([[1, 1, 2, 2, 3, 3]])) == [2, 2, 2]
    assert _contiguous_runs(torch.tensor([[1, 1, 0], [1, 0, 0]]), None) == [2, 1]
    assert _contiguous_runs(mask, torch.tensor([[1, 1, 2, 2, 1, 1]])) is None  # an id used twice
    assert _contiguous_runs(torch.tensor([[1, 0, 1, 1]]), None) is None  # padding inside an example
    # such a batch still computes what the mask says: example 1's two runs see each other
    model = AlayaForCausalLM(small_config).eval()
    ids = torch.randint(0, 320, (1, 6))
    seg = torch.tensor([[1, 1, 2, 2, 1, 1]])
    with torch.no_grad():
        logits, _ = model(ids, attention_mask=mask, segment_ids=seg)
        joined, _ = model(ids[:, [0, 1, 4, 5]])
    torch.testing.assert_close(logits[0, :2], joined[0, :2], atol=2e-5, rtol=1e-5)
    assert not torch.allclose(logits[0, 4:], model(ids[:, 4:])[0][0], atol=1e-4)
