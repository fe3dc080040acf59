import pytest

from alaya.infer.batch import generate_texts
from alaya.infer.generate import BatchDecoder, GenerationConfig, generate
from alaya.infer.loading import load_for_inference
from alaya.infer.text import StreamedText, TextStream, cut_at_stop, drop_controls
from alaya.tokenizer import AlayaTokenizer


def test_cut_at_stop_takes_the_earliest_stop_string():
    assert cut_at_stop("abc### Instruction: x", ["###", "x"]) == ("abc", True)
    assert cut_at_stop("abc", ["zz", ""]) == ("abc", False)


def test_stream_never_shows_part_of_a_character_or_of_a_stop_string(model_dir):
    _, tok = load_for_inference(str(model_dir))
    text = "你好, world ###END tail"
    ids = tok.encode(text)
    stream = TextStream(tok, stop=["###END"])
    pieces = [stream.push(t) for t in ids]
    assert stream.stopped and "".join(pieces) + stream.flush() == "你好, world "
    assert all("\ufffd" not in p and "#" not in p for p in pieces)
    plain = TextStream(tok)
    assert "".join(plain.push(t) for t in ids) + plain.flush() == text


def test_stop_strings_cut_the_reply_and_stop_that_row_only(model_dir):
    model_backend, tok = load_for_inference(str(model_dir))
    model = model_backend.model
    prompts = [tok.encode("### Instruction:\t\n你好\n\n"), tok.encode("hello")]
    cfg = GenerationConfig(max_new_tokens=40, temperature=0)
    full = [tok.decode(ids) for ids in generate(model, prompts, cfg)]
    stop = full[0][5:8]  # a piece of the first reply's text
    cut = generate_texts(model, tok, prompts, cfg.with_(stop=[stop]))
    assert cut[0] == full[0][: full[0].find(stop)]
    assert cut[1] == (full[1][: full[1].find(stop)] if stop in full[1] else full[1])


def test_rows_with_their_own_settings_do_not_disturb_each_other(model_dir):
    model_backend, tok = load_for_inference(str(model_dir))
    model = model_backend.model
    prompts = [tok.encode("你好"), tok.encode("a longer prompt, in English"), tok.encode("x")]
    cfgs = [GenerationConfig(max_new_tokens=12, temperature=0),
            GenerationConfig(max_new_tokens=20, temperature=0.8, top_k=50, top_p=0.8, seed=3),
            GenerationConfig(max_new_tokens=5, temperature=1.2, repetition_penalty=1.3, seed=4)]
    decoder = BatchDecoder(model, prompts, cfgs)
    for _ in decoder:
        pass
    for p, c, got in zip(prompts, cfgs, decoder.tokens):
        assert generate(model, [p], c)[0] == got  # the same alone as inside the mixed batch
    # each row ends as it ends alone, for its reason: the limit exactly at max_new_tokens, or its </s> before
    alone = []
    for p, c in zip(prompts, cfgs):
        solo = BatchDecoder(model, [p], c)
        for _ in solo:
            pass
        alone.append(solo.finish_reason[0])
    assert decoder.finish_reason == alone
    assert [r == "length" for r in alone] == [len(t) == c.max_new_tokens for t, c in zip(decoder.tokens, cfgs)]


@pytest.mark.slow
def test_compiled_model_gives_the_same_greedy_output(model_dir):
    """--compile: torch.compile (inductor, dynamic shapes) decodes exactly as eager does."""
    eager_backend, tok = load_for_inference(str(model_dir))
    eager = eager_backend.model
    compiled_backend, _ = load_for_inference(str(model_dir), compile=True)
    compiled = compiled_backend.model
    prompts = [tok.encode("你好"), tok.encode("a longer prompt in English")]
    cfg = GenerationConfig(max_new_tokens=16, temperature=0)
    assert generate(compiled, prompts, cfg) == generate(eager, prompts, cfg)


def utf8_text(ids) -> str:
    """The reference decoding: the tokens' bytes through Python's incremental UTF-8 decoder, which holds back
    an incomplete last character (errors replaced as the tokenizer replaces them)."""
    import codecs

    from alaya.tokenizer import _BYTE_OF

    tok = TOK[0]
    data = b"".join(bytes(_BYTE_OF[c] for c in tok.tok.id_to_token(i)) for i in ids)
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)


TOK = []


def test_streamed_text_is_the_one_stream_of_chat_server_and_batch(model_dir):
    from alaya.infer.text import StreamedText
    from alaya.prompt import OUTPUT_FLAG

    model_backend, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    model = model_backend.model
    TOK[:] = [tok]
    prompts = [tok.encode(p) for p in ("你好", "The city opened", "### Instruction:\t\nhi\n\n")]
    gen = GenerationConfig(max_new_tokens=24, temperature=0)
    whole = [utf8_text(ids) for ids in generate(model, prompts, gen)]
    # no stop strings: the pieces of each row add up to the plain decoding, and texts() equals it
    pieces = ["", "", ""]
    for row, piece in StreamedText(BatchDecoder(model, prompts, gen), tok):
        pieces[row] += piece
    assert pieces == whole == StreamedText(BatchDecoder(model, prompts, gen), tok).texts()
    # a stop string cuts each row where it first appears, streamed or not
    stop = [w[3:6] for w in whole if len(w) > 8 and "\ufffd" not in w[:8]]  # from inside the rows' text
    assert stop
    cut = [cut_at_stop(w, stop)[0] for w in whole]
    assert generate_texts(model, tok, prompts, gen.with_(stop=stop)) == cut
    # strip_flag removes exactly a leading flag, which the raw text keeps
    flagged = StreamedText(BatchDecoder(model, prompts, gen), tok, strip_flag=True)
    got = ["", "", ""]
    for row, piece in flagged:
        got[row] += piece
    for row, w in enumerate(whole):
        assert flagged.raw_text(row) == w
        assert got[row] == (w[len(OUTPUT_FLAG):] if w.startswith(OUTPUT_FLAG) else w)


def test_streamed_text_stops_a_cancelled_row_and_drops_its_held_back_text(model_dir):
    from alaya.infer.text import StreamedText

    model_backend, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    model = model_backend.model
    prompts = [tok.encode("你好"), tok.encode("hello")]
    decoder = BatchDecoder(model, prompts, GenerationConfig(max_new_tokens=30, temperature=0))
    text = StreamedText(decoder, tok, cancelled=lambda row: row == 1 and len(decoder.tokens[1]) >= 3)
    rows = [row for row, _ in text]
    assert decoder.finish_reason[1] == "cancelled" and len(decoder.tokens[1]) == 3
    assert len(decoder.tokens[0]) == 30 and rows.count(0) >= 1


class ScriptedDecoder:
    """A decoder that emits fixed token ids, one per step, per row (what StreamedText reads of BatchDecoder)."""

    def __init__(self, rows, stop=()):
        self.rows = rows
        self.cfgs = [GenerationConfig(max_new_tokens=max(map(len, rows)), stop=list(stop)) for _ in rows]
        self.finish_reason = [None] * len(rows)
        self.tokens = [[] for _ in rows]

    def stop(self, row, reason="stop"):
        if self.finish_reason[row] is None:
            self.finish_reason[row] = reason

    def __iter__(self):
        for k in range(max(map(len, self.rows))):
            step = [(r, ids[k]) for r, ids in enumerate(self.rows) if k < len(ids) and self.finish_reason[r] is None]
            for r, t in step:
                self.tokens[r].append(t)
            yield step
        for r in range(len(self.rows)):
            self.stop(r, "length")


def byte_token(tok, byte: int) -> int:
    """The id of the byte-level token that decodes to exactly one byte."""
    from alaya.tokenizer import _BYTE_OF

    char = next(c for c, b in _BYTE_OF.items() if b == byte)
    return tok.tok.token_to_id(char)


def pieces_and_texts(tok, rows, strip_flag):
    d = ScriptedDecoder(rows)
    st = StreamedText(d, tok, strip_flag=strip_flag)
    out = ["" for _ in rows]
    for r, piece in st:
        out[r] += piece
    return out, [st.raw_text(r) for r in range(len(rows))]


def test_replies_hold_no_control_characters_and_never_end_inside_a_character(model_dir):
    tok = AlayaTokenizer.load(model_dir)
    hello = tok.encode("hello")
    ni = list("你".encode("utf-8"))  # three bytes, each its own token here
    ids_ni = [byte_token(tok, b) for b in ni]
    assert tok.decode(ids_ni) == "你" and tok.decode(ids_ni[:2]).endswith("\ufffd")
    ctrl = [byte_token(tok, b) for b in (0x18, 0x00, 0x7F, 0x0D)] + [byte_token(tok, 0x0A), byte_token(tok, 0x09)]
    rows = [hello + ctrl[:2] + hello + ctrl[2:], hello + ids_ni + ids_ni[:2]]
    streamed, final = pieces_and_texts(tok, rows, False)
    assert streamed == final == ["hellohello\n\t", "hello你"]
    # a chat reply (strip_flag) also never ends with whitespace: the raw text keeps it
    streamed, final = pieces_and_texts(tok, rows, True)
    assert streamed == ["hellohello", "hello你"] and final == ["hellohello\n\t", "hello你"]
    # the fast path of texts() (no stop strings, no flag) obeys the same rules
    assert StreamedText(ScriptedDecoder(rows), tok).texts() == ["hellohello\n\t", "hello你"]
    assert all(drop_controls(chr(c)) == "" for c in list(range(32)) + list(range(127, 160)) if chr(c) not in "\n\t")


def test_chat_replies_never_show_the_format_markers(model_dir):
    tok = AlayaTokenizer.load(model_dir)
    flag = tok.encode("### Output:\t\n")
    answer = tok.encode("I am Alaya.")
    again = tok.encode("\n### Output:\t\nmore")
    turn = tok.encode("\n\n### Instruction:\t\nnext")
    rows = [flag + answer + again, flag + answer + turn, answer + again, flag + answer]
    streamed, _ = pieces_and_texts(tok, rows, True)
    assert streamed == ["I am Alaya.", "I am Alaya.", "I am Alaya.", "I am Alaya."]
    # without strip_flag (completions: raw text) nothing is cut
    raw, _ = pieces_and_texts(tok, rows[:1], False)
    assert raw == [tok.decode(rows[0])]
