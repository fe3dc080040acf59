import pytest

from alaya.infer.batch import generate_texts
from alaya.infer.generate import BatchDecoder, GenerationConfig, generate
from alaya.infer.loading import load_for_inference
from alaya.infer.text import TextStream, cut_at_stop


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
    model, tok = load_for_inference(str(model_dir))
    prompts = [tok.encode("### Instruction:\t\n你好\n\n"), tok.encode("hello")]
    cfg = GenerationConfig(max_new_tokens=40, temperature=0)
    full = [tok.decode(ids) for ids in generate(model, prompts, cfg)]
    stop = full[0][5:8]  # a piece of the first reply's text
    cut = generate_texts(model, tok, prompts, cfg.with_(stop=[stop]))
    assert cut[0] == full[0][: full[0].find(stop)]
    assert cut[1] == (full[1][: full[1].find(stop)] if stop in full[1] else full[1])


def test_rows_with_their_own_settings_do_not_disturb_each_other(model_dir):
    model, tok = load_for_inference(str(model_dir))
    prompts = [tok.encode("你好"), tok.encode("a longer prompt, in English"), tok.encode("x")]
    cfgs = [GenerationConfig(max_new_tokens=12, temperature=0),
            GenerationConfig(max_new_tokens=20, temperature=0.8, top_k=50, top_p=0.8, seed=3),
            GenerationConfig(max_new_tokens=5, temperature=1.2, repetition_penalty=1.3, seed=4)]
    decoder = BatchDecoder(model, prompts, cfgs)
    for _ in decoder:
        pass
    for p, c, got in zip(prompts, cfgs, decoder.tokens):
        assert generate(model, [p], c)[0] == got  # the same alone as inside the mixed batch
    assert len(decoder.tokens[2]) <= 5
    assert decoder.finish_reason[2] in ("length", "stop")
    assert decoder.finish_reason[2] == "stop" or len(decoder.tokens[2]) == 5


@pytest.mark.slow
def test_compiled_model_gives_the_same_greedy_output(model_dir):
    """--compile: torch.compile (inductor, dynamic shapes) decodes exactly as eager does."""
    eager, tok = load_for_inference(str(model_dir))
    compiled, _ = load_for_inference(str(model_dir), compile=True)
    prompts = [tok.encode("你好"), tok.encode("a longer prompt in English")]
    cfg = GenerationConfig(max_new_tokens=16, temperature=0)
    assert generate(compiled, prompts, cfg) == generate(eager, prompts, cfg)


def test_streamed_text_is_the_one_stream_of_chat_server_and_batch(model_dir):
    from alaya.infer.text import StreamedText
    from alaya.prompt import OUTPUT_FLAG

    model, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    prompts = [tok.encode(p) for p in ("你好", "The city opened", "### Instruction:\t\nhi\n\n")]
    gen = GenerationConfig(max_new_tokens=24, temperature=0)
    whole = [tok.decode(ids) for ids in generate(model, prompts, gen)]
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

    model, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    prompts = [tok.encode("你好"), tok.encode("hello")]
    decoder = BatchDecoder(model, prompts, GenerationConfig(max_new_tokens=30, temperature=0))
    text = StreamedText(decoder, tok, cancelled=lambda row: row == 1 and len(decoder.tokens[1]) >= 3)
    rows = [row for row, _ in text]
    assert decoder.finish_reason[1] == "cancelled" and len(decoder.tokens[1]) == 3
    assert len(decoder.tokens[0]) == 30 and rows.count(0) >= 1
