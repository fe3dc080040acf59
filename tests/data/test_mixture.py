"""Token-ratio mixing: target shares, the epoch cap, language-only shares."""
import pytest

from alaya.data.mixture import mixture_weights


def test_mixture_weights_hit_target_shares_within_the_epoch_cap():
    tokens = {"en-news": 1000, "en-books": 100, "zh-news": 500, "code-code": 50}
    m = mixture_weights(tokens, lang={"en": 0.6, "zh": 0.3, "code": 0.1}, types={"news": 0.8, "books": 0.2}, max_epochs=2)
    # targets: en-news .48, en-books .12, zh-news .30 (zh has news only), code .10
    assert m["weights"] == pytest.approx({"en-news": 0.48, "en-books": 0.12, "zh-news": 0.30, "code-code": 0.10}, abs=1e-6)
    # budget = min over sources of cap × tokens / share: code (2 × 50 / 0.1 = 1000) is the scarcest
    assert m["token_budget"] == 1000 and m["epochs"]["code-code"] == pytest.approx(2.0)
    assert m["epochs"]["en-news"] == pytest.approx(0.48 * 1000 / 1000)
    assert m["achieved"]["lang"] == {"code": 0.1, "en": 0.6, "zh": 0.3}
    with pytest.raises(ValueError, match="max_epochs"):
        mixture_weights(tokens, max_epochs=0)


def test_a_mixture_of_language_shares_only_spreads_each_language_over_its_types_by_tokens():
    tokens = {"en-news": 300, "en-others": 100, "zh-news": 50, "zh-books": 150, "code-code": 1000}
    m = mixture_weights(tokens, {"en": 0.6, "zh": 0.3, "code": 0.1}, None, max_epochs=4)
    assert m["achieved"]["lang"] == pytest.approx({"code": 0.1, "en": 0.6, "zh": 0.3}, abs=1e-4)
    assert m["weights"]["en-news"] / m["weights"]["en-others"] == pytest.approx(3.0, rel=1e-3)
    assert m["weights"]["zh-books"] / m["weights"]["zh-news"] == pytest.approx(3.0, rel=1e-3)
    assert m["target"]["type"] == m["available"]["type_of_natural_language"]


def test_the_report_says_when_types_have_no_target(tmp_path):
    from alaya.data.report import write_report

    tokens = {"en-news": 300, "en-others": 100, "zh-news": 50, "zh-books": 150, "code-code": 1000}
    stats = {"tokens": tokens, "quality_hist": [0] * 10, "length_hist": [1] * 26, "token_count": "estimated",
             "length_edges": [0] + [int(10 ** (k / 4)) for k in range(4, 29)], "documents": dict.fromkeys(tokens, 1)}
    summary = {"engine": "local", "documents_in": 5, "documents_out": 5, "mb_in": 0.1, "seconds": 1, "mb_per_s": 0.1,
               "stages": []}
    for types, says in ((None, True), ({"news": 0.5, "books": 0.3, "others": 0.2}, False)):
        m = mixture_weights(tokens, {"en": 0.6, "zh": 0.3, "code": 0.1}, types, max_epochs=4)
        assert m["types_controlled"] is (types is not None)
        text = write_report(tmp_path, summary, stats, m).read_text()
        assert ("The types have no target in this mixture" in text) is says
        assert ("| news | 58.3 % | — |" in text) is says  # 350 of 600 natural-language tokens
