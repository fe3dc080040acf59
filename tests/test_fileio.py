"""Files and folders written by any command follow the user's umask, like any file the user writes."""
import os
import stat

import pytest
import torch

from alaya.fileio import atomic_folder, write_text_atomic
from alaya.model.config import preset
from alaya.model.hf import save_model
from alaya.model.lora import save_adapter
from alaya.model.mpt import AlayaForCausalLM


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def modes(root):
    """{relative path: permission bits} of root and everything below it."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.stat(p).st_mode)
    return out


@pytest.mark.parametrize("mask,folder_mode,file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_model_adapter_and_plain_folders_follow_the_umask(mask, folder_mode, file_mode, umask, tmp_path, sft_tok):
    umask(mask)
    model = AlayaForCausalLM(preset("alaya-tiny", vocab_size=600, d_model=32, n_heads=2, n_layers=1, max_seq_len=32))
    save_model(model, tmp_path / "model", tokenizer=sft_tok)
    save_adapter(tmp_path / "adapter", {"r": 1}, {"a.lora_A.weight": torch.zeros(1, 2)})
    with atomic_folder(tmp_path / "plain") as tmp:
        (tmp / "sub").mkdir()
        write_text_atomic(tmp / "sub" / "x.txt", "x")
    for name in ("model", "adapter", "plain"):
        found = modes(tmp_path / name)
        assert "model.safetensors" in found or "adapter_model.safetensors" in found or "sub/x.txt" in found
        want = {p: folder_mode if (tmp_path / name / p).is_dir() else file_mode for p in found}
        assert found == want, name
