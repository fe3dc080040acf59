"""Log-probabilities of a token sequence under the model, in OpenAI's completions ``logprobs`` shape
(``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``), for ``alaya serve``'s ``echo`` +
``logprobs`` (what lm-eval's ``local-completions`` backend asks for to score multiple choice)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.inference_mode()
def sequence_logprobs(model, ids: list[int], top: int = 1) -> tuple[list[float | None], list[dict[int, float] | None]]:
    """For each position: log P(ids[i] | ids[:i]) (``None`` for the first token, which has no context) and
    the ``top`` most likely tokens there with their log-probabilities."""
    if len(ids) > model.config.max_seq_len:
        raise ValueError(f"{len(ids)} tokens exceed the model's context ({model.config.max_seq_len})")
    logits, _ = model(torch.tensor([ids], device=model.device))
    logp = F.log_softmax(logits[0, :-1].float(), dim=-1)  # row i predicts ids[i + 1]
    target = torch.tensor(ids[1:], device=logp.device)
    chosen = logp.gather(1, target[:, None])[:, 0].tolist() if len(ids) > 1 else []
    tops: list[dict[int, float] | None] = [None]
    if len(ids) > 1:
        values, index = logp.topk(max(top, 1), dim=-1)
        tops += [dict(zip(i, v)) for i, v in zip(index.tolist(), values.tolist())]
    return [None, *chosen], tops


def openai_logprobs(tok, ids: list[int], token_logprobs, tops, start: int = 0) -> dict:
    """The ``logprobs`` object for ``ids[start:]``; token strings are each token decoded alone."""
    pieces = [tok.decode([t]) for t in ids]
    offsets, pos = [], 0
    for p in pieces:
        offsets.append(pos)
        pos += len(p)
    return {"tokens": pieces[start:], "token_logprobs": token_logprobs[start:],
            "top_logprobs": [None if t is None else {tok.decode([k]): v for k, v in t.items()} for t in tops[start:]],
            "text_offset": offsets[start:]}
