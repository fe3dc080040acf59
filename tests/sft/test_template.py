"""The loss mask, token by token: labels cover exactly every assistant output block (flag and </s> included)."""
import pytest

from alaya.prompt import INSTRUCTION_FORMAT, OUTPUT_FORMAT, format_prompt
from alaya.sft.formats import example_from_record, read_examples
from alaya.sft.template import IGNORE, TooLong, encode_example
from alaya.data.documents import Quarantine
from conftest import SHARED_DATA


def labelled_spans(enc):
    """The labelled tokens as runs of consecutive positions."""
    spans, cur = [], []
    for tok_id, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE:
            assert lab == tok_id  # a label is the token itself; the shift happens in the loss
            cur.append(tok_id)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    return spans


EXAMPLES = [
    {"instruction": "介绍一下长城", "output": "长城是中国古代的军事防御工程。🏯"},
    {"messages": [
        {"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi 👋"}, {"role": "assistant", "content": "Hello! 😀 How can I help?"},
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
    {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！有什么可以帮你？"},
                       {"from": "human", "value": "Translate 猫"}, {"from": "gpt", "value": "cat"}]},
]


@pytest.mark.parametrize("record", EXAMPLES)
def test_labels_decode_to_exactly_the_output_blocks(sft_tok, record):
    ex = example_from_record(record)
    enc = encode_example(sft_tok, ex)
    spans = labelled_spans(enc)
    assert [sft_tok.decode(s) for s in spans] == [OUTPUT_FORMAT.format(output=o) for _, o in ex.pairs]
    assert all(s[-1] == sft_tok.eos_id for s in spans)  # the model learns to stop
    # the unlabelled tokens are the system text and the instructions, nothing else
    masked = [t for t, lab in zip(enc.input_ids, enc.labels) if lab == IGNORE]
    want = (ex.system + "\n\n" if ex.system else "") + "".join(INSTRUCTION_FORMAT.format(instruction=i) for i, _ in ex.pairs)
    assert sft_tok.decode(masked) == want
    assert sft_tok.decode(enc.input_ids) == want[: len(ex.system or "") + 2 * bool(ex.system)] + "".join(
        INSTRUCTION_FORMAT.format(instruction=i) + OUTPUT_FORMAT.format(output=o) for i, o in ex.pairs)


def test_the_prompt_ids_are_those_generation_sees(sft_tok):
    ex = example_from_record(EXAMPLES[0])
    enc = encode_example(sft_tok, ex)
    prompt = sft_tok.encode(format_prompt(ex.pairs[0][0]))
    assert enc.input_ids[: len(prompt)] == prompt and enc.labels[len(prompt)] != IGNORE


def test_last_turn_only_labels_just_the_final_answer(sft_tok):
    ex = example_from_record(EXAMPLES[1])
    spans = labelled_spans(encode_example(sft_tok, ex, last_turn_only=True))
    assert [sft_tok.decode(s) for s in spans] == [OUTPUT_FORMAT.format(output="4")]


def test_length_policy_at_and_over_the_limit(sft_tok):
    ex = example_from_record(EXAMPLES[1])
    n = len(encode_example(sft_tok, ex))
    assert len(encode_example(sft_tok, ex, max_tokens=n)) == n  # a turn ending exactly at the limit is kept whole
    with pytest.raises(TooLong, match="at most"):
        encode_example(sft_tok, ex, max_tokens=n - 1, policy="drop")
    cut = encode_example(sft_tok, ex, max_tokens=n - 1, policy="truncate_turns")
    assert cut.dropped_turns == 1
    assert [sft_tok.decode(s) for s in labelled_spans(cut)] == [OUTPUT_FORMAT.format(output="4")]
    assert sft_tok.decode(cut.input_ids).startswith("You are helpful.\n\n### Instruction:\t\n2+2?")
    with pytest.raises(TooLong):
        encode_example(sft_tok, ex, max_tokens=5, policy="truncate_turns")  # never cut inside a turn


@pytest.mark.skipif(not (SHARED_DATA / "lf_alpaca_zh_demo").is_dir(), reason=f"shared SFT sets not present at {SHARED_DATA}")
def test_mask_on_real_chinese_and_english_examples(sft_tok):
    for name in ("lf_alpaca_zh_demo/alpaca_zh_demo.json", "lf_alpaca_en_demo/alpaca_en_demo.json"):
        for k, ex in enumerate(read_examples([str(SHARED_DATA / name)], Quarantine())):
            if k == 40:
                break
            enc = encode_example(sft_tok, ex)
            assert [sft_tok.decode(s) for s in labelled_spans(enc)] == [OUTPUT_FORMAT.format(output=o) for _, o in ex.pairs]
