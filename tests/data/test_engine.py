"""The data engines (local processes, Ray): the same output, resumption, one big file shared by processes."""
from pathlib import Path

import pytest

from alaya.data.curate import run_curate, run_single_stage
from conftest import stage_docs, stage_ids


def test_engines_and_process_counts_give_the_same_output_and_a_killed_job_resumes(dup_input, tmp_path):
    inputs, _ = dup_input
    one = run_single_stage({"stage": "fuzzy_dedup"}, inputs, str(tmp_path / "one"), processes=1)
    two = run_single_stage({"stage": "fuzzy_dedup"}, inputs, str(tmp_path / "two"), processes=2)
    assert stage_ids(tmp_path / "one" / "data") == stage_ids(tmp_path / "two" / "data") and one["kept"] == two["kept"]
    # a per-document stage killed after one shard: remove the other shard's outputs and the manifest
    out = tmp_path / "norm"
    run_single_stage({"stage": "normalize"}, inputs, str(out), processes=1)
    before = {p.name: p.read_bytes() for p in (out / "data").glob("*.jsonl")}
    (out / "manifest.json").unlink()
    (out / "_done" / "00001.json").unlink()
    for p in (out / "data").glob("part-00001-*"):
        p.unlink()
    run_single_stage({"stage": "normalize"}, inputs, str(out), processes=1)
    assert {p.name: p.read_bytes() for p in (out / "data").glob("*.jsonl")} == before


@pytest.mark.slow
def test_ray_engine_gives_the_same_kept_ids_as_the_local_engine(dup_input, tmp_path):
    ray = pytest.importorskip("ray")
    inputs, _ = dup_input
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  - stage: normalize\n  - stage: language\n  - stage: exact_dedup\n"
                   "  - stage: fuzzy_dedup\n  - stage: fuzzy_dedup\n    level: paragraph\n    min_paragraph_chars: 40\n"
                   "report: false\n")
    split_cfg = tmp_path / "split.yaml"  # Ray also gets the input files cut into ranges
    split_cfg.write_text(cfg.read_text() + "shard_mb: 0.02\n")
    local = run_curate(str(cfg), inputs, str(tmp_path / "local"), engine="local", processes=2)
    try:
        remote = run_curate(str(split_cfg), inputs, str(tmp_path / "ray"), engine="ray", processes=2)
    finally:
        ray.shutdown()
    assert remote["engine"] == "ray" and remote["stages"][0]["shards"] > local["stages"][0]["shards"]
    for a, b in zip(local["stages"], remote["stages"]):
        assert (a["in"], a["kept"], a["removed"], a["quarantined"]) == (b["in"], b["kept"], b["removed"], b["quarantined"])
    assert stage_docs(Path(local["output"])) == stage_docs(Path(remote["output"]))  # same ids, same texts, same order


def test_one_large_input_file_is_shared_by_processes_with_the_same_output(dup_input, tmp_path):
    inputs, _ = dup_input
    single = tmp_path / "single.jsonl"
    single.write_bytes(b"".join(Path(p).read_bytes() for p in inputs))  # one file, bad lines included
    pipeline = "pipeline:\n  - stage: normalize\n  - stage: exact_dedup\n  - stage: fuzzy_dedup\n"
    whole_cfg, split_cfg = tmp_path / "whole.yaml", tmp_path / "split.yaml"
    whole_cfg.write_text(pipeline + "report: false\n", encoding="utf-8")
    split_cfg.write_text(pipeline + "report: false\nshard_mb: 0.01\n", encoding="utf-8")  # ~10 KB ranges
    whole = run_curate(str(whole_cfg), [str(single)], str(tmp_path / "w"), processes=1)
    split = run_curate(str(split_cfg), [str(single)], str(tmp_path / "s"), processes=2)
    assert whole["stages"][0]["shards"] == 1 and split["stages"][0]["shards"] > 3
    for a, b in zip(whole["stages"], split["stages"]):
        assert (a["in"], a["kept"], a["removed"], a["quarantined"]) == (b["in"], b["kept"], b["removed"], b["quarantined"])
    assert stage_ids(Path(whole["output"])) == stage_ids(Path(split["output"]))
    q = lambda root: sorted((r["file"], r["line"], r["reason"]) for r in stage_docs(root / "stages" / "01-normalize" / "quarantine"))  # noqa: E731
    assert q(tmp_path / "w") == q(tmp_path / "s") and len(q(tmp_path / "w")) == 2
