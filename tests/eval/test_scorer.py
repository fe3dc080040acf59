"""The batched scorer against a plain statement of the definition: one sequence at a time, no cache, no
sharing, log-softmax of the next-token logits summed over the continuation."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from alaya.eval.scorer import Scorer, bits_per_byte, rolling_windows
from alaya.infer.loading import load_for_inference


def reference(model, ctx, cont, max_len):
    full = (ctx + cont)[-(max_len + 1):]
    inp = torch.tensor([full[:-1]])
    with torch.no_grad():
        logits, _ = model(inp)
    logp = F.log_softmax(logits[0].float(), -1)[-len(cont):]
    target = torch.tensor(cont)
    return float(logp.gather(1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())


@pytest.fixture(scope="module")
def loaded(model_dir):
    backend, tok = load_for_inference(str(model_dir), device="cpu", dtype="float32")
    return backend.model, tok


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_scores_equal_the_plain_definition(loaded, batch_size):
    model, tok = loaded
    rng = random.Random(batch_size)
    V, L = model.config.vocab_size, model.config.max_seq_len
    requests = []
    for _ in range(6):  # groups sharing a context, with one-token and longer continuations
        ctx = [rng.randrange(4, V) for _ in range(rng.randrange(1, 40))]
        for _ in range(rng.randrange(1, 5)):
            requests.append((ctx, [rng.randrange(4, V) for _ in range(rng.choice([1, 1, 2, 5, 9]))]))
    long_ctx = [rng.randrange(4, V) for _ in range(L + 30)]  # left-truncated to the context, as lm-eval does
    requests += [(long_ctx, [5]), (long_ctx, [7, 8, 9])]
    got = Scorer(model, tok, batch_size=batch_size, progress=False).loglikelihood_tokens(requests)
    for (ctx, cont), g in zip(requests, got):
        lp, greedy = reference(model, ctx, cont, L)
        assert g.logprob == pytest.approx(lp, abs=1e-4)
        assert g.is_greedy == greedy
        assert g.tokens == len(cont)


def test_greedy_flag_is_true_for_the_models_own_argmax(loaded):
    model, tok = loaded
    ctx = tok.encode("The quick brown fox")
    with torch.no_grad():
        nxt = int(model(torch.tensor([ctx]))[0][0, -1].argmax())
        nxt2 = int(model(torch.tensor([ctx + [nxt]]))[0][0, -1].argmax())
    s = Scorer(model, tok, progress=False).loglikelihood_tokens([(ctx, [nxt, nxt2]), (ctx, [nxt, (nxt2 + 1) % 500 + 4])])
    assert s[0].is_greedy and not s[1].is_greedy


def test_encode_pair_moves_trailing_spaces_and_splits_the_whole_encoding(loaded):
    _, tok = loaded
    sc = Scorer(loaded[0], tok, progress=False)
    ctx, cont = sc.encode_pair("Question: 2+2?\nAnswer: ", "4")
    assert ctx == tok.encode("Question: 2+2?\nAnswer:")
    assert ctx + cont == tok.encode("Question: 2+2?\nAnswer: 4")
    assert sc.encode_pair("", "hello") == ([tok.bos_id], tok.encode("hello"))


def test_rolling_windows_predict_every_token_once_and_match_lm_eval():
    tokens = list(range(10, 10 + 23))
    wins = rolling_windows(tokens, 1, 8)
    predicted = [t for _, cont in wins for t in cont]
    assert predicted == tokens
    for ctx, cont in wins:
        assert len(ctx) + len(cont) - 1 <= 8  # each input fits the window
    lm_utils = pytest.importorskip("lm_eval.utils")
    ref = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(tokens, 1, 8, 1)]
    assert [(list(a), list(b)) for a, b in ref] == wins


def test_rolling_sum_equals_one_forward_when_the_text_fits(loaded):
    model, tok = loaded
    text = "Alaya reads English and 中文 text."
    (ll, n), = Scorer(model, tok, progress=False).rolling([text])
    ids = tok.encode(text)
    lp, _ = reference(model, [tok.bos_id], ids, model.config.max_seq_len)
    assert n == len(ids) and ll == pytest.approx(lp, abs=1e-4)
    assert bits_per_byte(ll, len(text.encode())) == pytest.approx(-lp / (len(text.encode()) * 0.6931471805599453))


def test_long_text_is_scored_in_windows(loaded):
    model, tok = loaded
    text = " ".join(f"word{i}" for i in range(400))
    ids = tok.encode(text)
    assert len(ids) > 2 * model.config.max_seq_len
    (ll, n), = Scorer(model, tok, batch_size=2, progress=False).rolling([text])
    ref = sum(reference(model, c, x, model.config.max_seq_len)[0]
              for c, x in rolling_windows(ids, tok.bos_id, model.config.max_seq_len))
    assert n == len(ids) and ll == pytest.approx(ref, abs=1e-3)


def test_bad_requests_are_refused(loaded):
    model, tok = loaded
    sc = Scorer(model, tok, progress=False)
    with pytest.raises(ValueError, match="no tokens"):
        sc.loglikelihood_tokens([([5], [])])
    with pytest.raises(ValueError, match="batch size"):
        Scorer(model, tok, batch_size=0)
