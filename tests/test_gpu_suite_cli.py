"""The GPU suite's CLI and server rows (benchmarks/gpu.py --smoke --only cli server) on the CPU; the other rows are
in test_gpu_suite.py (two files, so that two workers of the test command run them side by side)."""
import pytest

from test_gpu_suite import run_suite


def test_the_gpu_suite_runs_the_cli_end_to_end_and_the_server_row_on_the_cpu(tmp_path):
    rows, lines = run_suite(tmp_path, ["cli", "server"])
    cli = rows["cli"][-1]["cli"]
    assert cli["ok"] is True and set(cli["steps"]) == {"tokenizer", "tokenize", "pretrain", "pretrain fsdp2", "sft data",
                                                        "sft", "merge", "infer", "eval"}
    # FSDP2 on one process trains what the plain run trains
    assert cli["fsdp2_vs_plain_loss"]["fsdp2"] == pytest.approx(cli["fsdp2_vs_plain_loss"]["plain"], rel=1e-5)
    served = [r for r in rows["server"] if "served_over_in_process" in r]
    assert [r["weights"] for r in served] == ["float32", "int8"]
    assert any(line.startswith("| CLI: pretrain fsdp2 | ok |") for line in lines)
    for name in ("cli", "server"):
        assert (tmp_path / f"{name}.log").is_file()
