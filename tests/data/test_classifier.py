"""The character n-gram classifiers: the quality (fit/unfit) and document-type models."""
import json

import pytest

from alaya.data.documents import Document
from alaya.data.stages import build_stage
from alaya.data.stages.doctype import train_type
from alaya.data.stages.quality import QualityStage, train_quality
from conftest import CORPUS, SHARED_DATA

needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"shared corpus not present at {CORPUS}")


@needs_corpus
def test_quality_classifier_trains_reports_and_scores(tmp_path):
    c4 = SHARED_DATA / "lf_c4_demo"
    if not c4.is_dir():
        pytest.skip(f"{c4} not present")
    pos = [str(CORPUS / f) for f in ("en-encyclopedia.jsonl", "en-academic.jsonl", "zh-encyclopedia.jsonl")]
    metrics = train_quality(pos, [str(c4), str(CORPUS / "en-forum.jsonl")], str(tmp_path / "q"), max_docs=600)
    assert metrics["roc_auc"] > 0.9 and metrics["precision"] > 0.85 and metrics["recall"] > 0.85
    st = QualityStage(str(tmp_path / "q"), mode="threshold", threshold=0.5)
    enc = json.loads(open(CORPUS / "en-encyclopedia.jsonl").readline())
    out, reason = st.apply(Document(enc["id"], enc["text"], {"lang": "en"}))
    assert reason is None and out.meta["quality"] > 0.5
    sel = QualityStage(str(tmp_path / "q"), mode="selective", seed=3)
    web = [json.loads(l) for l in open(c4 / "c4_demo.jsonl")][:50]
    first = [sel.apply(Document(f"w{i}", d["text"], {}))[1] for i, d in enumerate(web)]
    assert first == [sel.apply(Document(f"w{i}", d["text"], {}))[1] for i, d in enumerate(web)]  # seeded
    assert first.count(None) < len(first)


@needs_corpus
def test_type_classifier_accuracy_on_held_out_documents(tmp_path):
    metrics = train_type([str(CORPUS)], str(tmp_path / "t"), max_per_type=250)
    assert metrics["accuracy"] > 0.8 and set(metrics["accuracy_by_type"]) == {
        "news", "encyclopedia", "books", "forum", "academic", "others"}
    st = build_stage({"stage": "type", "model": str(tmp_path / "t")})
    d = json.loads(open(CORPUS / "zh-forum.jsonl", encoding="utf-8").readlines()[-1])
    out, _ = st.apply(Document(d["id"], d["text"], {"lang": "zh"}))
    assert out.meta["type_source"] == "classifier" and out.meta["type"] in metrics["accuracy_by_type"]
    assert st.apply(Document("x", "text", {"type": "Forum-Chat"}))[0].meta["type"] == "forum"  # metadata first
