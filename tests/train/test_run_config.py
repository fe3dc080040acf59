import pytest
import yaml

from alaya.train.config import ConfigError, load_config

REPO_CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[2] / "configs" / "pretrain"


def test_presets_load_and_overrides_reach_nested_keys():
    cfg = load_config(REPO_CONFIGS / "tiny.yaml", ["model.d_model=192", "train.seq_len=128", "optimizer.betas=[0.8, 0.9]",
                                                   "data.weights={en-news: 2, zh-news: 1}"])
    assert cfg["model"] == {"preset": "alaya-tiny", "max_seq_len": 256, "d_model": 192}
    assert cfg["train"]["seq_len"] == 128 and cfg["optimizer"]["betas"] == [0.8, 0.9]
    assert cfg["data"]["weights"] == {"en-news": 2, "zh-news": 1}
    seven = load_config(REPO_CONFIGS / "alaya-7b.yaml", ["data.path=tokens"])
    assert seven["model"] == {"preset": "alaya-7b"}
    o = seven["optimizer"]  # the published numbers (docs/design.md, "The recipe")
    assert (o["lr"], o["min_lr"], o["betas"], o["eps"], o["weight_decay"], o["grad_clip"]) == (
        1.2e-4, 1.2e-5, [0.9, 0.95], 1e-8, 1e-5, 0.3)
    assert seven["train"]["precision"] == "bf16" and seven["train"]["seq_len"] == 2048


@pytest.mark.parametrize("override, message", [
    ("train.seq_lenn=5", "unknown config key 'train.seq_lenn'"),
    ("optimiser.lr=1", "unknown config key 'optimiser'"),
    ("train.precision=fp16", "train.precision must be fp32 or bf16"),
    ("schedule.warmup_steps=5000", "warmup_steps must be in"),
    ("optimizer.min_lr=1", "min_lr must be in"),
    ("noequals", "must look like key.sub=value"),
    ("train.micro_batch_size=0", "micro_batch_size must be a positive integer"),
    ("train.attention=dense", "train.attention must be auto, sdpa or flex"),
])
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(REPO_CONFIGS / "tiny.yaml", [override])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    no_data = tmp_path / "nodata.yaml"
    no_data.write_text(yaml.safe_dump({"run_dir": "x"}))
    with pytest.raises(ConfigError, match="data.path is not set"):
        load_config(no_data)
