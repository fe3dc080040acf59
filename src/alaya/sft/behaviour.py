"""What a chat model does on held-out prompts, greedy: the identity rate (the answer names the configured
name or developer), the refusal rate on red-team prompts and the over-refusal rate on benign look-alikes
(the held-out splits that `alaya sft identity` / `alaya sft refusals` write). Uses the project's one
generation loop."""
from __future__ import annotations

from alaya.sft.refusals import is_refusal


def greedy_answers(model, tok, prompts: list[str], max_new_tokens: int = 48, batch_size: int = 1) -> list[str]:
    """The reply to each prompt as a chat user sees it (no output flag, cut before a new turn); prompts are
    decoded ``batch_size`` at a time (left-padded batches give each row what it gets alone)."""
    from alaya.infer.chat import build_prompt, clean_reply
    from alaya.prompt import TURN_STOP
    from alaya.infer.generate import GenerationConfig, generate
    from alaya.prompt import OUTPUT_FLAG

    gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    out = []
    for start in range(0, len(prompts), batch_size):
        ids = [build_prompt(tok, p, [], model.config.max_seq_len, max_new_tokens).ids
               for p in prompts[start: start + batch_size]]
        for new in generate(model, ids, gen):
            text = tok.decode(new, skip_special_tokens=True)
            text = text[len(OUTPUT_FLAG):] if text.startswith(OUTPUT_FLAG) else text
            out.append(clean_reply(text.split(TURN_STOP)[0]))
    return out


def identity_rate(model, tok, heldout: list[dict], max_new_tokens: int = 48) -> float:
    """Share of ``{prompt, expect}`` rows whose answer contains one of the expected words."""
    answers = greedy_answers(model, tok, [h["prompt"] for h in heldout], max_new_tokens)
    return sum(any(w in a for w in h["expect"]) for h, a in zip(heldout, answers)) / max(len(heldout), 1)


def refusal_rate(model, tok, prompts: list[str], max_new_tokens: int = 48) -> float:
    return sum(map(is_refusal, greedy_answers(model, tok, prompts, max_new_tokens))) / max(len(prompts), 1)
