"""``alaya export gguf MODEL OUTPUT.gguf [--type f16|q8_0|f32]``: one GGUF file for llama.cpp and Ollama.

llama.cpp's ``mpt`` architecture reads: ``mpt.context_length``, ``mpt.embedding_length``, ``mpt.block_count``,
``mpt.feed_forward_length``, ``mpt.attention.head_count``, ``mpt.attention.layer_norm_epsilon`` and
``mpt.attention.max_alibi_bias``; tensors ``token_embd``, ``output_norm``, and per block ``attn_norm``,
``attn_qkv``, ``attn_output``, ``ffn_norm``, ``ffn_up``, ``ffn_down`` (no biases: they are optional there;
no ``output``: the head is tied, and llama.cpp reuses ``token_embd``). The tokenizer is the byte-level BPE
with its merges (``tokenizer.ggml.model`` ``gpt2``); its pre-tokenizer (each digit on its own, then GPT-2's
regex) is llama.cpp's ``starcoder`` one. Special tokens are control tokens, the padding entries that no merge
produces are unused ones, and the chat template is the published prompt format's, from the tokenizer folder.

Matrices are written in the chosen type (``q8_0``: blocks of 32 weights, one fp16 scale each); the layer norm
weights stay fp32, as llama.cpp's converter writes them. One difference remains that no file can carry:
llama.cpp's MPT uses the tanh approximation of GELU where this model uses the exact one (README,
"Export").
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from alaya.export import ExportError, check_standard_alibi, load_merged, token_strings
from alaya.tokenizer import SPECIAL_TOKENS

GGUF_TYPES = ("f16", "q8_0", "f32")


def tensor_map(model) -> dict[str, "np.ndarray"]:
    """GGUF tensor name → fp32 array, in the order llama.cpp lists them."""
    t = model.transformer

    def a(p):
        return p.detach().float().contiguous().numpy()

    out = {"token_embd.weight": a(t.wte.weight), "output_norm.weight": a(t.norm_f.weight)}
    for i, blk in enumerate(t.blocks):
        out[f"blk.{i}.attn_norm.weight"] = a(blk.norm_1.weight)
        out[f"blk.{i}.attn_qkv.weight"] = a(blk.attn.Wqkv.weight)
        out[f"blk.{i}.attn_output.weight"] = a(blk.attn.out_proj.weight)
        out[f"blk.{i}.ffn_norm.weight"] = a(blk.norm_2.weight)
        out[f"blk.{i}.ffn_up.weight"] = a(blk.ffn.up_proj.weight)
        out[f"blk.{i}.ffn_down.weight"] = a(blk.ffn.down_proj.weight)
    return out


def export_gguf(model_path: str | Path, output: str | Path, type: str = "f16", adapter: str | None = None,
                force: bool = False) -> Path:
    try:
        import gguf
    except ImportError as e:
        raise ExportError("alaya export gguf needs the gguf package: pip install gguf") from e
    if type not in GGUF_TYPES:
        raise ExportError(f"--type must be one of {', '.join(GGUF_TYPES)}, got {type!r}")
    out = Path(output)
    if out.exists() and not force:
        raise ExportError(f"{out} exists (pass --force to overwrite)")
    model, tok = load_merged(model_path, adapter)
    check_standard_alibi(model, "llama.cpp")
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        _write(gguf, tmp, model, tok, model_path, type)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)  # an interrupted export leaves no partial file behind
    return out


def _write(gguf, tmp: Path, model, tok, model_path, type: str) -> None:
    cfg = model.config
    name = Path(model_path).resolve().name
    w = gguf.GGUFWriter(str(tmp), "mpt")
    w.add_name(name)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.d_model)
    w.add_block_count(cfg.n_layers)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_head_count(cfg.n_heads)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)
    w.add_max_alibi_bias(float(cfg.alibi_bias_max))
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[type]
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(w, gguf, tok, model_path)
    for tname, data in tensor_map(model).items():
        if data.ndim == 1 or type == "f32":
            w.add_tensor(tname, data.astype(np.float32))
        elif type == "f16" or data.shape[-1] % 32:  # q8_0 blocks are 32 weights of a row
            w.add_tensor(tname, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(tname, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=True)  # a progress bar: minutes for a 7B model
    w.close()


def _add_tokenizer(w, gguf, tok, model_path) -> None:
    data = json.loads(tok.tok.to_str())
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    tokens = token_strings(tok)
    types = []
    for t in tokens:
        if t in SPECIAL_TOKENS:
            types.append(gguf.TokenType.CONTROL)
        elif t.startswith("<|unused_") and t.endswith("|>"):
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("starcoder")  # \p{N} isolated, then GPT-2's byte-level regex: our pre-tokenizer
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    w.add_unk_token_id(tok.unk_id)
    w.add_pad_token_id(tok.pad_id)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    cfg_file = Path(model_path) / "tokenizer_config.json"
    if cfg_file.is_file():
        template = json.loads(cfg_file.read_text(encoding="utf-8")).get("chat_template")
        if template:
            w.add_chat_template(template)
