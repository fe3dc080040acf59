import json
import subprocess
import sys

import pytest

from alaya.cli import main

SUBCOMMANDS = [["quickstart"], ["tokenizer", "train"], ["infer"], ["chat"], ["serve"], ["pretrain"], ["data", "tokenize"],
               ["data", "curate"], ["data", "dedup"], ["data", "mix"], ["data", "report"], ["plot"], ["plan"], ["model", "init"], ["model", "info"]]


def run_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "alaya.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_top_level_help_lists_commands_with_an_example(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "tokenizer" in out and "example" in out


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_subcommand_explains_itself_with_an_example(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "example" in capsys.readouterr().out


def test_tokenizer_train_then_model_init_then_info(tmp_path):
    tok = tmp_path / "tok"
    data = tmp_path / "docs.jsonl"
    rows = [{"id": str(i), "text": t, "meta": {"lang": lang}} for i, (t, lang) in enumerate(
        [("The quick brown fox jumps over the lazy dog.", "en"), ("敏捷的棕色狐狸跳过了懒狗。", "zh"),
         ("def add(a, b):\n    return a + b\n", "code")] * 40)]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "{broken\n", encoding="utf-8")
    proc = run_cli("tokenizer", "train", "--input", str(data), "--output", str(tok), "--vocab-size", "600",
                   "--heldout-fraction", "0.3")
    report = json.loads((tok / "training_report.json").read_text())
    assert report["vocab_size"] == 600 and report["quarantined"] == 1 and report["documents"] == 120
    assert set(report["chars_per_token_held_out"]) == {"en", "zh", "code"}
    assert "docs.jsonl:121: invalid JSON" in proc.stderr
    model = tmp_path / "model"
    run_cli("model", "init", "--preset", "alaya-tiny", "--set", "vocab_size=600", "n_layers=1", "--tokenizer", str(tok),
            "--output", str(model))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json"} <= {p.name for p in model.iterdir()}
    info = json.loads(run_cli("model", "info", str(model)).stdout)
    assert info["n_layers"] == 1 and info["vocab_size"] == 600


def test_errors_are_one_clear_line_not_a_traceback(tmp_path):
    proc = run_cli("tokenizer", "train", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "t"),
                   check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("alaya: error:") and "missing.jsonl" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("model", "info", str(tmp_path), check=False)
    assert proc.returncode == 2 and "config.json" in proc.stderr


def test_generation_options_accept_transformers_underscore_spellings():
    from alaya.cli import build_parser

    a = build_parser().parse_args(["infer", "m", "in.txt", "out.jsonl", "--max_new_tokens", "7", "--top_p", "0.5",
                                   "--top_k", "3", "--repetition_penalty", "1.2", "--batch_size", "2"])
    b = build_parser().parse_args(["infer", "m", "in.txt", "out.jsonl", "--max-new-tokens", "7", "--top-p", "0.5",
                                   "--top-k", "3", "--repetition-penalty", "1.2", "--batch-size", "2"])
    assert vars(a) == vars(b) and a.max_new_tokens == 7 and a.batch_size == 2
