"""Exact and fuzzy dedup as pipeline stages: what is removed, duplicate_of, paragraph level."""
import json


from alaya.data.curate import run_single_stage
from conftest import stage_docs, stage_ids


def test_fuzzy_dedup_removes_near_and_exact_duplicates_and_records_duplicate_of(dup_input, tmp_path):
    inputs, src = dup_input
    m = run_single_stage({"stage": "fuzzy_dedup", "threshold": 0.8}, inputs, str(tmp_path / "d"), processes=1)
    assert m["in"] == m["kept"] + m["removed"] + m["quarantined"] and m["quarantined"] == 2
    removed = stage_docs(tmp_path / "d" / "removed")
    by_id = {r["id"]: r for r in removed}
    assert {f"near-{k}" for k in range(8)} <= set(by_id) and "exact-0" in by_id
    assert by_id["near-3"]["duplicate_of"] == src[3].id and by_id["exact-0"]["duplicate_of"] == src[-1].id
    assert all(r["stage"] == "fuzzy_dedup" and r["text"] for r in removed)  # nothing is lost
    assert set(stage_ids(tmp_path / "d" / "data")) == {d.id for d in src}
    q = stage_docs(tmp_path / "d" / "quarantine")
    assert len(q) == 2 and {"file", "line", "reason"} <= set(q[0])


def test_paragraph_level_dedup_cuts_repeated_paragraphs_across_documents(tmp_path):
    shared_para = "This paragraph is a boilerplate notice that many pages of the same site repeat word for word."
    rows = [{"id": "a", "text": f"First page intro that is long enough to count as a paragraph here.\n\n{shared_para}"},
            {"id": "b", "text": f"Second page has its own opening paragraph with enough characters.\n\n{shared_para}"},
            {"id": "c", "text": shared_para}]
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = run_single_stage({"stage": "fuzzy_dedup", "level": "paragraph", "min_paragraph_chars": 20}, [str(f)],
                         str(tmp_path / "o"), processes=1)
    kept = {d["id"]: d for d in stage_docs(tmp_path / "o" / "data")}
    assert kept["a"]["text"].endswith(shared_para)  # the first occurrence stays
    assert shared_para not in kept["b"]["text"] and kept["b"]["meta"]["paragraphs_removed"] == 1
    assert "c" not in kept and m["removed"] == 1 and m["paragraphs_removed"] == 2
    assert stage_docs(tmp_path / "o" / "removed")[0]["duplicate_of"] == "a"
