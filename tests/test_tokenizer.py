import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alaya.data.documents import read_documents, read_texts
from alaya.prompt import format_prompt, format_turn, render_messages
from alaya.data.record import clean_text
from alaya.tokenizer import AlayaTokenizer, chars_per_token, train_tokenizer
from conftest import CORPUS, needs_corpus


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    tok = train_tokenizer(read_texts(["builtin:demo"]), vocab_size=3000, show_progress=False)
    d = tmp_path_factory.mktemp("tok")
    tok.save(d)
    return d


@pytest.fixture(scope="module")
def tok(tok_dir):
    return AlayaTokenizer.load(tok_dir)


def test_vocabulary_has_exactly_the_size_asked_and_the_special_ids(tok):
    assert tok.vocab_size == 3000
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.reserved_id) == (0, 1, 2, 3)
    assert tok.tok.id_to_token(3) == "<pad>"


def test_vocabulary_is_padded_when_the_corpus_runs_out_of_merges():
    small = train_tokenizer(["abc abd abe"] * 3, vocab_size=700, show_progress=False)
    assert small.vocab_size == 700
    assert small.decode(small.encode("abc abd")) == "abc abd"


def test_digits_are_split_one_by_one(tok):
    pieces = [tok.decode([i]) for i in tok.encode("2048")]
    assert pieces == ["2", "0", "4", "8"]


def test_eos_in_text_is_the_end_of_sequence_token(tok):
    ids = tok.encode("hello </s>")
    assert ids[-1] == 2


def test_transformers_autotokenizer_loads_the_folder_and_agrees(tok_dir, tok):
    transformers = pytest.importorskip("transformers")
    ht = transformers.AutoTokenizer.from_pretrained(tok_dir)
    text = "混合 text 和代码: def f(x):\n\treturn x**2  # 注释 🎉"
    assert ht(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert ht.decode(tok.encode(text)) == text
    assert (ht.eos_token_id, ht.pad_token_id, ht.unk_token_id, ht.bos_token_id) == (2, 2, 0, 1)
    assert len(ht) == 3000


def test_chat_template_renders_the_seeds_prompt_format_exactly(tok_dir):
    transformers = pytest.importorskip("transformers")
    ht = transformers.AutoTokenizer.from_pretrained(tok_dir)
    history = ["你好", "你好！我是Alaya。", "What is 2+2?", "4"]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": m} for i, m in enumerate(history)]
    messages.append({"role": "user", "content": "And 3+3?"})
    rendered = ht.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = ("### Instruction:\t\n你好\n\n### Output:\t\n你好！我是Alaya。 </s>"
                "### Instruction:\t\nWhat is 2+2?\n\n### Output:\t\n4 </s>"
                "### Instruction:\t\nAnd 3+3?\n\n")
    assert rendered == expected
    assert rendered == format_prompt("And 3+3?", history) == render_messages(messages)
    assert format_turn("a", "b") == "### Instruction:\t\na\n\n### Output:\t\nb </s>"


# Any string: Chinese incl. extension planes, emoji, tabs, code indentation, lone surrogates.
any_text = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=()),  # every category, lone surrogates (Cs) included
        st.sampled_from(list("中文汉字\t\n    𠀀𪚥🎉👩‍👩‍👧 ")),
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=any_text)
def test_round_trip_is_lossless_for_any_string(tok, text):
    assert tok.decode(tok.encode(text)) == clean_text(text)


def test_lone_surrogates_become_replacement_characters(tok):
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert tok.decode(tok.encode("x\udfffy")) == "x\ufffdy"
    assert clean_text("ok") == "ok"


@needs_corpus()
def test_chars_per_token_on_held_out_corpus_by_language(tmp_path):
    files = sorted(CORPUS.glob("*.jsonl"))
    docs = list(read_documents(files))
    train = [d.text for i, d in enumerate(docs) if i % 10]
    tok = train_tokenizer(train, vocab_size=16000, show_progress=False)
    stats = {}
    for lang in ("en", "zh", "code"):
        held = [d.text for i, d in enumerate(docs) if i % 10 == 0 and d.meta.get("lang") == lang]
        stats[lang] = chars_per_token(tok, held)
    print("chars per token (16k vocab, shared corpus):", json.dumps(stats))
    assert stats["en"] > 3.0  # English words compress to several characters a token
    assert stats["zh"] > 1.0  # Chinese: more than one character a token once merges learn words
    assert stats["code"] > 2.5
