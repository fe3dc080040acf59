import pytest
import torch

from alaya.model.config import PRESETS, ModelConfig, preset
from alaya.model.mpt import AlayaForCausalLM


def test_alaya_7b_has_6_69_billion_parameters_counted_on_meta_device():
    config = preset("alaya-7b")
    assert (config.d_model, config.n_heads, config.n_layers, config.vocab_size, config.max_seq_len) == (4096, 32, 32, 60160, 2048)
    with torch.device("meta"):
        model = AlayaForCausalLM(config)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == config.num_parameters()
    assert round(counted / 1e9, 2) == 6.69


@pytest.mark.parametrize("name,millions", [("alaya-tiny", 1), ("alaya-10m", 10), ("alaya-50m", 50)])
def test_small_presets_have_about_their_size(name, millions):
    n = PRESETS[name].num_parameters() / 1e6
    assert 0.7 * millions <= n <= 1.3 * millions


def test_overrides_and_validation():
    # an override reaches the built network: its parameter count is the formula's for the new width
    wide = preset("alaya-tiny", d_model=256)
    assert wide.num_parameters() != preset("alaya-tiny").num_parameters()
    assert sum(p.numel() for p in AlayaForCausalLM(wide).parameters()) == wide.num_parameters()
    with pytest.raises(KeyError, match="unknown model preset"):
        preset("nope")
    with pytest.raises(KeyError, match="hidden"):
        preset("alaya-tiny", hidden=3)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=50, n_heads=3)
    with pytest.raises(ValueError, match="eos_token_id"):
        ModelConfig(vocab_size=2)
