import json
import shutil

import pytest
import torch

from alaya.cli import main
from alaya.infer.loading import load_for_inference
from alaya.model.hf import CheckpointError, load_model
from alaya.model.lora import merge_adapter
from alaya.prompt import format_prompt

peft = pytest.importorskip("peft")
from transformers import MptForCausalLM  # noqa: E402


@pytest.fixture(scope="module")
def peft_model(model_dir, adapter_dir):
    return peft.PeftModel.from_pretrained(MptForCausalLM.from_pretrained(model_dir), adapter_dir).eval()


def test_merged_adapter_gives_the_logits_of_peft(model_dir, adapter_dir, peft_model):
    base = load_model(model_dir)
    ids = torch.randint(4, 512, (3, 20))
    with torch.no_grad():
        before = base(ids)[0]
        merged = merge_adapter(base, adapter_dir)
        ours = base(ids)[0]
        theirs = peft_model(input_ids=ids).logits
    assert len(merged) == 4 and "transformer.blocks.0.ffn.down_proj" in merged
    assert (before - theirs).abs().max() > 1e-2  # the adapter changes the output...
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)  # ...and ours matches peft's


def test_infer_with_adapter_path_matches_peft_greedy_generate(model_dir, adapter_dir, peft_model, tmp_path):
    prompts = ["你好，介绍一下你自己", "What is a language model?"]
    inp = tmp_path / "p.txt"
    inp.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    assert main(["infer", str(model_dir), str(inp), str(out), str(adapter_dir), "--temperature", "0",
                 "--max-new-tokens", "24"]) == 0
    recs = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    _, tok = load_for_inference(str(model_dir))
    for prompt, rec in zip(prompts, recs):
        ids = torch.tensor([tok.encode(format_prompt(prompt))])
        with torch.no_grad():
            gen = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                      do_sample=False, eos_token_id=2, pad_token_id=2, bad_words_ids=[[3]])
        new = gen[0, ids.shape[1]:].tolist()
        new = new[: new.index(2)] if 2 in new else new
        assert rec["response_org"] == format_prompt(prompt) + tok.decode(new)


def test_bad_adapters_are_refused_with_the_reason(model_dir, adapter_dir, tmp_path):
    model = load_model(model_dir)
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        merge_adapter(model, tmp_path)
    bad = tmp_path / "dora"
    shutil.copytree(adapter_dir, bad)
    cfg = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(CheckpointError, match="DoRA"):
        merge_adapter(model, bad)
    (bad / "adapter_config.json").write_text(json.dumps({**cfg, "bias": "all"}))
    with pytest.raises(CheckpointError, match="no biases"):
        merge_adapter(model, bad)
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    (bad / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        merge_adapter(model, bad)
    # an adapter trained for another width names the shapes
    from alaya.model.config import preset
    from alaya.model.mpt import AlayaForCausalLM
    wider = AlayaForCausalLM(preset("alaya-tiny", vocab_size=512, max_seq_len=128, d_model=64, n_heads=4, n_layers=1))
    with pytest.raises(CheckpointError, match="another size"):
        merge_adapter(wider, adapter_dir)
    (tmp_path / "x.txt").write_text("hello\n")
    assert main(["infer", str(model_dir), str(tmp_path / "x.txt"), str(tmp_path / "y.jsonl"), str(bad)]) == 2
    assert not (tmp_path / "y.jsonl").exists()  # refused before any output
