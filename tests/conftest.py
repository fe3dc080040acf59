from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alaya.model.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CORPUS = SHARED_DATA / "corpus"


@pytest.fixture
def small_config() -> ModelConfig:
    # 6 heads: not a power of two, so MPT's slope interleaving is exercised
    return ModelConfig(d_model=48, n_heads=6, n_layers=2, vocab_size=320, max_seq_len=96)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def needs_corpus():
    return pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not present at {CORPUS}")
