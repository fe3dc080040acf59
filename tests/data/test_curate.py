import json
from pathlib import Path

import numpy as np
import pytest

from alaya.cli import main
from alaya.data.curate import run_curate, run_single_stage
from alaya.data.documents import read_documents
from alaya.data.mixture import mixture_weights
from conftest import CORPUS

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not present at {CORPUS}")


def _docs(path):
    return [json.loads(l) for p in sorted(Path(path).glob("part-*.jsonl")) for l in p.read_text(encoding="utf-8").splitlines()]


def _ids(path):
    return sorted(d["id"] for d in _docs(path))


@pytest.fixture(scope="module")
def dup_input(tmp_path_factory):
    """Real documents, near-duplicates of some of them (a few characters changed), exact copies, bad lines."""
    docs = list(read_documents(["builtin:demo"]))
    # real text: the bilingual paragraphs (short) and long English docstrings, a few code files
    src = [d for d in docs if d.meta.get("lang") in ("en", "zh") and len(d.text) > 1500][:24] + \
          [d for d in docs if d.meta.get("lang") == "zh"][:6]
    rng = np.random.default_rng(0)
    rows = []
    for d in src:
        rows.append({"id": d.id, "text": d.text, "meta": d.meta})
    for k, d in enumerate(src[:8]):
        chars = list(d.text)
        chars[rng.integers(len(chars))] = "#"  # one character in more than 1500
        rows.append({"id": f"near-{k}", "text": "".join(chars), "meta": d.meta})
    rows.append({"id": "exact-0", "text": "\n " + src[-1].text + "  \n", "meta": src[-1].meta})  # equal once normalised
    folder = tmp_path_factory.mktemp("dup")
    a, b = folder / "a.jsonl", folder / "b.jsonl"
    a.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:20]) + "{not json\n", encoding="utf-8")
    b.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[20:]) + '{"id": "x", "text": 5}\n',
                 encoding="utf-8")
    return [str(a), str(b)], src


def test_fuzzy_dedup_removes_near_and_exact_duplicates_and_records_duplicate_of(dup_input, tmp_path):
    inputs, src = dup_input
    m = run_single_stage({"stage": "fuzzy_dedup", "threshold": 0.8}, inputs, str(tmp_path / "d"), processes=1)
    assert m["in"] == m["kept"] + m["removed"] + m["quarantined"] and m["quarantined"] == 2
    removed = _docs(tmp_path / "d" / "removed")
    by_id = {r["id"]: r for r in removed}
    assert {f"near-{k}" for k in range(8)} <= set(by_id) and "exact-0" in by_id
    assert by_id["near-3"]["duplicate_of"] == src[3].id and by_id["exact-0"]["duplicate_of"] == src[-1].id
    assert all(r["stage"] == "fuzzy_dedup" and r["text"] for r in removed)  # nothing is lost
    assert set(_ids(tmp_path / "d" / "data")) == {d.id for d in src}
    q = _docs(tmp_path / "d" / "quarantine")
    assert len(q) == 2 and {"file", "line", "reason"} <= set(q[0])


def test_engines_and_process_counts_give_the_same_output_and_a_killed_job_resumes(dup_input, tmp_path):
    inputs, _ = dup_input
    one = run_single_stage({"stage": "fuzzy_dedup"}, inputs, str(tmp_path / "one"), processes=1)
    two = run_single_stage({"stage": "fuzzy_dedup"}, inputs, str(tmp_path / "two"), processes=2)
    assert _ids(tmp_path / "one" / "data") == _ids(tmp_path / "two" / "data") and one["kept"] == two["kept"]
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


def test_paragraph_level_dedup_cuts_repeated_paragraphs_across_documents(tmp_path):
    shared_para = "This paragraph is a boilerplate notice that many pages of the same site repeat word for word."
    rows = [{"id": "a", "text": f"First page intro that is long enough to count as a paragraph here.\n\n{shared_para}"},
            {"id": "b", "text": f"Second page has its own opening paragraph with enough characters.\n\n{shared_para}"},
            {"id": "c", "text": shared_para}]
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = run_single_stage({"stage": "fuzzy_dedup", "level": "paragraph", "min_paragraph_chars": 20}, [str(f)],
                         str(tmp_path / "o"), processes=1)
    kept = {d["id"]: d for d in _docs(tmp_path / "o" / "data")}
    assert kept["a"]["text"].endswith(shared_para)  # the first occurrence stays
    assert shared_para not in kept["b"]["text"] and kept["b"]["meta"]["paragraphs_removed"] == 1
    assert "c" not in kept and m["removed"] == 1 and m["paragraphs_removed"] == 2
    assert _docs(tmp_path / "o" / "removed")[0]["duplicate_of"] == "a"


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
    final = _docs(Path(summary["output"]))
    assert final and all(d["meta"]["lang"] in ("en", "zh") and d["meta"]["type"] for d in final)
    assert any(d["reason"] == "exact_duplicate" for d in _docs(out / "stages" / "04-exact_dedup" / "removed"))
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


def test_mixture_weights_hit_target_shares_within_the_epoch_cap():
    tokens = {"en-news": 1000, "en-books": 100, "zh-news": 500, "code-code": 50}
    m = mixture_weights(tokens, lang={"en": 0.6, "zh": 0.3, "code": 0.1}, types={"news": 0.8, "books": 0.2}, max_epochs=2)
    # targets: en-news .48, en-books .12, zh-news .30 (zh has news only), code .10
    assert m["weights"] == pytest.approx({"en-news": 0.48, "en-books": 0.12, "zh-news": 0.30, "code-code": 0.10}, abs=1e-6)
    # budget = min over sources of cap × tokens / share: code (2 × 50 / 0.1 = 1000) is the scarcest
    assert m["token_budget"] == 1000 and m["epochs"]["code-code"] == pytest.approx(2.0)
    assert m["epochs"]["en-news"] == pytest.approx(0.48 * 1000 / 1000)
    assert m["achieved"]["lang"] == {"code": 0.1, "en": 0.6, "zh": 0.3}
    with pytest.raises(ValueError, match="max_epochs"):
        mixture_weights(tokens, max_epochs=0)


def test_data_commands_explain_themselves(capsys):
    for cmd in (["data", "curate"], ["data", "dedup"], ["data", "filter"], ["data", "quality", "train"],
                ["data", "type", "train"], ["data", "mix"]):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        assert "example" in capsys.readouterr().out
    assert main(["data", "dedup", "--input", "/nonexistent", "--output", "/tmp/x"]) == 2


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
    assert _docs(Path(local["output"])) == _docs(Path(remote["output"]))  # same ids, same texts, same order


def test_a_bad_pipeline_config_is_named_before_any_work(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- stage: normalize\n")
    with pytest.raises(ValueError, match="list.yaml: the top level must be a mapping"):
        run_curate(str(bad), ["builtin:demo-bilingual"], str(tmp_path / "out"))
    typo = tmp_path / "typo.yaml"
    typo.write_text("pipeline:\n  - stage: normalise\n")
    with pytest.raises(ValueError, match="unknown stage 'normalise'"):
        run_curate(str(typo), ["builtin:demo-bilingual"], str(tmp_path / "out2"))


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
    assert _ids(Path(whole["output"])) == _ids(Path(split["output"]))
    q = lambda root: sorted((r["file"], r["line"], r["reason"]) for r in _docs(root / "stages" / "01-normalize" / "quarantine"))  # noqa: E731
    assert q(tmp_path / "w") == q(tmp_path / "s") and len(q(tmp_path / "w")) == 2


def test_when_every_document_is_filtered_out_the_report_says_which_stage_did_it(tmp_path):
    docs = tmp_path / "short.jsonl"
    docs.write_text("".join(json.dumps({"id": str(i), "text": f"Too short a page, number {i}.", "meta": {"lang": "en"}}) + "\n"
                            for i in range(20)), encoding="utf-8")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  - stage: normalize\n  - stage: filter\n    gopher: {min_words: 50}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"stage 2 'filter' removed the last 20") as err:
        run_curate(str(cfg), [str(docs)], str(tmp_path / "out"))
    report = (tmp_path / "out" / "report" / "report.md").read_text(encoding="utf-8")
    assert "stage 2 'filter' removed the last 20" in report and "report.md" in str(err.value)
    assert not (tmp_path / "out" / "manifest.json").exists()  # not "finished": a fixed config can run again


def test_a_mixture_of_language_shares_only_spreads_each_language_over_its_types_by_tokens():
    tokens = {"en-news": 300, "en-others": 100, "zh-news": 50, "zh-books": 150, "code-code": 1000}
    m = mixture_weights(tokens, {"en": 0.6, "zh": 0.3, "code": 0.1}, None, max_epochs=4)
    assert m["achieved"]["lang"] == pytest.approx({"code": 0.1, "en": 0.6, "zh": 0.3}, abs=1e-4)
    assert m["weights"]["en-news"] / m["weights"]["en-others"] == pytest.approx(3.0, rel=1e-3)
    assert m["weights"]["zh-books"] / m["weights"]["zh-news"] == pytest.approx(3.0, rel=1e-3)
    assert m["target"]["type"] == m["available"]["type_of_natural_language"]
