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
