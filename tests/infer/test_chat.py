import os
import select
import subprocess
import sys
import time

import pytest

from alaya.infer.chat import ChatSession, build_prompt, clean_reply
from alaya.infer.generate import GenerationConfig
from alaya.infer.loading import load_for_inference
from alaya.infer.text import ReplyFilter
from alaya.prompt import OUTPUT_FLAG, format_prompt


def test_reply_filter_removes_exactly_the_output_flag():
    f = ReplyFilter(OUTPUT_FLAG)
    assert [f.feed(p) for p in ["### Out", "put:\t", "\nOutput is", " here"]] == ["", "", "Output is", " here"]
    g = ReplyFilter(OUTPUT_FLAG)
    assert g.feed("##") == "" and g.feed(" not a flag") == "## not a flag"
    assert ReplyFilter(OUTPUT_FLAG).flush() == ""
    assert clean_reply("答案 </s>") == "答案" and clean_reply("ok \n") == "ok"



def test_a_streamed_reply_holds_whitespace_until_text_follows_and_never_ends_with_it():
    f = ReplyFilter(OUTPUT_FLAG)
    pieces = [f.feed(p) for p in [OUTPUT_FLAG + "I am", " ", "Alaya.", " ", "\n"]] + [f.flush()]
    assert pieces == ["I am", "", " Alaya.", "", "", ""]  # the space before </s> never reaches the reply
    assert "".join(pieces) == "I am Alaya."
    g = ReplyFilter(OUTPUT_FLAG)
    assert g.feed("a \n") == "a" and g.feed("b") == " \nb"  # whitespace inside a reply is kept


def test_history_is_the_published_format_and_is_trimmed_oldest_first(model_dir):
    _, tok = load_for_inference(str(model_dir))
    history = ["第一个问题", "第一个回答", "second question " * 3, "second answer " * 3]
    full = build_prompt(tok, "新问题", history, context=1000, max_new_tokens=10)
    assert full.text == format_prompt("新问题", history) and full.dropped_turns == 0
    budget_for_last_pair = len(tok.encode(format_prompt("新问题", history[2:])))
    trimmed = build_prompt(tok, "新问题", history, context=budget_for_last_pair + 10, max_new_tokens=10)
    assert trimmed.dropped_turns == 2 and trimmed.text == format_prompt("新问题", history[2:])
    tiny = build_prompt(tok, "a very long instruction " * 20, history, context=30, max_new_tokens=10)
    assert tiny.truncated and len(tiny.ids) == 20


def test_a_session_keeps_history_and_fits_the_context(model_dir):
    model_backend, tok = load_for_inference(str(model_dir))
    model = model_backend.model
    s = ChatSession(model, tok, GenerationConfig(max_new_tokens=2000, temperature=0))
    assert s.max_new_tokens == model.config.max_seq_len // 2
    for q in ["你好", "what can you do?", "再说一遍", "and again, please, with many more words than before"]:
        reply = "".join(s.ask(q))
        assert s.history[-2:] == [q, clean_reply(reply)]
    assert len(s.history) % 2 == 0 and len(s.history) <= 8


def _cmd(model_dir):
    return [sys.executable, "-m", "alaya.cli", "chat", str(model_dir), "--temperature", "0", "--max-new-tokens", "8"]


def test_chat_with_piped_input(model_dir):
    out = subprocess.run(_cmd(model_dir), input="你好\n/reset\n/system 你是Alaya\nhi\n", capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "alaya> " not in out.stdout and "you> " not in out.stdout  # piped: replies only, no prompts
    assert "(conversation cleared)" in out.stdout and "(system text set)" in out.stdout


def test_chat_on_the_graphs_path_compiles_before_the_first_prompt_and_answers_as_torch(model_dir):
    """`alaya chat --decode-path graphs` (what auto picks on a GPU when it is faster) says it compiles, and
    when it is ready, before it reads the first line; its greedy replies are the torch path's."""
    replies = {}
    for path in ("graphs", "torch"):
        out = subprocess.run(_cmd(model_dir) + ["--decode-path", path], input="你好\nWho are you?\n",
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        replies[path] = out.stdout
        warmed = "compiling the decoding step (once per process)..." in out.stderr and "ready after" in out.stderr
        assert warmed is (path == "graphs")
    assert replies["graphs"] == replies["torch"] and replies["torch"].strip()


def _read_until(fd, marker: bytes, timeout=60.0) -> bytes:
    buf, end = b"", time.time() + timeout
    while marker not in buf:
        if time.time() > end:
            raise AssertionError(f"no {marker!r} in {buf!r}")
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                buf += os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
    return buf


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_chat_in_a_pseudo_terminal(model_dir):
    master, slave = os.openpty()
    proc = subprocess.Popen(_cmd(model_dir), stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    try:
        banner = _read_until(master, b"you> ")
        assert b"/reset" in banner  # the help line of an interactive session
        os.write(master, "你好\n".encode())
        answer = _read_until(master, b"you> ")
        assert b"alaya> " in answer
        os.write(master, b"/reset\n")
        assert b"(conversation cleared)" in _read_until(master, b"you> ")
        os.write(master, b"/exit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        os.close(master)
