"""Token-ratio mixing: token counts per (language, type) and target shares → per-source sampling weights.

Target share of a source ``lang-type``: the language's share times the type's share (the published recipe gives
both marginals, docs/design.md, "The recipe"), code as one source; shares of sources that have no tokens are
spread over the rest (renormalised). The token budget is the largest one in which no source is repeated
more than ``max_epochs`` times (optionally capped by ``total_tokens``); then every source is drawn exactly
at its target share: ``epochs_s = share_s × budget / tokens_s`` (< 1 is down-sampling, > 1 repetition).
``mixture.json`` holds ``weights`` (the sampling probability of each source, what ``alaya pretrain``'s
``data.mixture`` reads), epochs, tokens, and achieved versus target shares by language and by type.
"""
from __future__ import annotations

from typing import Mapping

ALAYA_RECIPE_LANG = {"en": 0.567, "zh": 0.317, "code": 0.097, "other": 0.019}
ALAYA_RECIPE_TYPE = {"news": 0.392, "encyclopedia": 0.254, "books": 0.153, "forum": 0.078, "academic": 0.070, "others": 0.052}


def target_shares(lang: Mapping[str, float], types: Mapping[str, float] | None,
                  sources: Mapping[str, int]) -> dict[str, float]:
    """Target share of every source. ``types`` None: a language's share is spread over its types in
    proportion to their tokens (only the language shares are controlled, as for a small corpus whose types
    are unevenly present)."""
    raw = {}
    for name in sources:
        l, _, t = name.partition("-")
        if l == "code":
            raw[name] = lang.get("code", 0.0)
        elif types is None:
            raw[name] = lang.get(l, 0.0) * sources[name]
        else:
            raw[name] = lang.get(l, 0.0) * types.get(t, 0.0)
    # a language whose types are partly missing keeps its total share (spread over its present types)
    by_lang_present: dict[str, float] = {}
    for name, share in raw.items():
        by_lang_present[name.partition("-")[0]] = by_lang_present.get(name.partition("-")[0], 0.0) + share
    out = {}
    for name, share in raw.items():
        l = name.partition("-")[0]
        want = lang.get(l, 0.0)
        out[name] = share / by_lang_present[l] * want if by_lang_present[l] > 0 else 0.0
    total = sum(v for n, v in out.items() if sources[n] > 0)
    if total <= 0:
        raise ValueError(f"no source with tokens has a positive target share: {dict(sources)}")
    return {n: (v / total if sources[n] > 0 else 0.0) for n, v in out.items()}


def mixture_weights(tokens: Mapping[str, int], lang: Mapping[str, float] = ALAYA_RECIPE_LANG,
                    types: Mapping[str, float] | None = ALAYA_RECIPE_TYPE, max_epochs: float = 4.0,
                    total_tokens: float | None = None) -> dict:
    if max_epochs <= 0:
        raise ValueError(f"max_epochs must be > 0, got {max_epochs}")
    shares = target_shares(lang, types, tokens)
    live = {n: s for n, s in shares.items() if s > 0 and tokens[n] > 0}
    budget = min(max_epochs * tokens[n] / s for n, s in live.items())
    if total_tokens:
        budget = min(budget, float(total_tokens))
    epochs = {n: (live[n] * budget / tokens[n] if n in live else 0.0) for n in tokens}
    drawn = {n: epochs[n] * tokens[n] for n in tokens}
    total = sum(drawn.values())

    def marginal(values: Mapping[str, float], key) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, v in values.items():
            k = key(n)
            out[k] = out.get(k, 0.0) + v
        s = sum(out.values())
        return {k: round(v / s, 4) for k, v in sorted(out.items())} if s else {}

    lang_of = lambda n: n.partition("-")[0]  # noqa: E731
    type_of = lambda n: "code" if lang_of(n) == "code" else n.partition("-")[2]  # noqa: E731
    natural = {n: v for n, v in drawn.items() if lang_of(n) != "code"}
    return {
        "weights": {n: round(drawn[n] / total, 6) for n in sorted(tokens) if drawn[n] > 0},
        "epochs": {n: round(e, 4) for n, e in sorted(epochs.items())},
        "tokens_available": dict(sorted(tokens.items())),
        "token_budget": int(round(budget)),
        "max_epochs": max_epochs,
        "types_controlled": types is not None,
        "achieved": {"lang": marginal(drawn, lang_of), "type_of_natural_language": marginal(natural, type_of)},
        "available": {"lang": marginal(tokens, lang_of), "type_of_natural_language":
                      marginal({n: v for n, v in tokens.items() if lang_of(n) != "code"}, type_of)},
        "target": {"lang": {k: round(v / sum(lang.values()), 4) for k, v in sorted(lang.items())},
                   # types None: the types as they are available (only the language shares are controlled)
                   "type": ({k: round(v / sum(types.values()), 4) for k, v in sorted(types.items())}
                            if types is not None else marginal({n: v for n, v in tokens.items() if lang_of(n) != "code"}, type_of))},
    }
