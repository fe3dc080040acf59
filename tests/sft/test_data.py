"""Packing computes exactly the unpacked loss; the loss is normalised over the global batch; the mixture hits
its shares; the batch stream resumes exactly."""
import json

import pytest
import torch

from alaya.model.config import preset
from alaya.model.mpt import AlayaForCausalLM
from alaya.sft.data import SFTBatches, collate, load_sft_data, padding_share
from alaya.sft.formats import example_from_record
from alaya.sft.template import encode_example
from alaya.train.loop import loss_sum, supervised_tokens, train_step
from conftest import SHARED_DATA

RECORDS = [
    {"instruction": "介绍一下长城", "output": "长城是中国古代的军事防御工程。"},
    {"instruction": "Hi", "output": "Hello! How can I help you today?"},
    {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"},
                       {"from": "human", "value": "Translate 猫"}, {"from": "gpt", "value": "cat"}]},
    {"instruction": "Name three colours.", "input": "Short answer.", "output": "Red, green and blue."},
    {"instruction": "2+2?", "output": "4"},
    {"instruction": "What is ALiBi?", "output": "A linear bias on attention scores by distance."},
]


def model():
    torch.manual_seed(0)
    return AlayaForCausalLM(preset("alaya-tiny", vocab_size=600, d_model=64, n_heads=4, n_layers=2, max_seq_len=128))


@pytest.fixture
def encoded(sft_tok):
    return [encode_example(sft_tok, example_from_record(r)) for r in RECORDS]


def grads_of(m, batches):
    m.zero_grad()
    total = sum(supervised_tokens(b) for b in batches)
    loss = sum(loss_sum(m, b, m.device, "fp32") for b in batches) / total
    loss.backward()
    return float(loss.detach()), torch.cat([p.grad.flatten() for p in m.parameters()])


def test_packed_rows_give_the_loss_and_gradients_of_unpacked_rows(encoded, sft_tok):
    m = model()
    unpacked = [collate([[e] for e in encoded], sft_tok.pad_id)]
    packed = [collate([encoded[:3], encoded[3:]], sft_tok.pad_id)]
    assert packed[0]["input_ids"].shape[0] == 2 and "segment_ids" in packed[0]
    assert supervised_tokens(packed[0]) == supervised_tokens(unpacked[0])
    la, ga = grads_of(m, unpacked)
    lb, gb = grads_of(m, packed)
    assert la == pytest.approx(lb, rel=1e-6, abs=1e-5)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)
    # without the segment mask the examples would see each other: the loss changes
    leaky = dict(packed[0])
    del leaky["segment_ids"]
    assert abs(grads_of(m, [leaky])[0] - la) > 1e-4


def test_accumulation_1x8_equals_8x1_with_examples_of_different_lengths(sft_tok):
    encs = [encode_example(sft_tok, example_from_record(r)) for r in RECORDS + RECORDS[:2]]
    assert len({e.supervised for e in encs}) > 3  # unequal lengths: a mean of means would differ
    results = []
    for micro in ([collate([[e] for e in encs], sft_tok.pad_id)], [collate([[e]], sft_tok.pad_id) for e in encs]):
        m = model()
        opt = torch.optim.SGD(m.parameters(), lr=1e-2)
        loss, _, n = train_step(m, opt, micro, lr=1e-2, grad_clip=1e9, precision="fp32")
        results.append((loss, n, torch.cat([p.detach().flatten() for p in m.parameters()])))
    (l1, n1, w1), (l8, n8, w8) = results
    assert n1 == n8 == sum(e.supervised for e in encs)
    assert l1 == pytest.approx(l8, rel=1e-5)
    torch.testing.assert_close(w1, w8, atol=1e-5, rtol=1e-5)


def test_batch_stream_state_resumes_the_same_batches(encoded, sft_tok):
    a = SFTBatches(encoded * 3, 64, sft_tok.pad_id, packing=True, seed=3)
    first = [a.global_batch(2, 1, 1, 0) for _ in range(3)]
    state = json.loads(json.dumps(a.state_dict()))
    rest = [a.global_batch(2, 1, 1, 0)[0]["input_ids"] for _ in range(4)]
    b = SFTBatches(encoded * 3, 64, sft_tok.pad_id, packing=True, seed=3)
    b.load_state_dict(state)
    assert all(torch.equal(x, b.global_batch(2, 1, 1, 0)[0]["input_ids"]) for x in rest)
    assert first[0][0]["input_ids"].shape[1] <= 64
    # two ranks split the global batch of one
    one = SFTBatches(encoded * 3, 64, sft_tok.pad_id, packing=False, seed=3).global_batch(4, 1, 1, 0)[0]
    halves = [SFTBatches(encoded * 3, 64, sft_tok.pad_id, packing=False, seed=3).global_batch(2, 2, 1, r)[0] for r in (0, 1)]
    assert supervised_tokens(one) == sum(supervised_tokens(h) for h in halves)


def test_padding_share_definition():
    assert padding_share([10, 10], 20, packing=False) == pytest.approx(0.5)
    assert padding_share([10, 10], 20, packing=True) == pytest.approx(0.0)
    assert padding_share([15, 10, 5], 20, packing=True) == pytest.approx(1 - 30 / 40)


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_mixture_hits_the_shares_within_epoch_caps_and_reports_them(tmp_path, sft_tok):
    gen = _write(tmp_path / "g.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(300)])
    rea = _write(tmp_path / "r.jsonl", [{"instruction": f"2+{i}?", "output": f"{i + 2}"} for i in range(40)])
    idn = _write(tmp_path / "i.jsonl", [{"instruction": "Who are you?", "output": f"I am Alaya {i}."} for i in range(5)])
    shares = {"general": 0.55, "reasoning": 0.3, "self_awareness": 0.1, "role_play": 0.05}
    data = load_sft_data([{"path": gen, "category": "general"}, {"path": rea, "category": "reasoning", "max_epochs": 2},
                          {"path": idn, "category": "self_awareness"}], sft_tok, 64, shares=shares, max_epochs=3,
                         heldout_fraction=0.0)
    rep = data.report
    assert rep["categories_without_data"] == ["role_play"]  # its share goes to the others
    # the scarcest pool under its cap sets the size: identity 5 examples x 3 epochs / its share 0.1 / 0.95
    assert rep["examples_per_pass"] == 142
    for c, share in (("general", 0.55), ("reasoning", 0.3), ("self_awareness", 0.1)):
        assert rep["categories"][c]["share_examples"] == pytest.approx(share / 0.95, abs=0.01)
    assert sum(1 for e in data.train if e.category == "reasoning") <= 80  # within 2 epochs of 40
    assert sum(rep["categories"][c]["share_supervised_tokens"] for c in rep["categories"]) == pytest.approx(1, abs=1e-3)


def test_sources_and_categories_are_checked(tmp_path, sft_tok):
    f = _write(tmp_path / "g.jsonl", [{"instruction": "q", "output": "a"}])
    with pytest.raises(ValueError, match="category"):
        load_sft_data([{"path": f, "category": "poetry"}], sft_tok, 64)
    with pytest.raises(FileNotFoundError):
        load_sft_data([{"path": str(tmp_path / "missing.jsonl"), "category": "general"}], sft_tok, 64)
    with pytest.raises(ValueError, match="unknown keys"):
        load_sft_data([{"path": f, "categroy": "general"}], sft_tok, 64)


@pytest.mark.skipif(not (SHARED_DATA / "lf_alpaca_en_demo").is_dir(), reason=f"Alpaca demos not present at {SHARED_DATA}")
@pytest.mark.parametrize("packing", [False, True])
def test_batches_of_real_demos_come_in_a_handful_of_shapes(packing, sft_tok):
    """Over 200 batches of the real Alpaca demos, rows are padded to a multiple of 128 (packed rows to seq_len):
    the distinct (B, T) shapes are at most the buckets, and no row loses a token."""
    from alaya.data.documents import Quarantine
    from alaya.sft.formats import read_examples
    from alaya.sft.template import TooLong, encode_example

    encoded = []
    for ex in read_examples([str(SHARED_DATA / "lf_alpaca_en_demo" / "alpaca_en_demo.json"),
                             str(SHARED_DATA / "lf_alpaca_zh_demo" / "alpaca_zh_demo.json")], Quarantine(), None, "general"):
        try:
            encoded.append(encode_example(sft_tok, ex, 512))
        except TooLong:
            pass
    stream = SFTBatches(encoded, 512, sft_tok.pad_id, packing=packing, seed=0)
    shapes, longest = set(), 0
    for _ in range(200):
        batch = stream.global_batch(4, 1, 1, 0)[0]
        shapes.add(tuple(batch["input_ids"].shape))
        real = int(batch["attention_mask"].sum(1).max())
        longest = max(longest, real)
        assert batch["input_ids"].shape[1] == (512 if packing else -(-real // 128) * 128)
    assert len(shapes) <= (1 if packing else 512 // 128) and longest > 128
    # 0 turns the buckets off: each batch as long as its longest row
    free = SFTBatches(encoded, 512, sft_tok.pad_id, packing=False, seed=0, pad_multiple=0).global_batch(4, 1, 1, 0)[0]
    assert free["input_ids"].shape[1] == int(free["attention_mask"].sum(1).max())


def test_example_averaging_weighs_every_example_once_whatever_its_length(encoded, sft_tok):
    import torch.nn.functional as F

    m = model()
    # the definition, one example at a time: the mean over its supervised tokens, then the mean over examples
    per_example = []
    with torch.no_grad():
        for e in encoded:
            logits, _ = m(torch.tensor([e.input_ids]))
            labels = torch.tensor(e.labels[1:])
            keep = labels != -100
            per_example.append(float(F.cross_entropy(logits[0, :-1][keep], labels[keep])))
    expect = sum(per_example) / len(per_example)
    packed = collate([encoded[:3], encoded[3:]], sft_tok.pad_id, per_example=True)
    assert float(packed["loss_weights"].sum()) == pytest.approx(len(encoded), rel=1e-6)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    loss, _, supervised = train_step(m, opt, [packed], lr=0.0, grad_clip=1.0, precision="fp32")
    assert loss == pytest.approx(expect, rel=1e-5)
    assert supervised == supervised_tokens(packed)  # the metric still counts tokens
    # token averaging of the same batch is another number: long examples weigh more there
    token_loss, _, _ = train_step(m, opt, [collate([encoded[:3], encoded[3:]], sft_tok.pad_id)], lr=0.0,
                                  grad_clip=1.0, precision="fp32")
    assert abs(token_loss - expect) > 1e-3
    with pytest.raises(ValueError, match="train.loss_average must be one of token, example"):
        SFTBatches(encoded, 128, sft_tok.pad_id, True, 0, loss_average="sequence")
