"""The GPU suite (benchmarks/gpu.py) runs end to end: its --smoke mode runs the very code of the GPU run at
tiny shapes on the CPU, so the suite itself never rots. No timing is checked, only that every row ran and
was read."""
import json
import math
import os
import subprocess
import sys

from conftest import REPO, SHARED_DATA


def run_suite(tmp_path, rows):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "benchmarks")]),
           "ALAYA_DATA": str(SHARED_DATA)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path),
                           "--only", *rows], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "GPU suite" in done.stdout
    report = json.loads((tmp_path / "gpu-report.json").read_text(encoding="utf-8"))
    assert report["smoke"] is True and report["device"] == "cpu"
    assert all(" -> " in line for line in report["goals"]) and "The GPU issues' goals" in done.stdout
    return report["rows"], report["table"].splitlines() + report["goals"]


# the suite's rows in two files (this one and test_gpu_suite_cli.py), so that two workers share them


def test_the_gpu_suite_runs_its_speed_and_parity_rows_at_tiny_shapes_on_the_cpu(tmp_path):
    rows, lines = run_suite(tmp_path, ["train", "sft", "decode", "flex", "compile"])
    train = rows["train fp32"][-1]
    # the rows were produced and read (numbers, not their size: timings belong in benchmarks/)
    assert all(math.isfinite(train[side]["tokens_per_s"]) for side in ("alaya", "transformers"))
    decode = [r for r in rows["decode"] if "batch" in r]
    assert [r["batch"] for r in decode] == [1, 2]
    assert all(math.isfinite(r[side]) for r in decode for side in ("alaya tok/s", "alaya graphs tok/s", "transformers tok/s"))
    assert any(line.startswith("- decode batch 1 >= 50 % of the bandwidth bound") for line in lines)
    # fp32 on the CPU: every greedy row of both alaya paths equals transformers', token for token
    assert next(line for line in lines if line.startswith("- greedy output token for token")).endswith("-> met")
    if (SHARED_DATA / "lf_alpaca_en_demo").is_dir():
        assert any(line.startswith("- LoRA SFT step >= 1.5x transformers + peft, padded rows: ") for line in lines)
    graphs_b1 = next(line for line in lines if line.startswith("| decode batch 1, alaya graphs tok/s |"))
    assert "% of the bandwidth bound" in graphs_b1 and "first call" in graphs_b1  # the share and capture time
    assert set(next(r["bound"] for r in rows["decode"] if "bound" in r)["percent"]) >= {"alaya", "alaya graphs",
                                                                                        "transformers"}
    if (SHARED_DATA / "lf_alpaca_en_demo").is_dir():  # the SFT row reads the Alpaca demos
        sft = rows["sft fp32"][-1]
        assert all(math.isfinite(sft[side]["tokens_per_s"]) for side in ("alaya", "alaya packed", "transformers+peft"))
    flex = [r for r in rows["flex parity"] if "errors" in r]
    assert [r["rows"] for r in flex] == ["padded rows", "packed rows"]
    assert rows["flex parity"][-1]["flex_parity"]["ok"] is True  # a correctness check, not a timing
    assert any(line.startswith("| flex parity | PASS |") for line in lines)
    assert "each block" in rows["compile"][-1]["compile"]
    for name in ("train-fp32", "sft-fp32", "decode", "flex-parity", "compile"):
        assert (tmp_path / f"{name}.log").is_file()
