"""``alaya export ctranslate2 MODEL DIR [--quantization int8]``: a CTranslate2 model folder.

CTranslate2's own converter registers MPT under the remote-code config class name ``MPTConfig`` and refuses
transformers' ``MptConfig`` folders, which is what this project writes. Nothing here patches the installed
package: the converter's public base class (``ctranslate2.converters.Converter``) is given the model
specification built directly from our weights, with the layout CTranslate2's MPT loader uses (pre-norm
decoder, ALiBi, exact GELU, layer norms without bias, the head tied to the embedding). The base class then
quantizes (``int8``, ``int8_float32``, ``float16`` ...) and writes the folder.
"""
from __future__ import annotations

from pathlib import Path

from alaya.export import ExportError, check_standard_alibi, load_merged, token_strings
from alaya.fileio import atomic_folder


def export_ctranslate2(model_path: str | Path, output_dir: str | Path, quantization: str | None = None,
                       adapter: str | None = None, force: bool = False) -> Path:
    try:
        import ctranslate2  # noqa: F401 (the package's presence)
        from ctranslate2.converters.converter import Converter
        from ctranslate2.specs import common_spec, transformer_spec
    except ImportError as e:
        raise ExportError("alaya export ctranslate2 needs the ctranslate2 package: pip install ctranslate2") from e
    model, tok = load_merged(model_path, adapter)
    check_standard_alibi(model, "CTranslate2")
    cfg = model.config
    if abs(cfg.layer_norm_epsilon - 1e-5) > 1e-12:
        raise ExportError(f"CTranslate2's layer norm uses epsilon 1e-5; this model uses {cfg.layer_norm_epsilon}")

    def numpy(t):
        return t.detach().float().contiguous().numpy()

    class AlayaConverter(Converter):
        def _load(self):
            spec = transformer_spec.TransformerDecoderModelSpec.from_config(
                cfg.n_layers, cfg.n_heads, pre_norm=True, activation=common_spec.Activation.GELU, alibi=True)
            dec, t = spec.decoder, model.transformer
            dec.embeddings.weight = numpy(t.wte.weight)
            dec.scale_embeddings = False
            dec.projection.weight = dec.embeddings.weight  # tied head
            _norm(dec.layer_norm, t.norm_f)
            for layer, blk in zip(dec.layer, t.blocks):
                _norm(layer.self_attention.layer_norm, blk.norm_1)
                layer.self_attention.linear[0].weight = numpy(blk.attn.Wqkv.weight)
                layer.self_attention.linear[1].weight = numpy(blk.attn.out_proj.weight)
                _norm(layer.ffn.layer_norm, blk.norm_2)
                layer.ffn.linear_0.weight = numpy(blk.ffn.up_proj.weight)
                layer.ffn.linear_1.weight = numpy(blk.ffn.down_proj.weight)
            spec.register_vocabulary(token_strings(tok))
            spec.config.bos_token, spec.config.eos_token, spec.config.unk_token = "<s>", "</s>", "<unk>"
            return spec

    def _norm(spec, module):
        import numpy as np

        spec.gamma = numpy(module.weight)
        spec.beta = np.zeros_like(spec.gamma)

    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty (pass --force to overwrite)")
    with atomic_folder(out) as tmp:  # an interrupted export leaves no half-written folder at OUTPUT
        AlayaConverter().convert(str(tmp), quantization=quantization, force=True)
    return out
