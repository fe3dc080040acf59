"""alaya export gguf / ctranslate2: the GGUF file read back with the gguf package (every key, every tensor,
the tokenizer), llama.cpp itself when llama-cpp-python is installed, and CTranslate2's greedy output against
ours when ctranslate2 is installed."""
import json

import numpy as np
import pytest

from alaya.cli import main
from alaya.export import ExportError, load_merged, token_strings
from alaya.export.gguf import export_gguf, tensor_map
from alaya.infer.generate import GenerationConfig, generate
from alaya.infer.loading import load_for_inference
from alaya.model.config import preset
from alaya.model.hf import save_model
from alaya.model.mpt import AlayaForCausalLM

gguf = pytest.importorskip("gguf")
TEXTS = ["The history of the city", "我们的城市在1998年", "def main():\n    return 42", "Once upon a time", "中国的经济"]


def _fields(reader) -> dict:
    out = {}
    for name, f in reader.fields.items():
        if not f.types:
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            if f.types[-1] == gguf.GGUFValueType.STRING:
                out[name] = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
            else:
                out[name] = [f.parts[i][0].item() for i in f.data]
        elif f.types[0] == gguf.GGUFValueType.STRING:
            out[name] = bytes(f.parts[f.data[0]]).decode("utf-8")
        else:
            out[name] = f.parts[f.data[0]][0].item()
    return out


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
def test_the_gguf_file_holds_every_key_tensor_and_token(trained_dir, tmp_path, kind):
    out = tmp_path / f"m-{kind}.gguf"
    assert main(["export", "gguf", str(trained_dir), str(out), "--type", kind]) == 0
    model, tok = load_merged(trained_dir)
    c = model.config
    r = gguf.GGUFReader(str(out))
    f = _fields(r)
    expect = {"general.architecture": "mpt", "mpt.context_length": c.max_seq_len, "mpt.embedding_length": c.d_model,
              "mpt.block_count": c.n_layers, "mpt.feed_forward_length": c.ffn_dim, "mpt.attention.head_count": c.n_heads,
              "mpt.attention.max_alibi_bias": 8.0, "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "starcoder",
              "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0,
              "tokenizer.ggml.padding_token_id": 2, "tokenizer.ggml.add_bos_token": False}
    for k, v in expect.items():
        assert f[k] == v, (k, f.get(k), v)
    assert f["mpt.attention.layer_norm_epsilon"] == pytest.approx(c.layer_norm_epsilon)
    assert f["tokenizer.ggml.tokens"] == token_strings(tok)
    merges = json.loads(tok.tok.to_str())["model"]["merges"]
    assert f["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in merges]
    types = f["tokenizer.ggml.token_type"]
    assert [types[i] for i in range(4)] == [gguf.TokenType.CONTROL] * 4 and types[100] == gguf.TokenType.NORMAL
    assert "### Instruction:" in f["tokenizer.chat_template"]
    # every tensor: the name llama.cpp looks up, the shape, and the values within the type's rounding
    want = tensor_map(model)
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(want) and "output.weight" not in got  # the head is tied to token_embd
    for name, ref in want.items():
        t = got[name]
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref.shape)
        if ref.ndim == 1:
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(values, ref)
        elif kind == "f16":
            assert t.tensor_type == gguf.GGMLQuantizationType.F16
            np.testing.assert_allclose(values, ref, rtol=1e-3, atol=1e-6)
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
            step = np.abs(ref.reshape(ref.shape[0], -1, 32)).max(-1, keepdims=True) / 127  # one scale per 32
            err = np.abs(values.reshape(step.shape[0], -1, 32) - ref.reshape(step.shape[0], -1, 32))
            assert (err <= step * 0.5 + 1e-3 * np.abs(ref.reshape(err.shape)) + 1e-6).all(), name


def test_an_adapter_is_merged_before_export(model_dir, adapter_dir, tmp_path):
    out = export_gguf(model_dir, tmp_path / "m.gguf", type="f32", adapter=str(adapter_dir))
    merged, _ = load_merged(model_dir, str(adapter_dir))
    plain, _ = load_merged(model_dir)
    got = {t.name: np.array(t.data).reshape(tuple(reversed(t.shape.tolist()))) for t in gguf.GGUFReader(str(out)).tensors}
    name = "blk.0.attn_qkv.weight"
    np.testing.assert_array_equal(got[name], tensor_map(merged)[name])
    assert not np.allclose(got[name], tensor_map(plain)[name])


def test_export_refuses_what_the_engines_compute_differently(tmp_path, model_dir):
    m = AlayaForCausalLM(preset("alaya-tiny", vocab_size=512, n_heads=8, d_model=96, n_layers=1, max_seq_len=64))
    from alaya.tokenizer import AlayaTokenizer

    save_model(m, tmp_path / "eight", tokenizer=AlayaTokenizer.load(model_dir))
    m6 = AlayaForCausalLM(preset("alaya-tiny", vocab_size=512, n_heads=6, d_model=96, n_layers=1, max_seq_len=64))
    save_model(m6, tmp_path / "m6", tokenizer=AlayaTokenizer.load(model_dir))
    with pytest.raises(ExportError, match="power-of-two head count"):
        export_gguf(tmp_path / "m6", tmp_path / "x.gguf")
    export_gguf(tmp_path / "eight", tmp_path / "ok.gguf")
    with pytest.raises(ExportError, match="exists"):
        export_gguf(tmp_path / "eight", tmp_path / "ok.gguf")


def test_llama_cpp_loads_the_file_and_decodes_what_we_decode(trained_dir, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (it builds from source: "
                                                        "pip install llama-cpp-python)")
    out = export_gguf(trained_dir, tmp_path / "m.gguf", type="f16")
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=256, n_threads=2, verbose=False)
    try:
        model_backend, tok = load_for_inference(trained_dir, device="cpu", dtype="float32")
        model = model_backend.model
        prompts = [tok.encode(t) for t in TEXTS]
        for t, p in zip(TEXTS, prompts):
            assert llm.tokenize(t.encode(), add_bos=False, special=False) == p
        ours = generate(model, prompts, GenerationConfig(max_new_tokens=32, temperature=0))
        for p, o in zip(prompts, ours):
            theirs = []
            for token in llm.generate(p, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                if token == tok.eos_id or len(theirs) == 32:
                    break
                theirs.append(token)
            assert theirs == o, tok.decode(p)
    finally:
        llm.close()


def test_ctranslate2_decodes_what_we_decode(trained_dir, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed (pip install ctranslate2)")
    assert main(["export", "ctranslate2", str(trained_dir), str(tmp_path / "ct2")]) == 0
    model_backend, tok = load_for_inference(trained_dir, device="cpu", dtype="float32")
    model = model_backend.model
    vocab = token_strings(tok)
    prompts = [tok.encode(t) for t in TEXTS]
    ours = generate(model, prompts, GenerationConfig(max_new_tokens=32, temperature=0))
    gen = ctranslate2.Generator(str(tmp_path / "ct2"), device="cpu", compute_type="float32")
    res = gen.generate_batch([[vocab[i] for i in p] for p in prompts], max_length=32, sampling_topk=1,
                             include_prompt_in_result=False, suppress_sequences=[["<pad>"]], end_token="</s>")
    assert [r.sequences_ids[0] for r in res] == ours
    # int8: CTranslate2's own int8 products against our int8 model (alaya.infer.int8: weights per output
    # channel, as CTranslate2 quantizes them), both greedy: the same prompts, the first 8 tokens
    assert main(["export", "ctranslate2", str(trained_dir), str(tmp_path / "ct2-int8"), "--quantization", "int8"]) == 0
    gen8 = ctranslate2.Generator(str(tmp_path / "ct2-int8"), device="cpu", compute_type="int8")
    res8 = gen8.generate_batch([[vocab[i] for i in p] for p in prompts], max_length=8, sampling_topk=1,
                               include_prompt_in_result=False, suppress_sequences=[["<pad>"]], end_token="</s>")
    model8_backend, _ = load_for_inference(trained_dir, device="cpu", dtype="float32", quantize="int8")
    model8 = model8_backend.model
    ours8 = generate(model8, prompts, GenerationConfig(max_new_tokens=8, temperature=0))
    theirs8 = [r.sequences_ids[0] for r in res8]
    # CTranslate2's int8 also quantizes the activations (ours only the weights), so the two greedy paths part
    # where two logits are nearly tied; a broken export agrees on next to nothing. Here (AMD EPYC,
    # 2026-12-04): the first token of all 5 prompts equal, common prefixes 23 of 33 tokens
    prefix = [next((k for k, (a, b) in enumerate(zip(t, o)) if a != b), min(len(t), len(o))) for t, o in zip(theirs8, ours8)]
    assert [t[:1] for t in theirs8] == [o[:1] for o in ours8]
    assert sum(prefix) >= 0.5 * sum(len(o) for o in ours8), (theirs8, ours8)
    from alaya.export.ctranslate2 import export_ctranslate2

    with pytest.raises(ExportError, match="not empty"):
        export_ctranslate2(trained_dir, tmp_path / "ct2")


def test_export_gguf_help_names_the_types(capsys):
    with pytest.raises(SystemExit):
        main(["export", "gguf", "--help"])
    assert "q8_0" in capsys.readouterr().out
