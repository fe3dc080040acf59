import json
from pathlib import Path

import pytest

from alaya.cli import main
from alaya.data.curate import run_curate
from conftest import stage_docs


def test_curate_end_to_end_with_every_contract(dup_input, tmp_path):
    inputs, _ = dup_input
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  - stage: normalize\n  - stage: language\n  - stage: filter\n"
                   "    gopher: {min_words: 20}\n    chinese: {min_chars: 20}\n    c4: {enabled: false}\n"
                   "  - stage: exact_dedup\n  - stage: fuzzy_dedup\n  - stage: type\nmixture: {max_epochs: 3}\n")
    out = tmp_path / "cur"
    summary = run_curate(str(cfg), inputs, str(out), processes=2)
    for m in summary["stages"]:
        assert m["in"] == m["kept"] + m["removed"] + m["quarantined"], m
        assert isinstance(m["wall_seconds"], float), m  # every stage, dedup included, records its wall time
    assert summary["stages"][0]["quarantined"] == 2 and summary["stages"][0]["in"] == 41
    assert [s["stage"] for s in summary["stages"]] == ["normalize", "language", "filter", "exact_dedup", "fuzzy_dedup", "type"]
    final = stage_docs(Path(summary["output"]))
    assert final and all(d["meta"]["lang"] in ("en", "zh") and d["meta"]["type"] for d in final)
    assert any(d["reason"] == "exact_duplicate" for d in stage_docs(out / "stages" / "04-exact_dedup" / "removed"))
    mixture = json.loads((out / "mixture.json").read_text())
    assert abs(sum(mixture["weights"].values()) - 1) < 1e-6 and max(mixture["epochs"].values()) <= 3 + 1e-9
    report = (out / "report" / "report.md").read_text()
    assert "| fuzzy_dedup" in report and (out / "report" / "shares.png").stat().st_size > 1000
    (out / "report" / "report.md").unlink()
    assert main(["data", "report", str(out)]) == 0 and (out / "report" / "report.md").read_text() == report
    assert main(["data", "report", str(tmp_path)]) == 2  # not a curate folder: a clear error
    # re-running a finished job does nothing; another config in the same folder is refused
    assert run_curate(str(cfg), inputs, str(out))["seconds"] == summary["seconds"]
    cfg.write_text("pipeline:\n  - stage: normalize\n")
    with pytest.raises(ValueError, match="another config"):
        run_curate(str(cfg), inputs, str(out))


def test_data_commands_explain_themselves(capsys):
    for cmd in (["data", "curate"], ["data", "dedup"], ["data", "filter"], ["data", "quality", "train"],
                ["data", "type", "train"], ["data", "mix"]):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        assert "example" in capsys.readouterr().out
    assert main(["data", "dedup", "--input", "/nonexistent", "--output", "/tmp/x"]) == 2


def test_a_bad_pipeline_config_is_named_before_any_work(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- stage: normalize\n")
    with pytest.raises(ValueError, match="list.yaml: the top level must be a mapping"):
        run_curate(str(bad), ["builtin:demo-bilingual"], str(tmp_path / "out"))
    typo = tmp_path / "typo.yaml"
    typo.write_text("pipeline:\n  - stage: normalise\n")
    with pytest.raises(ValueError, match="unknown stage 'normalise'"):
        run_curate(str(typo), ["builtin:demo-bilingual"], str(tmp_path / "out2"))


def test_the_shipped_curate_config_is_the_default_pipeline_written_out():
    """configs/data/curate.yaml documents every threshold; it must build the stages the default pipeline builds
    (the quickstart and the curation ablation run the default), so the two cannot drift apart."""
    import yaml

    from alaya.data.curate import DEFAULT_PIPELINE
    from alaya.data.stages import build_stage

    shipped = yaml.safe_load((Path(__file__).parents[2] / "configs" / "data" / "curate.yaml").read_text())["pipeline"]
    assert len(shipped) == len(DEFAULT_PIPELINE)
    for written, default in zip(shipped, DEFAULT_PIPELINE):
        a, b = build_stage(written), build_stage(default)
        assert type(a) is type(b) and vars(a).keys() == vars(b).keys()
        for key in vars(a):
            va, vb = getattr(a, key), getattr(b, key)
            if isinstance(va, (str, int, float, bool, set, list, tuple, dict, type(None))):
                assert va == vb, (written["stage"], key, va, vb)
