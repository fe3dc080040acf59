"""The one batched log-likelihood scorer of evaluation: ``(context, continuation)`` pairs to
``(log P(continuation | context), is_greedy)``, and rolling windows over whole texts for perplexity.

Requests are tokenized as lm-evaluation-harness tokenizes them (trailing spaces of the context move to the
continuation; the pair is encoded whole and split at the context's length; an empty context becomes the
``<s>`` token) and truncated the same way (the last ``max_length + 1`` tokens), so per-item scores agree
with lm-eval's ``hf`` backend on the same folder.

What is faster here: requests whose model input shares everything up to the token that predicts the first
continuation token form one group, and the group's shared part runs through the model once. For letter
answers (``A``/``B``/``C``/``D``) that is the whole input, so a four-way question costs one forward pass; for
full-text choices (ARC) the choices' remaining tokens run as one batch over the shared part's KV cache.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from alaya.model.mpt import KVCache


@dataclass
class Scored:
    logprob: float
    is_greedy: bool
    tokens: int  # continuation tokens scored
    truncated: int = 0  # context tokens cut from the left to fit the model's context


def rolling_windows(tokens: list[int], prefix_token: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """Disjoint ``(context, continuation)`` windows that together predict every token once: the first
    window starts from ``prefix_token``; later ones predict up to ``max_len`` new tokens each, with the
    tokens before them as context so each input fills the model's window (lm-eval's
    ``loglikelihood_rolling`` with context_len 1)."""
    out: list[tuple[list[int], list[int]]] = []
    if not tokens:
        return out
    first = min(max_len, len(tokens))
    out.append(([prefix_token], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        inp = tokens[max(end - max_len - 1, 0): end - 1]
        out.append((inp[: len(inp) - (n - 1)], tokens[end - n: end]))
        done = end
    return out


class Scorer:
    """``model`` is an :class:`~alaya.model.mpt.AlayaForCausalLM` in eval mode; ``tok`` its tokenizer."""

    def __init__(self, model, tok, batch_size: int = 16, max_length: int | None = None, progress: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.model, self.tok = model, tok
        self.batch_size = batch_size
        self.max_length = max_length or model.config.max_seq_len
        self.progress = progress
        self.prefix_token = tok.bos_id

    # ---------------------------------------------------------------------------------- tokenizing
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            cont = self.tok.encode(continuation)
            return ([self.prefix_token], cont) if cont and cont[0] != self.prefix_token else (cont[:1], cont[1:])
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        whole = self.tok.encode(context + continuation)
        ctx = self.tok.encode(context)
        return ctx, whole[len(ctx):]

    # ---------------------------------------------------------------------------------- scoring
    def loglikelihood(self, pairs: Sequence[tuple[str, str]], desc: str = "scoring") -> list[Scored]:
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in pairs], desc)

    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]], desc: str = "scoring") -> list[Scored]:
        """Score token requests; the result is in the order of ``requests``."""
        groups: dict[tuple[int, ...], list[tuple[int, list[int], list[int]]]] = {}
        cuts = [max(0, len(ctx) + len(cont) - (self.max_length + 1)) for ctx, cont in requests]
        for i, (ctx, cont) in enumerate(requests):
            if not cont:
                raise ValueError(f"request {i}: the continuation has no tokens")
            if len(cont) > self.max_length:
                raise ValueError(f"request {i}: the continuation has {len(cont)} tokens, more than the model's "
                                 f"context ({self.max_length})")
            inp = (list(ctx) + list(cont))[-(self.max_length + 1):][:-1]
            split = len(inp) - len(cont) + 1  # inp[:split] ends with the token that predicts cont[0]
            groups.setdefault(tuple(inp[:split]), []).append((i, inp[split:], list(cont)))
        results: list[Scored | None] = [None] * len(requests)
        order = sorted(groups, key=len, reverse=True)  # similar lengths together: little padding
        bar = tqdm(total=len(requests), desc=desc, unit="req", disable=not self.progress, leave=False)
        for start in range(0, len(order), self.batch_size):
            batch = order[start: start + self.batch_size]
            self._score_groups(batch, [groups[p] for p in batch], results)
            bar.update(sum(len(groups[p]) for p in batch))
        bar.close()
        for r, cut in zip(results, cuts):
            r.truncated = cut
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_groups(self, prefixes, members, results) -> None:
        model, device = self.model, self.model.device
        G, Lp = len(prefixes), max(len(p) for p in prefixes)
        max_suffix = max(len(s) for m in members for _, s, _ in m)
        pad = self.tok.pad_id
        ids = torch.full((G, Lp), pad, dtype=torch.long)
        mask = torch.zeros((G, Lp), dtype=torch.bool)
        for g, p in enumerate(prefixes):
            ids[g, Lp - len(p):] = torch.tensor(p)
            mask[g, Lp - len(p):] = True
        cache = model.new_cache(G, Lp + max_suffix) if max_suffix else None
        logits, _ = model(ids.to(device), attention_mask=mask.to(device), cache=cache, last_token_only=True)
        first = F.log_softmax(logits[:, -1].float(), dim=-1)  # [G, V]: predicts every member's cont[0]
        first_best = first.argmax(-1)
        rows = [(g, i, s, c) for g, m in enumerate(members) for i, s, c in m]
        for g, i, s, c in rows:
            if not s:
                results[i] = Scored(float(first[g, c[0]]), bool(first_best[g] == c[0]), 1)
        longer = [r for r in rows if r[2]]
        for start in range(0, len(longer), self.batch_size):
            self._score_suffixes(longer[start: start + self.batch_size], cache, mask, first, first_best, results)

    def _score_suffixes(self, rows, cache: KVCache, prefix_mask, first, first_best, results) -> None:
        """The continuations' remaining tokens as one batch over the copied KV cache of their prefixes."""
        model, device = self.model, self.model.device
        R, S, Lp = len(rows), max(len(r[2]) for r in rows), prefix_mask.shape[1]
        index = torch.tensor([r[0] for r in rows], device=cache.keys.device)
        sub = KVCache(cache.keys.index_select(1, index)[:, :, :, : Lp + S].clone(),
                      cache.values.index_select(1, index)[:, :, :, : Lp + S].clone(), length=Lp)
        ids = torch.full((R, S), self.tok.pad_id, dtype=torch.long)
        mask = torch.zeros((R, Lp + S), dtype=torch.bool)
        for k, (g, _, s, _) in enumerate(rows):
            ids[k, : len(s)] = torch.tensor(s)
            mask[k, :Lp] = prefix_mask[g]
            mask[k, Lp: Lp + len(s)] = True  # right padding after the real tokens: nothing real sees it
        logits, _ = model(ids.to(device), attention_mask=mask.to(device), cache=sub)
        logp = F.log_softmax(logits.float(), dim=-1)  # [R, S, V]
        best = logp.argmax(-1)
        for k, (g, i, s, c) in enumerate(rows):
            rest = torch.tensor(c[1:], device=logp.device)
            n = len(s)
            lp = float(first[g, c[0]]) + float(logp[k, :n].gather(1, rest[:, None]).sum())
            greedy = bool(first_best[g] == c[0]) and bool((best[k, :n] == rest).all())
            results[i] = Scored(lp, greedy, len(c))

    def rolling(self, texts: Iterable[str], desc: str = "perplexity") -> list[tuple[float, int]]:
        """Per text: the summed log-likelihood of all its tokens and their count."""
        windows, owner, counts = [], [], []
        for t, text in enumerate(texts):
            ids = self.tok.encode(text)
            counts.append(len(ids))
            for w in rolling_windows(ids, self.prefix_token, self.max_length):
                windows.append(w)
                owner.append(t)
        sums = [0.0] * len(counts)
        for o, s in zip(owner, self.loglikelihood_tokens(windows, desc)):
            sums[o] += s.logprob
        return list(zip(sums, counts))


def bits_per_byte(logprob_sum: float, n_bytes: int) -> float:
    return -logprob_sum / (max(n_bytes, 1) * math.log(2))
