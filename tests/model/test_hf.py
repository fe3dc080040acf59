"""Checkpoint folders: parity with transformers' MptForCausalLM, llm-foundry folders, errors, atomic saves."""
import json

import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, MptConfig, MptForCausalLM  # noqa: E402

from alaya.infer.generate import GenerationConfig, generate  # noqa: E402
from alaya.model import hf  # noqa: E402
from alaya.model.hf import CheckpointError, load_model, save_model  # noqa: E402
from alaya.model.mpt import AlayaForCausalLM  # noqa: E402


def hf_config(cfg) -> MptConfig:
    return MptConfig(d_model=cfg.d_model, n_heads=cfg.n_heads, n_layers=cfg.n_layers, vocab_size=cfg.vocab_size,
                     max_seq_len=cfg.max_seq_len, eos_token_id=2, pad_token_id=2, bos_token_id=1)


def padded_batch():
    ids = torch.randint(4, 320, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, :6] = 0
    mask[2, :13] = 0
    ids[mask == 0] = 2
    return ids, mask


def assert_same_logits(a, b, mask):
    real = mask.bool()
    assert (a[real] - b[real]).abs().max().item() < 1e-5


def test_a_folder_saved_by_transformers_loads_with_equal_logits(tmp_path, small_config):
    theirs = MptForCausalLM(hf_config(small_config)).eval()
    with torch.no_grad():  # random, non-trivial norms too
        for n, p in theirs.named_parameters():
            p.normal_(0, 0.2) if p.ndim > 1 else p.uniform_(0.5, 1.5)
    theirs.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")
    ids, mask = padded_batch()
    with torch.no_grad():
        assert_same_logits(ours(ids, attention_mask=mask)[0], theirs(input_ids=ids, attention_mask=mask).logits, mask)


def test_a_folder_saved_by_us_loads_in_transformers_natively_with_equal_logits(tmp_path, small_config):
    ours = AlayaForCausalLM(small_config).eval()
    save_model(ours, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "mpt" and cfg["attn_config"]["alibi"] and cfg["no_bias"] and cfg["tie_word_embeddings"]
    assert cfg["norm_type"] == "low_precision_layernorm" and cfg["attn_config"]["attn_impl"] == "torch"
    gen = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    assert (gen["eos_token_id"], gen["pad_token_id"], gen["bad_words_ids"]) == (2, 2, [[3]])
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert isinstance(theirs, MptForCausalLM)
    ids, mask = padded_batch()
    with torch.no_grad():
        assert_same_logits(ours(ids, attention_mask=mask)[0], theirs(input_ids=ids, attention_mask=mask).logits, mask)


def test_greedy_decoding_with_our_kv_cache_equals_transformers_generate(tmp_path, small_config):
    ours = AlayaForCausalLM(small_config).eval()
    with torch.no_grad():
        ours.transformer.wte.weight.mul_(3)  # peakier distribution: a meaningful greedy path
    save_model(ours, tmp_path / "m")
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    prompts = [[5, 17, 99, 42, 7], [11, 12, 13, 200, 201, 202, 203, 9, 8, 10, 30]]
    got = generate(ours, prompts, GenerationConfig(max_new_tokens=32, temperature=0, eos_token_id=2, banned_token_ids=[3]))
    for p, g in zip(prompts, got):
        ref = theirs.generate(torch.tensor([p]), max_new_tokens=32, do_sample=False, eos_token_id=2, pad_token_id=2,
                              bad_words_ids=[[3]])
        ref_new = ref[0, len(p):].tolist()
        if 2 in ref_new:
            ref_new = ref_new[: ref_new.index(2)]
        assert g == ref_new
        assert len(g) > 0


def test_sharded_safetensors_save_writes_an_index_and_loads_everywhere(tmp_path, small_config):
    ours = AlayaForCausalLM(small_config).eval()
    save_model(ours, tmp_path / "m", max_shard_bytes=40_000)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((tmp_path / "m" / s).is_file() for s in shards)
    assert not (tmp_path / "m" / "model.safetensors").exists()
    again = load_model(tmp_path / "m")
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, 320, (1, 12))
    with torch.no_grad():
        a = ours(ids)[0]
        assert torch.equal(a, again(ids)[0])
        assert (a - theirs(input_ids=ids).logits).abs().max() < 1e-5


def write_foundry_folder(folder, model, shards=2):
    """An llm-foundry / published-Alaya-style folder: remote-code config and pickled .bin shards."""
    folder.mkdir()
    c = model.config
    config = {
        "architectures": ["MPTForCausalLM"], "model_type": "mpt",
        "auto_map": {"AutoConfig": "configuration_mpt.MPTConfig", "AutoModelForCausalLM": "modeling_mpt.MPTForCausalLM"},
        "attn_config": {"alibi": True, "alibi_bias_max": 8, "attn_impl": "triton", "attn_pdrop": 0, "attn_type": "multihead_attention",
                        "attn_uses_sequence_id": False, "clip_qkv": None, "prefix_lm": False, "qk_ln": False, "softmax_scale": None},
        "d_model": c.d_model, "n_heads": c.n_heads, "n_layers": c.n_layers, "expansion_ratio": 4, "max_seq_len": c.max_seq_len,
        "vocab_size": c.vocab_size, "emb_pdrop": 0, "resid_pdrop": 0, "embedding_fraction": 1.0, "learned_pos_emb": True,
        "logit_scale": None, "no_bias": True, "norm_type": "low_precision_layernorm", "verbose": 0, "init_device": "cpu",
        "init_config": {"name": "kaiming_normal_", "fan_mode": "fan_in", "init_nonlinearity": "relu"},
        "tokenizer_name": "alaya", "torch_dtype": "bfloat16", "transformers_version": "4.30.2", "use_cache": False,
    }
    config["learned_pos_emb"] = False
    (folder / "config.json").write_text(json.dumps(config))
    state = {k: v.clone().to(torch.bfloat16) for k, v in model.state_dict().items()}
    keys = list(state)
    parts = [keys[i::shards] for i in range(shards)]
    weight_map = {}
    for i, part in enumerate(parts, 1):
        name = f"pytorch_model-{i:05d}-of-{shards:05d}.bin"
        torch.save({k: state[k] for k in part}, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return state


def test_llm_foundry_folder_with_bin_shards_loads(tmp_path, small_config):
    ours = AlayaForCausalLM(small_config).eval()
    state = write_foundry_folder(tmp_path / "foundry", ours)
    loaded = load_model(tmp_path / "foundry")
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.bfloat16 and torch.equal(v, state[k])


def test_pickles_are_never_executed(tmp_path, small_config, monkeypatch):
    ours = AlayaForCausalLM(small_config).eval()
    write_foundry_folder(tmp_path / "f", ours, shards=1)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    load_model(tmp_path / "f")
    assert calls and all(k.get("weights_only") is True for k in calls)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"transformer.wte.weight": Evil()}, tmp_path / "f" / "pytorch_model-00001-of-00001.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(tmp_path / "f")


@pytest.fixture
def saved(tmp_path, small_config):
    save_model(AlayaForCausalLM(small_config), tmp_path / "m")
    return tmp_path / "m"


def edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k)
        else:
            cfg[k] = v
    (folder / "config.json").write_text(json.dumps(cfg))


def test_missing_config_field_is_named(saved):
    edit_config(saved, n_heads=None)
    with pytest.raises(CheckpointError, match=r"config\.json: required field 'n_heads' is missing"):
        load_model(saved)


def test_unknown_config_field_is_named(saved):
    edit_config(saved, mystery_knob=3)
    with pytest.raises(CheckpointError, match="mystery_knob"):
        load_model(saved)


def test_unsupported_architecture_value_is_named(saved):
    edit_config(saved, attn_config={"alibi": False})
    with pytest.raises(CheckpointError, match="attn_config.alibi"):
        load_model(saved)


def test_wrong_shape_names_file_and_tensor(saved):
    edit_config(saved, d_model=96)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'transformer\.\S+' has shape"):
        load_model(saved)


def test_wrong_dtype_names_the_tensor(saved, small_config):
    state = {k: v.clone() for k, v in AlayaForCausalLM(small_config).state_dict().items()}
    state["transformer.norm_f.weight"] = torch.ones(small_config.d_model, dtype=torch.int64)
    save_file(state, str(saved / "model.safetensors"))
    with pytest.raises(CheckpointError, match="'transformer.norm_f.weight' has dtype torch.int64"):
        load_model(saved)


def test_missing_shard_is_named(tmp_path, small_config):
    save_model(AlayaForCausalLM(small_config), tmp_path / "m", max_shard_bytes=40_000)
    (shard,) = (tmp_path / "m").glob("model-00002-of-*.safetensors")
    shard.unlink()
    with pytest.raises(CheckpointError, match=r"shard 'model-00002-of-\d+\.safetensors' is listed but missing"):
        load_model(tmp_path / "m")


def test_truncated_safetensors_is_named(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read safetensors file"):
        load_model(saved)


def test_missing_tensor_is_named(saved, small_config):
    state = {k: v.clone() for k, v in AlayaForCausalLM(small_config).state_dict().items()}
    del state["transformer.blocks.1.ffn.up_proj.weight"]
    save_file(state, str(saved / "model.safetensors"))
    with pytest.raises(CheckpointError, match="transformer.blocks.1.ffn.up_proj.weight"):
        load_model(saved)


def test_a_crash_mid_save_leaves_no_folder_and_keeps_the_old_one(tmp_path, small_config, monkeypatch):
    model = AlayaForCausalLM(small_config)
    target = tmp_path / "m"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(hf, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    save_model(model, target)
    before = (target / "model.safetensors").read_bytes()
    monkeypatch.setattr(hf, "save_file", boom)
    with pytest.raises(OSError):
        save_model(AlayaForCausalLM(small_config), target)
    assert (target / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
