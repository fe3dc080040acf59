"""``alaya merge``: a model folder with a PEFT LoRA adapter folded into its weights, as a new model folder."""
from __future__ import annotations

from pathlib import Path

import torch

from alaya.model.hf import load_model, save_model
from alaya.model.lora import merge_adapter


def merge_to_folder(model_path: str | Path, adapter_path: str | Path, output: str | Path,
                    dtype: str = "float32") -> list[str]:
    """Merge in fp32 (the adapter's small update is not lost to rounding), then save in ``dtype``; the
    tokenizer comes from the model folder, else from the adapter folder. Returns the merged layers."""
    from alaya.tokenizer import AlayaTokenizer

    if Path(output).resolve() in (Path(model_path).resolve(), Path(adapter_path).resolve()):
        raise ValueError(f"output {output} must be a new folder, not the model or the adapter")
    model = load_model(model_path, dtype=torch.float32)
    names = merge_adapter(model, adapter_path)
    tok_dir = model_path if (Path(model_path) / "tokenizer.json").is_file() else adapter_path
    tok = AlayaTokenizer.load(tok_dir) if (Path(tok_dir) / "tokenizer.json").is_file() else None
    save_model(model, output, tokenizer=tok, dtype=getattr(torch, dtype))
    return names
