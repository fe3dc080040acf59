"""PEFT LoRA adapter folders (adapter_config.json + adapter_model.safetensors) applied to our model.

For inference the adapter is merged: ``W += scaling * B @ A`` for every adapted Linear, with
``scaling = lora_alpha / r`` (``/ sqrt(r)`` with ``use_rslora``) and the per-module ``rank_pattern`` /
``alpha_pattern`` overrides, exactly as ``peft.PeftModel.merge_and_unload`` does; the merged model runs
at the base model's speed. Keys carry transformers' MptForCausalLM names, so adapters that peft trains on
the transformers model apply here unchanged. Features that cannot be merged into our network (DoRA,
LoRA biases, ``modules_to_save``, an adapter on the tied embedding) are refused with the reason.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from alaya.model.hf import CheckpointError, read_json_object
from alaya.model.mpt import AlayaForCausalLM

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_[AB]|lora_embedding_[AB]|lora_magnitude_vector)"
                  r"(?:\.[A-Za-z0-9_-]+)?(?:\.weight)?$")


def _pattern_value(patterns: dict, module: str, default):
    # peft's rule (get_pattern_key): a pattern matches a module name that ends with it at a dot boundary
    for pattern, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def read_adapter(folder: str | Path) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """The adapter's config and its weights grouped by module: {module: {"lora_A": A, "lora_B": B}}."""
    folder = Path(folder)
    cfg_path = folder / ADAPTER_CONFIG
    cfg = read_json_object(cfg_path, "not a PEFT adapter folder")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{cfg_path}: peft_type {cfg.get('peft_type')!r} is not supported; only LORA adapters")
    if cfg.get("use_dora"):
        raise CheckpointError(f"{cfg_path}: use_dora=true (DoRA) is not supported; train a plain LoRA adapter")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        raise CheckpointError(f"{cfg_path}: bias={cfg.get('bias')!r}: the Alaya model has no biases; use bias='none'")
    for unsupported in ("trainable_token_indices", "target_parameters", "layer_replication"):
        if cfg.get(unsupported):
            raise CheckpointError(f"{cfg_path}: {unsupported}={cfg[unsupported]!r} is not supported")
    if cfg.get("modules_to_save"):
        raise CheckpointError(f"{cfg_path}: modules_to_save={cfg['modules_to_save']} is not supported")
    for field in ("r", "lora_alpha"):
        if not isinstance(cfg.get(field), (int, float)) or cfg[field] <= 0:
            raise CheckpointError(f"{cfg_path}: field {field!r} must be a positive number, got {cfg.get(field)!r}")
    w_path = folder / ADAPTER_WEIGHTS
    if not w_path.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise CheckpointError(f"{folder}: adapter_model.bin (pickle) is not loaded; save with safe_serialization")
        raise FileNotFoundError(f"{folder}: missing {ADAPTER_WEIGHTS}")
    try:
        tensors = load_file(str(w_path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{w_path}: cannot read: {e}") from None
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if not m:
            raise CheckpointError(f"{w_path}: tensor {key!r} is not a LoRA weight (modules_to_save or bias?)")
        if m["part"] == "lora_magnitude_vector":
            raise CheckpointError(f"{w_path}: {key!r} is a DoRA weight; DoRA is not supported")
        if m["part"].startswith("lora_embedding"):
            raise CheckpointError(
                f"{w_path}: {key!r} adapts the token embedding, which the Alaya model ties to its output head; "
                "a merged adapter would change both. Adapt the attention and FFN Linears instead"
            )
        modules.setdefault(m["module"], {})[m["part"]] = t
    for name, parts in modules.items():
        if set(parts) != {"lora_A", "lora_B"}:
            raise CheckpointError(f"{w_path}: module {name!r} has {sorted(parts)}, needs lora_A and lora_B")
    if not modules:
        raise CheckpointError(f"{w_path}: holds no LoRA weights")
    return cfg, modules


@torch.no_grad()
def merge_adapter(model: AlayaForCausalLM, folder: str | Path) -> list[str]:
    """Merge the adapter into the model's weights in place; return the adapted module names."""
    cfg, modules = read_adapter(folder)
    named = dict(model.named_modules())
    for name, parts in sorted(modules.items()):
        module = named.get(name)
        if not isinstance(module, torch.nn.Linear):
            raise CheckpointError(f"{folder}: adapter targets {name!r}, which is not a Linear layer of this model")
        A, B = parts["lora_A"].float(), parts["lora_B"].float()
        r = A.shape[0]
        W = module.weight
        if B.shape[1] != r:
            raise CheckpointError(f"{folder}: {name}: lora_A has rank {r} but lora_B has {B.shape[1]} columns")
        delta = B @ A
        if cfg.get("fan_in_fan_out"):
            delta = delta.T
        if delta.shape != W.shape:
            raise CheckpointError(
                f"{folder}: {name}: adapter gives a {tuple(delta.shape)} update for a {tuple(W.shape)} weight; "
                "was it trained on a model of another size?"
            )
        alpha = _pattern_value(cfg.get("alpha_pattern"), name, cfg["lora_alpha"])
        scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        W.copy_((W.float() + scaling * delta.to(W.device)).to(W.dtype))
    return sorted(modules)
