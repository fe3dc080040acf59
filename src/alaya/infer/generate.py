"""KV-cache decoding for batches of prompts of different lengths (left padding).

One prefill over the padded prompts, then one token per step for every unfinished row. Each row has its
own :class:`GenerationConfig` (the server batches requests with different settings): greedy when
``temperature == 0``, otherwise sampling with temperature, top-k and top-p. A sampled row's t-th draw is the
t-th of a stream of uniforms made from its seed alone (:func:`row_uniforms`; a fresh random seed where none
is given), so a row's output does not depend on what else is in the batch, and every row of a step samples in
one vectorised inverse-CDF draw (:func:`sample_from`), with no loop over rows. Banned token ids (the published
``bad_words_ids=[[3]]``) never come out; a row stops at ``eos_token_id``, after ``max_new_tokens``, or when
the caller stops it (a stop string seen by :class:`alaya.infer.text.TextStream`, a client gone).
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np
import torch

from alaya.infer.backends import Backend, as_backend
from alaya.model.mpt import AlayaForCausalLM


@dataclass
class GenerationConfig:
    max_new_tokens: int = 1000
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 0
    repetition_penalty: float = 1.0
    eos_token_id: int = 2
    pad_token_id: int = 2
    banned_token_ids: list[int] = field(default_factory=lambda: [3])
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # stop strings, applied to the decoded text

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    def with_(self, **changes) -> "GenerationConfig":
        return replace(self, **changes)


def _apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    # transformers' rule: divide positive logits, multiply negative ones, for every token already present
    scores = torch.gather(logits, 1, seen)
    scores = torch.where(scores > 0, scores / penalty, scores * penalty)
    return logits.scatter(1, seen, scores)


def _finite(logits: torch.Tensor) -> torch.Tensor:
    # extreme settings (a penalty or temperature near 0) overflow: keep the order, never produce NaN
    big = torch.finfo(logits.dtype).max
    return torch.nan_to_num(logits, nan=float("-inf"), posinf=big, neginf=float("-inf"))


CANDIDATES = 256  # on the CPU, top-k / top-p look among this many best tokens first (a full sort is ~30x dearer)


def _filter_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                   truncate: bool = True, candidates: int | None = None) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) over what top-k kept, each per row ([B, 1] tensors; 0 / 1
    switch off); dropped tokens become -inf. ``truncate``: whether any row has a top-k or top-p (known on the
    host: no device sync to find out).

    What a row keeps is the tokens whose logit reaches a threshold: that of the last token kept when the best
    tokens are taken in order, while the tokens above hold at most top_p of the (top-k) mass. The order is
    found among the best ``candidates`` tokens (``torch.topk``; None: the whole vocabulary, sorted); when a
    row's nucleus reaches past them, among 16 times as many, then the whole vocabulary (a host read decides:
    for the CPU, where reading is free and sorting dear)."""
    logits = _finite(logits / temperature)
    if not truncate:
        return logits
    V = logits.shape[-1]
    k = V if candidates is None else min(V, candidates)
    best = torch.topk(logits, k, dim=-1).values if k < V else torch.sort(logits, dim=-1, descending=True).values
    rank = torch.arange(k, device=logits.device)
    by_k = (top_k > 0) & (rank >= top_k)  # [B, k]
    mass = (best - torch.logsumexp(logits, -1, keepdim=True)).exp().masked_fill(by_k, 0.0)
    share = mass / torch.where(top_k > 0, mass.sum(-1, keepdim=True), torch.ones_like(top_p))  # of what top-k kept
    drop = by_k | ((top_p < 1) & ((share.cumsum(-1) - share) > top_p))
    kept = (~drop).sum(-1, keepdim=True)  # >= 1: the best token is never dropped
    truncating = (top_k > 0) | (top_p < 1)
    if k < V and not bool((~truncating | (kept < k) | (top_k > 0)).all()):
        wider = None if k * 16 >= V else k * 16  # 256, 4096, then the whole vocabulary
        return _filter_logits(logits, torch.ones_like(temperature), top_k, top_p, truncate, wider)
    threshold = torch.where(truncating, best.gather(1, kept - 1), float("-inf"))
    return logits.masked_fill(logits < threshold, float("-inf"))


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def row_uniforms(seed: int, n: int) -> np.ndarray:
    """The uniforms in [0, 1) of a row's draws 0..n-1, from its seed alone: splitmix64 of seed + k, the top 24
    bits of each (exact in float32, so ``u * total`` stays below ``total``)."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed & (2**64 - 1)) + np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(40)).astype(np.float32) / np.float32(2**24)


def sample_from(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` [B, V] (unnormalised, >= 0), from the row's uniform ``u`` [B]: the first
    token whose cumulative probability exceeds ``u`` times the row's total (inverse CDF; a token of
    probability 0 is never drawn)."""
    cdf = probs.cumsum(-1)
    target = (u.to(cdf.dtype) * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_max(probs.shape[-1] - 1)


class BatchDecoder:
    """Iterate to decode: each step yields ``[(row, token), ...]`` for the rows that produced a token.

    ``model``: a decoding backend (:mod:`alaya.infer.backends`), or a bare model, which decodes with its own
    forward.

    ``finish_reason[row]`` becomes ``"stop"`` (end of sequence or :meth:`stop`), ``"length"``
    (max_new_tokens) or whatever reason :meth:`stop` was given; ``tokens[row]`` holds the row's new ids
    without the end-of-sequence token.
    """

    def __init__(
        self,
        model: AlayaForCausalLM | Backend,
        prompts: Sequence[Sequence[int]],
        configs: GenerationConfig | Sequence[GenerationConfig],
    ):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        cfgs = [configs] * len(prompts) if isinstance(configs, GenerationConfig) else list(configs)
        if len(cfgs) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(cfgs)} generation configs")
        self.backend = as_backend(model)
        self.model = model = self.backend.model
        self.cfgs = cfgs
        self.B = B = len(prompts)
        self.L = L = max(len(p) for p in prompts)
        self.max_new = max(c.max_new_tokens for c in cfgs)
        needed = L + self.max_new
        ctx = model.config.max_seq_len
        if needed > ctx:
            raise ValueError(
                f"prompt ({L} tokens) + max_new_tokens ({self.max_new}) exceeds the model's context "
                f"({ctx}); truncate the prompt or ask for fewer tokens"
            )
        device = self.device = model.device
        pad = cfgs[0].pad_token_id
        ids = torch.full((B, L), pad, dtype=torch.long)
        capacity = self.backend.capacity(needed)  # a static cache's bucket may be larger than needed
        mask = torch.zeros((B, capacity), dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, L - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, L - len(p):L] = True
        self.ids, self.mask = ids.to(device), mask.to(device)
        col = lambda values, dtype: torch.tensor(values, dtype=dtype, device=device)[:, None]  # noqa: E731
        self.greedy = col([c.temperature == 0 for c in cfgs], torch.bool).squeeze(1)
        self.temperature = col([c.temperature if c.temperature > 0 else 1.0 for c in cfgs], torch.float32)
        self.top_k = col([c.top_k for c in cfgs], torch.long)
        self.top_p = col([c.top_p for c in cfgs], torch.float32)
        self.penalty = col([c.repetition_penalty for c in cfgs], torch.float32)
        self.use_penalty = any(c.repetition_penalty != 1.0 for c in cfgs)
        self.all_greedy = all(c.temperature == 0 for c in cfgs)
        self.numpy_greedy = self.all_greedy and not self.use_penalty and device.type == "cpu"
        shared = {tuple(sorted(set(c.banned_token_ids))) for c in cfgs}
        self.banned_cols = self.banned = None  # one list for all rows (the usual case) or a [B, V] mask
        if len(shared) == 1:
            cols = list(shared.pop())
            if cols:
                self.banned_cols = torch.tensor(cols, dtype=torch.long, device=device)
                self._banned_np = np.array(cols, dtype=np.int64)
        else:
            self.banned = torch.zeros((B, model.config.vocab_size), dtype=torch.bool, device=device)
            for i, c in enumerate(cfgs):
                if c.banned_token_ids:
                    self.banned[i, c.banned_token_ids] = True
        self.eos = [c.eos_token_id for c in cfgs]
        self.truncate = any(c.top_k > 0 or c.top_p < 1 for c in cfgs)
        # on the CPU the order of the best tokens is found with topk among a few hundred, not a full sort
        self.candidates = max(CANDIDATES, *(c.top_k for c in cfgs)) if device.type == "cpu" else None
        # every sampled row's uniforms for the whole run, [B, max_new] on the device: draw t of row i is
        # uniforms[i, t], from the row's seed alone (fresh entropy where none is given)
        self.uniforms = None
        if not self.all_greedy:
            streams = [row_uniforms(secrets.randbits(63) if c.seed is None else c.seed, self.max_new)
                       if c.temperature > 0 else np.zeros(self.max_new, dtype=np.float32) for c in cfgs]
            self.uniforms = torch.from_numpy(np.stack(streams)).to(device)
        self.tokens: list[list[int]] = [[] for _ in range(B)]
        self.finish_reason: list[str | None] = [None] * B
        self.alive = torch.ones(B, dtype=torch.bool, device=device)
        self._alive = [True] * B
        self.cache = self.backend.new_cache(B, capacity)
        # on an accelerator, the chosen tokens are fed back on the device and the next step is queued before
        # they are read on the host, so the device computes while the host handles a step's tokens
        self.overlap = device.type != "cpu"

    def stop(self, row: int, reason: str = "stop") -> None:
        if self._alive[row]:
            self._alive[row] = False
            self.finish_reason[row] = reason

    @property
    def done(self) -> bool:
        return not any(self._alive)

    def _choose(self, logits: torch.Tensor, seen: torch.Tensor, step: int,
                host: bool = True) -> list[int] | torch.Tensor:
        """Every row's token number ``step``: a list (``host``), or a [B] tensor on the logits' device."""
        if host and self.numpy_greedy and self.banned is None and logits.dtype == torch.float32:  # the common CPU case
            arr = logits.numpy()
            if self.banned_cols is not None:  # in place: the logits are this step's own
                arr[:, self._banned_np] = -np.inf
            return arr.argmax(-1).tolist()
        logits = logits.float()
        if self.use_penalty:
            logits = _finite(_apply_repetition_penalty(logits, seen, self.penalty))
        if self.banned_cols is not None:  # in place: the logits are this step's own, nothing else reads them
            logits = logits.index_fill_(1, self.banned_cols, float("-inf"))
        elif self.banned is not None:
            logits = logits.masked_fill(self.banned, float("-inf"))
        if logits.device.type == "cpu":  # numpy's argmax: 5 µs for 60160 logits, torch's ~50 µs
            tok = torch.from_numpy(logits.numpy().argmax(-1))
        else:
            tok = logits.argmax(-1)
        if not self.all_greedy:  # one draw for every row (a greedy or finished row's is not used)
            probs = _filter_logits(logits, self.temperature, self.top_k, self.top_p, self.truncate,
                                   self.candidates).softmax(-1)
            tok = torch.where(self.greedy, tok.to(logits.device), sample_from(probs, self.uniforms[:, step]))
        return tok.tolist() if host else tok

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        with self.backend.threads():
            yield from (self._overlapped_steps() if self.overlap else self._steps())

    def _emit(self, toks: list[int]) -> list[tuple[int, int]]:
        """Record one step's tokens for the rows still alive; stop rows at eos or their length."""
        emitted = []
        for i, t in enumerate(toks):
            if not self._alive[i]:
                continue
            if t == self.eos[i]:
                self.stop(i, "stop")
                continue
            self.tokens[i].append(t)
            emitted.append((i, t))
            if len(self.tokens[i]) >= self.cfgs[i].max_new_tokens:
                self.stop(i, "length")
        return emitted

    @torch.inference_mode()
    def _overlapped_steps(self) -> Iterator[list[tuple[int, int]]]:
        """The accelerator's loop: step t+1 is queued with step t's tokens, still on the device, before they
        are copied to the host (one small copy, waited on through an event, not a sync of the whole queue).
        A row that finishes at step t has one more step computed for it, which nothing reads; rows never see
        each other, so every row's tokens are those of :meth:`_steps`."""
        L = self.L
        seen = self.ids
        cuda = self.device.type == "cuda"
        host = torch.empty(self.B, dtype=torch.long, pin_memory=cuda)
        run = self.backend.start(self.mask, self.cache)
        logits = run.prefill(self.ids)
        for step in range(self.max_new):
            if self.done:
                return
            tok = self._choose(logits[:, -1], seen, step, host=False)
            host.copy_(tok, non_blocking=cuda)
            ready = None
            if cuda:
                ready = torch.cuda.Event()
                ready.record()
            last = step == self.max_new - 1
            if not last:
                self.mask[:, L + step] = True
                if self.use_penalty:
                    seen = torch.cat([seen, tok[:, None]], dim=1)
                logits = run.step(tok)
            if ready is not None:
                ready.synchronize()
            yield self._emit(host.tolist())  # the caller may stop rows here (stop strings, cancelled requests)
            if self.done or last:
                return

    @torch.inference_mode()
    def _steps(self) -> Iterator[list[tuple[int, int]]]:
        L = self.L
        seen = self.ids
        on_gpu = self.mask.device.type != "cpu"
        # on CPU the mask is written through numpy (same memory): a fraction of a torch indexing call's cost
        mask_columns = self.mask if on_gpu else self.mask.numpy()
        run = self.backend.start(self.mask, self.cache)
        logits = run.prefill(self.ids)
        for step in range(self.max_new):
            if self.done:
                return
            toks = self._choose(logits[:, -1], seen, step)
            yield self._emit(toks)  # the caller may stop rows here (stop strings, cancelled requests)
            if self.done or step == self.max_new - 1:
                return
            pos = L + step
            if all(self._alive):
                mask_columns[:, pos] = True
            else:  # a finished row's new positions are padding
                mask_columns[:, pos] = torch.tensor(self._alive, device=self.device) if on_gpu else self._alive
            fed = [t if a else self.cfgs[i].pad_token_id for i, (t, a) in enumerate(zip(toks, self._alive))]
            if self.use_penalty:
                seen = torch.cat([seen, torch.tensor(fed, device=self.device)[:, None]], dim=1)
            logits = run.step(fed)

def generate(
    model: AlayaForCausalLM | Backend,
    prompts: Sequence[Sequence[int]],
    cfg: GenerationConfig | Sequence[GenerationConfig],
) -> list[list[int]]:
    """New token ids for each prompt (eos excluded); stop strings are not applied here."""
    decoder = BatchDecoder(model, prompts, cfg)
    for _ in decoder:
        pass
    return decoder.tokens


def warm_up(model: AlayaForCausalLM | Backend, max_batch: int, say=None) -> float:
    """Decode a few tokens at each of the backend's warm-up batch sizes (:meth:`warm_up_rows`), so that what a
    first request would wait for (compiling, recording a CUDA graph) is done now; the seconds it took.
    ``say``: called with a line before and after, when there is anything to do."""
    backend = as_backend(model)
    rows = backend.warm_up_rows(max_batch)
    if not rows:
        return 0.0
    if say:
        say("compiling the decoding step" + (f" for batches of up to {max_batch}" if max_batch > 1 else "")
            + " (once per process)...")
    t0 = time.perf_counter()
    cfg = GenerationConfig(max_new_tokens=3, temperature=0, eos_token_id=-1, banned_token_ids=[])
    for n in rows:
        generate(backend, [[0]] * n, cfg)
    if backend.model.device.type == "cuda":
        torch.cuda.synchronize(backend.model.device)
    seconds = time.perf_counter() - t0
    if say:
        say(f"ready after {seconds:.1f} s")
    return seconds
