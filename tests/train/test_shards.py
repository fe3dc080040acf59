import json

import numpy as np
import pytest

from alaya.tokenizer import AlayaTokenizer
from alaya.train.data import MixtureSampler
from alaya.tokenizer.shards import tokenize_to_shards
from alaya.train.shards import TokenShards


def _docs(tmp_path):
    rows = [{"id": f"d{i}", "text": f"document {i} " * (5 + i % 7), "meta": {"lang": ["en", "zh"][i % 2], "type": "news"}}
            for i in range(60)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in rows[:30]) + "{broken\n", encoding="utf-8")
    b.write_text("".join(json.dumps(r) + "\n" for r in rows[30:]), encoding="utf-8")
    return [str(a), str(b)], rows


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.parent.name != "tasks" and p.name != "index.json"}


def test_tokenize_groups_by_source_separates_documents_and_is_deterministic(tmp_path, token_dir):
    tok_dir = token_dir.parent / "tok"
    inputs, rows = _docs(tmp_path)
    one = tokenize_to_shards(inputs, tok_dir, tmp_path / "one", heldout_fraction=0.2, processes=1, progress=False)
    tokenize_to_shards(inputs, tok_dir, tmp_path / "two", heldout_fraction=0.2, processes=2, progress=False)
    assert _tree(tmp_path / "one") == _tree(tmp_path / "two")  # the process count does not change the bytes
    pytest.importorskip("ray")
    tokenize_to_shards(inputs, tok_dir, tmp_path / "ray", heldout_fraction=0.2, processes=2, progress=False, engine="ray")
    assert _tree(tmp_path / "ray") == _tree(tmp_path / "one")  # on the data engine's Ray backend: the same bytes
    assert set(one["sources"]) == {"en-news", "zh-news"} and one["documents"] == 60 and one["quarantined"] == 1
    assert one["dtype"] == "uint16"
    tok = AlayaTokenizer.load(tok_dir)
    shards = TokenShards(tmp_path / "one", "train")
    held = TokenShards(tmp_path / "one", "heldout")
    n_docs = sum(s["documents"] for src in one["sources"].values() for sp in src.values() for s in sp["shards"])
    assert n_docs == 60 and 0 < sum(v["heldout"]["documents"] for v in one["sources"].values()) < 30
    # every document ends with </s> at the offset the index gives, and decodes back to its text
    sh = one["sources"]["en-news"]["train"]["shards"][0]
    ends = np.load(tmp_path / "one" / sh["file"].replace(".bin", ".idx.npy"))
    arr = shards.sources["en-news"].shards[0]
    assert all(arr[e - 1] == tok.eos_id for e in ends) and ends[-1] == len(arr)
    texts = {r["text"] for r in rows}
    assert tok.decode(arr[: ends[0] - 1].tolist()) in texts
    assert held.sources  # the held-out split is readable too


def test_one_big_file_cut_into_ranges_gives_the_same_token_streams(tmp_path, token_dir):
    tok_dir = token_dir.parent / "tok"
    inputs, _ = _docs(tmp_path)
    single = tmp_path / "single.jsonl"
    single.write_bytes(b"".join(open(p, "rb").read() for p in inputs))
    whole = tokenize_to_shards([str(single)], tok_dir, tmp_path / "whole", heldout_fraction=0.2, processes=1,
                               progress=False)
    split = tokenize_to_shards([str(single)], tok_dir, tmp_path / "split", heldout_fraction=0.2, processes=2,
                               progress=False, shard_mb=0.001)  # ~1 KB ranges
    assert len(list((tmp_path / "split" / "tasks").glob("*.json"))) > 3
    assert (split["documents"], split["quarantined"]) == (whole["documents"], whole["quarantined"]) == (60, 1)
    for split_name in ("train", "heldout"):
        a, b = TokenShards(tmp_path / "whole", split_name), TokenShards(tmp_path / "split", split_name)
        assert set(a.sources) == set(b.sources)
        for name in a.sources:  # the ranges' shards, in task order, hold the whole file's tokens in order
            assert np.array_equal(np.concatenate(a.sources[name].shards), np.concatenate(b.sources[name].shards))


def test_tokenize_resumes_after_a_killed_task(tmp_path, token_dir):
    tok_dir = token_dir.parent / "tok"
    inputs, _ = _docs(tmp_path)
    out = tmp_path / "out"
    tokenize_to_shards(inputs, tok_dir, out, processes=1, progress=False)
    before = _tree(out)
    (out / "tasks" / "00001.json").unlink()  # as if killed before the second input finished
    for f in out.rglob("*-00001-*"):
        f.write_bytes(b"half")
    tokenize_to_shards(inputs, tok_dir, out, processes=1, progress=False)
    assert _tree(out) == before
    with pytest.raises(ValueError, match="other settings"):
        tokenize_to_shards(inputs, tok_dir, out, heldout_fraction=0.5, processes=1, progress=False)


def test_damaged_shard_is_named(tmp_path, token_dir):
    tok_dir = token_dir.parent / "tok"
    inputs, _ = _docs(tmp_path)
    out = tmp_path / "out"
    index = tokenize_to_shards(inputs, tok_dir, out, processes=1, progress=False)
    victim = out / index["sources"]["zh-news"]["train"]["shards"][0]["file"]
    victim.write_bytes(victim.read_bytes()[:-2])
    with pytest.raises(ValueError, match="damaged"):
        TokenShards(out)


def test_sampler_is_deterministic_resumable_and_follows_the_weights(token_dir):
    sources = TokenShards(token_dir).sources
    names = sorted(sources)
    weights = {n: (8.0 if n == names[0] else 1.0) for n in names}
    a = MixtureSampler(sources, weights, seq_len=32, seed=3)
    b = MixtureSampler(sources, weights, seq_len=32, seed=3)
    first = a.draw(10)[0]
    assert np.array_equal(first, b.draw(10)[0])
    state = json.loads(json.dumps(a.state_dict()))  # survives JSON, as in trainer_state.json
    cont = a.draw(7)[0]
    c = MixtureSampler(sources, weights, seq_len=32, seed=999)
    c.load_state_dict(state)
    assert np.array_equal(c.draw(7)[0], cont) and c.drawn == a.drawn == 17
    _, src = MixtureSampler(sources, weights, 32, seed=0).draw(4000)
    share = np.mean(src == 0)
    expect = 8.0 / (8.0 + len(names) - 1)
    assert abs(share - expect) < 0.03
    # the global batch is split over ranks: the union of the ranks' slices is the one-process batch
    one = MixtureSampler(sources, None, 32, seed=5).global_batch(4, 1, 1, 0)[0]["input_ids"]
    halves = [MixtureSampler(sources, None, 32, seed=5).global_batch(2, 2, 1, r)[0]["input_ids"] for r in (0, 1)]
    assert np.array_equal(np.concatenate(halves), one.numpy())
    with pytest.raises(ValueError, match="unknown sources"):
        MixtureSampler(sources, {"xx-none": 1.0}, 32, seed=0)
