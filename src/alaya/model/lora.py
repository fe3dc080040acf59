"""LoRA on our model: trainable adapters (:func:`add_lora`), saved as PEFT folders (adapter_config.json +
adapter_model.safetensors, :func:`save_adapter`), and PEFT folders applied to our model (:func:`merge_adapter`).

Training: each targeted Linear becomes a :class:`LoRALinear` that keeps its frozen ``weight`` under the same
name and adds ``lora_A`` [r, in] (kaiming-uniform, as peft) and ``lora_B`` [out, r] (zeros), with dropout on
the adapter's input: ``y = x W^T + scaling * B(A(dropout(x)))``. The saved tensors are named as peft names
them on transformers' MptForCausalLM (``base_model.model.transformer.blocks.0.attn.Wqkv.lora_A.weight``),
so ``peft.PeftModel.from_pretrained`` loads our adapters.

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
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from alaya.fileio import atomic_folder, write_json_atomic

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


DEFAULT_TARGETS = ("Wqkv", "out_proj", "up_proj", "down_proj")


def cpu_dropout(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """Dropout for the CPU without its 1 / keep scale: ``(x with elements zeroed, keep)``.

    Each element is dropped when a 16-bit random number falls below ``round(p * 65536)``, so it is kept
    with probability ``keep = 1 - round(p * 65536) / 65536`` (0.950003 for p = 0.05). Four such numbers
    come from one 64-bit draw of the default generator, which makes the mask about 5x cheaper than
    ``torch.bernoulli_`` (one draw per element): on a CPU, LoRA's dropout otherwise costs more than the
    adapter's products. Seeded and checkpointed like any draw of the default generator.
    """
    threshold = round(p * 65536)
    n = x.numel()
    bits = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)  # every bit random
    drop = bits.view(torch.int16)[:n].view(x.shape) < threshold - 32768
    return x.masked_fill(drop, 0.0), 1.0 - threshold / 65536


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update; ``weight`` keeps the base layer's name."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {dropout}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.weight.requires_grad_(False)
        dev, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=dev, dtype=dtype)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=dev, dtype=dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # peft's default init
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = float(dropout)
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight)
        scaling = self.scaling
        if self.training and self.dropout > 0:
            if x.device.type == "cpu":
                x, keep = cpu_dropout(x, self.dropout)
                scaling = scaling / keep  # dropout's 1 / keep, folded into the adapter's (linear) scale
            else:
                x = F.dropout(x, self.dropout, training=True)
        return base + self.lora_B(self.lora_A(x)) * scaling

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features, bias=False, device=self.weight.device,
                        dtype=self.weight.dtype)
        delta = self.lora_B.weight.float() @ self.lora_A.weight.float()
        out.weight.copy_((self.weight.float() + self.scaling * delta).to(self.weight.dtype))
        return out


def _targeted(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def add_lora(model: AlayaForCausalLM, r: int = 16, alpha: float = 32, dropout: float = 0.05,
             targets=DEFAULT_TARGETS, rslora: bool = False) -> list[str]:
    """Freeze the model and put a LoRA adapter on every Linear whose name ends with a target; the adapted
    names. The tied embedding / head is never adapted (a merged update would change both)."""
    if r < 1:
        raise ValueError(f"lora.r must be >= 1, got {r}")
    for p in model.parameters():
        p.requires_grad_(False)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _targeted(n, targets)]
    if not names:
        linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"lora.target_modules {list(targets)} match no Linear layer; the model has {linears}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout, rslora))
    return names


@torch.no_grad()
def frozen_to(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen weights of the Linears and norms (a LoRA run's base) in ``dtype``; the count of those
    cast. Under bf16 autocast their products saw these same bf16 weights, cast from fp32 in every forward,
    so a LoRA step computes bitwise the same thing, with half their memory and no cast per forward. The
    token embedding stays as it is: its rows enter the fp32 residual stream uncast."""
    n = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            continue
        for p in module.parameters(recurse=False):
            if not p.requires_grad and p.dtype != dtype and p.is_floating_point():
                p.data = p.data.to(dtype)
                n += 1
    return n


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_config(r: int, alpha: float, dropout: float, targets, rslora: bool, base_model: str = "") -> dict:
    """adapter_config.json as peft writes it for a plain LoRA on a causal LM."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model, "r": r,
            "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": sorted(targets), "bias": "none",
            "fan_in_fan_out": False, "use_rslora": rslora, "use_dora": False, "init_lora_weights": True,
            "inference_mode": True, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
            "layers_to_transform": None, "layers_pattern": None, "revision": None}


def adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's tensors under peft's names; ``state``: a full (gathered) state dict of the model."""
    state = state if state is not None else model.state_dict()
    out = {}
    for key, t in state.items():
        if ".lora_A." in key or ".lora_B." in key:
            out[f"base_model.model.{key}"] = t.detach().float().contiguous().cpu()
    return out


def save_adapter(folder: str | Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """A PEFT adapter folder, written atomically."""
    if not tensors:
        raise ValueError("the model has no LoRA weights to save")
    with atomic_folder(Path(folder)) as tmp:
        write_json_atomic(tmp / ADAPTER_CONFIG, config, indent=2)
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return Path(folder)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRALinear into a plain Linear (in place); the model runs at the base model's speed."""
    for name, module in lora_modules(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.merged())
    return model
