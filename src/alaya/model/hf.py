"""Read and write Hugging Face model folders.

Written folders load natively with ``transformers.AutoModelForCausalLM.from_pretrained`` (model_type
``mpt``, no remote code). Read: our folders, folders written by ``MptForCausalLM.save_pretrained``, and
llm-foundry style folders (the published Alaya-7B: ``trust_remote_code`` configs with extra fields and
pickled ``pytorch_model-0000X-of-0000N.bin`` shards). Pickles are opened only with
``torch.load(weights_only=True)``; nothing from a checkpoint is ever executed.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from alaya.fileio import atomic_folder
from alaya.model.config import EOS_ID, RESERVED_ID, ModelConfig
from alaya.model.mpt import AlayaForCausalLM

CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_WEIGHTS = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 1000**3  # shard above 5 GB, as transformers does


class CheckpointError(ValueError):
    """A model folder that cannot be read as it is; the message names the file and the field or tensor."""


# ---------------------------------------------------------------------------------------------- config
# Fields of config.json and what we do with them. Architecture fields must hold the value we implement;
# the rest describe training, hardware or bookkeeping and do not change the network's function.
_REQUIRED = ("d_model", "n_heads", "n_layers", "vocab_size", "max_seq_len")
_MUST_EQUAL = {  # field: (value we implement, what it means)
    "no_bias": (True, "biases in Linear/LayerNorm layers"),
    "tie_word_embeddings": (True, "an untied output head"),
}
_IGNORED = {
    # transformers bookkeeping
    "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version", "_name_or_path",
    "use_cache", "return_dict", "output_hidden_states", "output_attentions", "id2label", "label2id",
    "problem_type", "is_encoder_decoder", "is_decoder", "add_cross_attention", "tie_encoder_decoder",
    "chunk_size_feed_forward", "pruned_heads", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "finetuning_task", "tf_legacy_loss", "use_bfloat16",
    "torchscript", "initializer_range", "cross_attention_hidden_size", "num_labels",
    # llm-foundry: training / hardware / init knobs that do not change inference
    "init_device", "init_config", "verbose", "tokenizer_name", "emb_pdrop", "resid_pdrop", "embedding_fraction",
    "norm_type", "fc_type", "use_pad_tok_in_ffn", "use_train_metrics", "n_positions", "hidden_size",
    "num_attention_heads", "num_hidden_layers", "quantization_config",
    # transformers writes learned_pos_emb=true by default yet never builds the embedding; a checkpoint
    # that really carries one (transformer.wpe.weight) is refused when its tensors are read
    "learned_pos_emb",
    # generation defaults that live in generation_config.json nowadays
    "max_length", "min_length", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty",
    "bad_words_ids", "num_beams",
}
_ATTN_MUST_EQUAL = {
    "alibi": (True, "attention without ALiBi"),
    "prefix_lm": (False, "prefix-LM attention"),
    "qk_ln": (False, "LayerNorm on queries and keys"),
    "qk_gn": (False, "GroupNorm on queries and keys"),
    "clip_qkv": (None, "clipping of q, k, v"),
    "softmax_scale": (None, "a softmax scale other than 1/sqrt(head_dim)"),
    "rope": (False, "rotary position embeddings"),
    "sliding_window_size": (-1, "sliding-window attention"),
    "attn_uses_sequence_id": (False, "sequence-id masking"),
}
_ATTN_IGNORED = {"alibi_bias_max", "attn_impl", "attn_pdrop", "attn_type", "kv_n_heads", "fused_qkv",
                 "rope_impl", "rope_theta", "rope_dail_config", "rope_hf_config", "flash_attn_version"}


def config_from_json(data: dict[str, Any], source: str = CONFIG_FILE) -> ModelConfig:
    """A ModelConfig from an MPT config.json (ours, transformers', llm-foundry's)."""
    if data.get("model_type") != "mpt":
        raise CheckpointError(f"{source}: model_type is {data.get('model_type')!r}; only 'mpt' models are supported")
    for f in _REQUIRED:
        if f not in data:
            raise CheckpointError(f"{source}: required field '{f}' is missing")
    for f, (want, meaning) in _MUST_EQUAL.items():
        if f in data and data[f] != want:
            raise CheckpointError(f"{source}: field '{f}'={data[f]!r} asks for {meaning}, which Alaya does not implement")
    attn = data.get("attn_config") or {}
    if not isinstance(attn, dict):
        raise CheckpointError(f"{source}: field 'attn_config' must be an object, got {type(attn).__name__}")
    for f, (want, meaning) in _ATTN_MUST_EQUAL.items():
        if f in attn and attn[f] != want and not (want is False and attn[f] is None):
            raise CheckpointError(
                f"{source}: field 'attn_config.{f}'={attn[f]!r} asks for {meaning}, which Alaya does not implement"
            )
    attn_type = attn.get("attn_type", "multihead_attention")
    kv_heads = attn.get("kv_n_heads", data["n_heads"])
    if attn_type != "multihead_attention" and not (attn_type == "grouped_query_attention" and kv_heads == data["n_heads"]):
        raise CheckpointError(f"{source}: field 'attn_config.attn_type'={attn_type!r} is not supported (multihead_attention only)")
    ffn = data.get("ffn_config")
    if ffn is not None and ffn.get("ffn_type", "mptmlp") != "mptmlp":
        raise CheckpointError(f"{source}: field 'ffn_config.ffn_type'={ffn.get('ffn_type')!r} is not supported (mptmlp only)")
    if ffn is not None and ffn.get("ffn_act_fn", {}).get("name", "gelu") != "gelu":
        raise CheckpointError(f"{source}: field 'ffn_config.ffn_act_fn' must be exact GELU")
    if data.get("norm_type", "low_precision_layernorm") not in ("low_precision_layernorm", "layernorm"):
        raise CheckpointError(f"{source}: field 'norm_type'={data['norm_type']!r} is not supported (LayerNorm only)")
    if data.get("block_overrides"):
        raise CheckpointError(f"{source}: field 'block_overrides' (heterogeneous blocks) is not supported")
    known = set(_REQUIRED) | set(_MUST_EQUAL) | _IGNORED | {
        "attn_config", "ffn_config", "block_overrides", "expansion_ratio", "layer_norm_epsilon", "logit_scale",
        "bos_token_id", "eos_token_id", "pad_token_id",
    }
    unknown = sorted(set(data) - known)
    unknown_attn = sorted(set(attn) - set(_ATTN_MUST_EQUAL) - _ATTN_IGNORED - _IGNORED)  # transformers nests bookkeeping here too
    if unknown or unknown_attn:
        names = unknown + [f"attn_config.{k}" for k in unknown_attn]
        raise CheckpointError(
            f"{source}: unknown config field(s) {names}: Alaya cannot tell whether they change the network; "
            "remove them from the file if they do not"
        )
    logit_scale = data.get("logit_scale")
    if logit_scale == "inv_sqrt_d_model":
        logit_scale = 1 / math.sqrt(data["d_model"])
    elif logit_scale is not None and not isinstance(logit_scale, (int, float)):
        raise CheckpointError(f"{source}: field 'logit_scale'={logit_scale!r} must be a number, null or 'inv_sqrt_d_model'")

    def token_id(name: str, default: int) -> int:
        v = data.get(name)
        if isinstance(v, list):
            v = v[0] if v else None
        return default if v is None else int(v)

    try:
        return ModelConfig(
            d_model=data["d_model"], n_heads=data["n_heads"], n_layers=data["n_layers"],
            expansion_ratio=data.get("expansion_ratio", 4), max_seq_len=data["max_seq_len"],
            vocab_size=data["vocab_size"], alibi_bias_max=attn.get("alibi_bias_max", 8),
            layer_norm_epsilon=data.get("layer_norm_epsilon", 1e-5), logit_scale=logit_scale,
            bos_token_id=token_id("bos_token_id", 1), eos_token_id=token_id("eos_token_id", EOS_ID),
            pad_token_id=token_id("pad_token_id", EOS_ID), name=data.get("_name_or_path") or "custom",
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: {e}") from None


def config_to_json(config: ModelConfig, dtype: torch.dtype) -> dict[str, Any]:
    """config.json that transformers' MptConfig reads natively (no remote code)."""
    return {
        "architectures": ["MptForCausalLM"],
        "model_type": "mpt",
        "d_model": config.d_model,
        "n_heads": config.n_heads,
        "n_layers": config.n_layers,
        "expansion_ratio": config.expansion_ratio,
        "max_seq_len": config.max_seq_len,
        "vocab_size": config.vocab_size,
        "attn_config": {
            "alibi": True, "alibi_bias_max": config.alibi_bias_max, "attn_impl": "torch",
            "attn_type": "multihead_attention", "attn_pdrop": 0, "clip_qkv": None, "softmax_scale": None,
            "prefix_lm": False, "qk_ln": False, "attn_uses_sequence_id": False,
        },
        "no_bias": True,
        "norm_type": "low_precision_layernorm",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "learned_pos_emb": False,
        "logit_scale": config.logit_scale,
        "emb_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "embedding_fraction": 1.0,
        "init_device": "cpu",
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def generation_config_json(config: ModelConfig) -> dict[str, Any]:
    """The published scripts' generation defaults (docs/design.md, "The recipe"), except their max_new_tokens=1000:
    written here it would override every caller's own ``max_length`` (transformers gives the file's
    max_new_tokens precedence), so harnesses such as lm-eval would generate past their budget and past a
    small model's context. The folder says ``max_length`` = the context instead; `alaya infer/chat` keep
    the published 1000-token default on their command lines."""
    return {
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "bad_words_ids": [[RESERVED_ID]],
        "do_sample": True,
        "top_p": 0.9,
        "max_length": config.max_seq_len,
    }


# ------------------------------------------------------------------------------------------- writing
def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_model(
    model: AlayaForCausalLM,
    folder: str | Path,
    tokenizer: Any = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Save a Hugging Face folder: config.json, generation_config.json, (sharded) safetensors, tokenizer."""
    folder = Path(folder)
    state = {k: v for k, v in model.state_dict().items()}
    dtype = dtype or next(iter(state.values())).dtype
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}
    with atomic_folder(folder) as tmp:
        _write_json(tmp / CONFIG_FILE, config_to_json(model.config, dtype))
        _write_json(tmp / GENERATION_CONFIG_FILE, generation_config_json(model.config))
        shards = _plan_shards(state, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / SAFE_WEIGHTS), metadata={"format": "pt"})
        else:
            weight_map, total = {}, 0
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                for k, v in shard.items():
                    weight_map[k] = name
                    total += v.numel() * v.element_size()
            _write_json(tmp / SAFE_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
        if tokenizer is not None:
            tokenizer.save(tmp)
    return folder


def _plan_shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    return shards


# ------------------------------------------------------------------------------------------- reading
def read_json_object(path: Path, missing: str) -> dict:
    """A JSON object from ``path``; ``missing`` says what the folder should have been."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; {missing}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: must hold a JSON object")
    return data


def read_config(folder: str | Path) -> ModelConfig:
    path = Path(folder) / CONFIG_FILE
    return config_from_json(read_json_object(path, "a model folder needs config.json"), str(path))


def _weight_files(folder: Path) -> list[Path]:
    """The weight files of a folder, in the order its index (or the single-file name) gives."""
    for index_name, single in ((SAFE_INDEX, SAFE_WEIGHTS), (BIN_INDEX, BIN_WEIGHTS)):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a valid index (needs a 'weight_map' object): {e}") from None
            files = list(dict.fromkeys(weight_map.values()))
            for name in files:
                if not (folder / name).is_file():
                    raise CheckpointError(f"{index}: shard '{name}' is listed but missing from {folder}")
            return [folder / name for name in files]
        if (folder / single).is_file():
            return [folder / single]
    raise CheckpointError(
        f"{folder}: no weights found (expected {SAFE_WEIGHTS}, {SAFE_INDEX}, {BIN_WEIGHTS} or {BIN_INDEX})"
    )


def _read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                for k in f.keys():
                    yield k, f.get_tensor(k)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path}: cannot read safetensors file (truncated or corrupt?): {e}") from None
    else:
        try:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped
                    raise
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for disallowed globals, RuntimeError for truncation
            raise CheckpointError(f"{path}: cannot read as a weights-only PyTorch file: {e}") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict")
        yield from state.items()


def _normalise_key(key: str) -> str:
    # composer / llm-foundry checkpoints sometimes carry a 'model.' prefix
    return key[len("model."):] if key.startswith("model.transformer.") else key


def load_model(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> AlayaForCausalLM:
    """Load a model folder into an AlayaForCausalLM, checking every tensor's name, shape and dtype."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder")
    config = read_config(folder)
    with torch.device("meta"):
        model = AlayaForCausalLM(config)
    expected = {k: v for k, v in model.state_dict().items()}
    loaded: dict[str, torch.Tensor] = {}
    for path in _weight_files(folder):
        for key, t in _read_tensors(path):
            key = _normalise_key(key)
            if key == "lm_head.weight":
                continue  # tied to transformer.wte.weight
            if key not in expected:
                if key == "transformer.wpe.weight":
                    raise CheckpointError(f"{path}: tensor '{key}' holds learned position embeddings; Alaya uses ALiBi only")
                if key.endswith(".bias"):
                    raise CheckpointError(f"{path}: tensor '{key}' is a bias; Alaya models have none (no_bias)")
                raise CheckpointError(f"{path}: unexpected tensor '{key}' (not part of an MPT model with this config)")
            want = tuple(expected[key].shape)
            if tuple(t.shape) != want:
                raise CheckpointError(
                    f"{path}: tensor '{key}' has shape {list(t.shape)}, but config.json needs {list(want)}"
                )
            if not t.is_floating_point():
                raise CheckpointError(f"{path}: tensor '{key}' has dtype {t.dtype}; weights must be floating point")
            loaded[key] = t.to(device=device, dtype=dtype or t.dtype)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        raise CheckpointError(f"{folder}: tensor(s) missing from the weights: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    dtypes = {t.dtype for t in loaded.values()}
    if len(dtypes) > 1:
        first = next(iter(loaded.values())).dtype
        warnings.warn(f"{folder}: weights mix dtypes {sorted(map(str, dtypes))}; all cast to {first}")
        loaded = {k: v.to(first) for k, v in loaded.items()}
    model.load_state_dict(loaded, assign=True, strict=True)
    return model.eval()
