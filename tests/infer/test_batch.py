import json


from alaya.cli import main
from alaya.infer.batch import extract_response
from alaya.infer.generate import GenerationConfig, generate
from alaya.model.hf import load_model
from alaya.prompt import format_prompt
from alaya.tokenizer import AlayaTokenizer


def read_out(path):
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()]


def test_txt_prompts_to_json_lines_with_per_line_errors(model_dir, tmp_path):
    inp = tmp_path / "prompts.txt"
    inp.write_bytes("你好\n\nWhat is ALiBi?\n".encode() + b"bad \xff utf8\nlast one\n")
    out = tmp_path / "out.jsonl"
    assert main(["infer", str(model_dir), str(inp), str(out), "--temperature", "0", "--max-new-tokens", "12",
                 "--batch-size", "2"]) == 0
    recs = read_out(out)
    assert [r["line"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0]["prompt"] == "你好" and "response" in recs[0]
    assert recs[0]["response_org"].startswith(format_prompt("你好"))
    assert "empty prompt" in recs[1]["error"] and "prompts.txt:2" in recs[1]["error"]
    assert "invalid UTF-8" in recs[3]["error"]
    assert "你好" in out.read_text(encoding="utf-8")  # not \\u-escaped
    # greedy answers equal direct generation
    model, tok = load_model(model_dir), AlayaTokenizer.load(model_dir)
    ids = tok.encode(format_prompt("What is ALiBi?"))
    new = generate(model, [ids], GenerationConfig(max_new_tokens=12, temperature=0))[0]
    assert recs[2]["response_org"] == format_prompt("What is ALiBi?") + tok.decode(new)


def test_rerun_resumes_and_a_torn_last_line_is_redone(model_dir, tmp_path):
    inp = tmp_path / "p.jsonl"
    inp.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(5)) + "{oops\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    args = ["infer", str(model_dir), str(inp), str(out), "--temperature", "0", "--max-new-tokens", "4"]
    assert main(args) == 0
    full = out.read_text(encoding="utf-8")
    lines = full.splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:10], encoding="utf-8")  # killed mid-write of line 3
    assert main(args) == 0
    assert out.read_text(encoding="utf-8") == full
    assert main(args) == 0  # nothing left to do
    assert out.read_text(encoding="utf-8") == full
    assert "invalid JSON" in read_out(out)[5]["error"]


def test_long_prompts_are_left_truncated_by_tokens_or_refused(model_dir, tmp_path, capsys):
    inp = tmp_path / "long.txt"
    inp.write_text("word " * 400 + "END\n", encoding="utf-8")
    out = tmp_path / "o.jsonl"
    main(["infer", str(model_dir), str(inp), str(out), "--temperature", "0", "--max-new-tokens", "8"])
    rec = read_out(out)[0]
    assert "left-truncated" in capsys.readouterr().err
    assert not rec["response_org"].startswith("### Instruction:")  # the start was cut, by tokens
    assert "END" in rec["response_org"] and len(rec["response_org"]) < len(inp.read_text())
    out2 = tmp_path / "o2.jsonl"
    main(["infer", str(model_dir), str(inp), str(out2), "--max-new-tokens", "8", "--refuse-long"])
    assert "at most 120 fit" in read_out(out2)[0]["error"]


def test_response_extraction_follows_the_published_script():
    assert extract_response("### Instruction:\t\nhi\n\n### Output:\t\nhello\n\n") == "hello"
    assert extract_response("no flag at all") == ""
