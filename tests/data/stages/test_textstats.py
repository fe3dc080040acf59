from collections import Counter

import numpy as np
from hypothesis import example, given, settings, strategies as st

from alaya.data.stages.textstats import char_units, ngram_fractions, word_units

_text = st.text(st.one_of(st.characters(codec="utf-8"), st.sampled_from(list(" \t\n\u3000\xa0ab1_²Ⅷ你好.,"))),
                max_size=80)


@settings(max_examples=300, deadline=None)
@given(_text)
@example("two  words\u3000and\xa0more ²² Ⅷ x1 你好")
def test_word_units_are_str_split_words(text):
    ids, lens, n_alpha = word_units(text)
    words = text.split()
    assert lens.tolist() == [len(w) for w in words]
    assert n_alpha == sum(1 for w in words if any(c.isalpha() for c in w))
    # equal words, equal ids; different words, different ids
    assert len(set(ids.tolist())) == len(set(words))
    for i in range(len(words)):
        for j in range(i):
            assert (ids[i] == ids[j]) == (words[i] == words[j])
    chars, ones = char_units(text)
    assert chars.tolist() == [ord(c) for c in text if not c.isspace()] and (ones == 1).all()


def _reference(units: list[str], n: int) -> tuple[float, float]:
    """Gopher's measures stated plainly: tuples of units, a Counter, a covered-positions set."""
    total = sum(map(len, units))
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    if not grams or not total:
        return 0.0, 0.0
    counts = Counter(grams)
    best = max(counts.values())
    top = max(best * sum(map(len, g)) for g, c in counts.items() if c == best) / total if best > 1 else 0.0
    seen, covered = set(), set()
    for i, g in enumerate(grams):
        if g in seen:
            covered.update(range(i, i + n))
        seen.add(g)
    return top, sum(len(units[i]) for i in covered) / total


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "ccc", "the", "x", "长"]), max_size=60), st.integers(1, 6))
@example(["the", "cat", "the", "cat", "the", "cat"], 2)
def test_ngram_fractions_match_the_plain_definition(units, n):
    ids, lens, _ = word_units(" ".join(units))
    got = ngram_fractions(ids, lens, n)
    want = _reference(units, n)
    assert np.allclose(got, want), (got, want)


def test_word_ids_do_not_depend_on_the_process_string_hash_seed():
    import os
    import subprocess
    import sys

    code = ("from alaya.data.stages.textstats import word_units; "
            "print(word_units('the cat sat on the mat, the cat 你好')[0].tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1  # equal ids in every process: filter decisions are reproducible across workers
