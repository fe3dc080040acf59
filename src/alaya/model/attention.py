"""Attention masks of the Alaya network, beside it (alaya.model.mpt): ALiBi slopes and the additive bias of a
batch (ALiBi in its relative form, causality, padding, packed segments), the one-token decoding bias, and
:class:`Unpadded`, which runs a padded or packed batch on its real tokens only ([N, D]) with attention
example by example on the CPU, each example with its own causal ALiBi bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

def alibi_slopes(n_heads: int, alibi_bias_max: int = 8) -> torch.Tensor:
    """Per-head ALiBi slopes; for a head count that is not a power of two, MPT's interleaving."""
    n = 2 ** math.ceil(math.log2(n_heads))
    slopes = 2.0 ** (-alibi_bias_max * torch.arange(1, n + 1, dtype=torch.float64) / n)
    if n != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes.float()


def attention_bias(
    slopes: torch.Tensor,
    query_pos: torch.Tensor,
    key_valid: torch.Tensor | None,
    n_keys: int,
    dtype: torch.dtype,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Additive attention bias [B or 1, H, T, S]: ALiBi + causal mask + key padding mask.

    ``query_pos`` holds the absolute positions of the T queries among the S keys. A query that may see no
    key at all (a left-pad position) is allowed to see itself, so no row is all -inf (no NaN); its output
    is never used. ``segment_ids`` [B, S] (packed training, no cache) keeps attention inside each packed
    example: a query sees only keys of its own segment, and since ALiBi is written in the relative form
    ``slope * (j - i)`` the distances are those the example has on its own, so a packed example computes
    exactly what it computes unpacked.
    """
    key_pos = torch.arange(n_keys, device=query_pos.device)
    rel = (key_pos[None, :] - query_pos[:, None]).to(torch.float32)  # [T, S], <= 0 where allowed
    bias = slopes.to(query_pos.device)[:, None, None] * rel[None]  # [H, T, S]
    allowed = (rel <= 0)[None]  # [1, T, S]
    if segment_ids is not None:
        if segment_ids.shape[1] != n_keys or len(query_pos) != n_keys:
            raise ValueError("segment_ids are for training without a cache: one id per query and key")
        allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])  # [B, T, S]
    if key_valid is not None:
        allowed = allowed & key_valid[:, None, :].bool()  # [B, T, S]
        allowed = allowed | (rel == 0)[None]
    bias = bias[None].masked_fill(~allowed[:, None], float("-inf"))  # [B|1, H, T, S]
    return bias.to(dtype)


def decode_bias(slopes: torch.Tensor, key_valid: torch.Tensor, dtype: torch.dtype,
                position: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`attention_bias` for one new query per row at the last of the S keys (a decoding step), in
    fewer operations: it sees every valid key, and always itself. With ``position`` (a device tensor [1],
    a static cache), the query sits there instead and the keys after it are not seen: the same shapes at
    every step."""
    B, S = key_valid.shape
    if position is None:
        rel = torch.arange(1 - S, 1, device=key_valid.device, dtype=torch.float32)  # key - query, <= 0
        bias = (slopes[:, None] * rel).expand(B, -1, -1).masked_fill(~key_valid.bool()[:, None, :], float("-inf"))
        bias[:, :, -1] = 0.0
        return bias[:, :, None, :].to(dtype)
    rel = (torch.arange(S, device=key_valid.device) - position).to(torch.float32)  # [S]
    seen = (key_valid.bool() & (rel <= 0)) | (rel == 0)  # [B, S]
    bias = (slopes[:, None] * rel).expand(B, -1, -1).masked_fill(~seen[:, None, :], float("-inf"))
    return bias[:, :, None, :].to(dtype)


def attention_layout(slopes: torch.Tensor, attention_mask: torch.Tensor | None, segment_ids: torch.Tensor | None,
                     past: int, T: int, dtype: torch.dtype, with_cache: bool,
                     position: torch.Tensor | None = None,
                     real_index: torch.Tensor | None = None,
                     attention: str = "sdpa", unpad: bool = True) -> tuple[object, "Unpadded | None"]:
    """How a forward pass of T new tokens after ``past`` cached ones attends: the additive bias
    [B or 1, H, T, S] (None when each example builds its own, :class:`Unpadded` ``spans``), or with
    ``attention="flex"`` and T > 1 a :class:`alaya.model.flex.FlexLayout`; and the real tokens to run on
    (None: the whole [B, T] batch). ``position``: the one query's place in a static cache. ``real_index``:
    the real tokens' flattened positions, computed on the host (no cache). ``unpad=False``: run on the
    whole [B, T] batch (compiled code, whose shapes must not follow the batch's real-token count)."""
    flex = attention == "flex" and T > 1
    unpadded = None
    if attention_mask is not None and T > 1 and unpad and not torch.compiler.is_compiling():
        unpadded = Unpadded.of(attention_mask[:, past:], segment_ids, slopes, dtype,
                               by_example=not with_cache and not flex, index=real_index)
    if flex:
        from alaya.model.flex import flex_layout

        return flex_layout(slopes, attention_mask, segment_ids, past, T), unpadded
    if unpadded is not None and unpadded.spans is not None:
        return None, unpadded
    if T == 1 and attention_mask is not None:
        return decode_bias(slopes, attention_mask, dtype, position), unpadded
    query_pos = torch.arange(past, past + T, device=slopes.device)
    return attention_bias(slopes, query_pos, attention_mask, past + T, dtype, segment_ids), unpadded


@dataclass
class Unpadded:
    """Where the real (non-padding) tokens of a [B, T] batch sit. The Linears, norms and the FFN run on
    those N tokens only, as a [N, D] tensor, so a padded batch costs its real tokens' products, not its
    padding's, and computes the same thing token for token.

    Attention, on an accelerator, runs on the [B, T] layout (:meth:`pad` scatters the rows back, zeros at
    padding; :meth:`unpad` gathers them) with the batch's mask. On the CPU, when every example (a row, or
    a packed row's segment) is one contiguous run of tokens, ``spans`` holds the runs' lengths in order
    and attention runs on each example alone, with its own causal ALiBi bias: the cost is the sum of the
    squared example lengths, not rows x longest row squared, and no [B, H, T, T] mask is built.
    """

    index: torch.Tensor  # [N] positions of the real tokens in the flattened [B * T]
    batch: int
    length: int
    spans: list[int] | None = None
    slopes: torch.Tensor | None = None
    dtype: torch.dtype = torch.float32
    _biases: dict = field(default_factory=dict)

    # below this share of real tokens the batch is unpadded (the gathers cost less than the products saved)
    MAX_DENSITY = 0.95
    # where attention runs example by example: many small calls suit a CPU, not a GPU's launch costs
    BY_EXAMPLE_DEVICES = ("cpu",)

    @classmethod
    def of(cls, attention_mask: torch.Tensor, segment_ids: torch.Tensor | None, slopes: torch.Tensor,
           dtype: torch.dtype, by_example: bool, index: torch.Tensor | None = None) -> "Unpadded | None":
        """The real tokens of a [B, T] mask, or None when there is nothing to gain. ``by_example``: the
        tokens attend only to each other (no cache), so on the CPU each example may attend alone.
        ``index``: the real tokens' flattened positions when the caller knows them (no ``nonzero`` here)."""
        B, T = attention_mask.shape
        if index is None:
            index = attention_mask.flatten().nonzero().squeeze(1)
        by_example = by_example and attention_mask.device.type in cls.BY_EXAMPLE_DEVICES
        if len(index) > cls.MAX_DENSITY * B * T and not (by_example and segment_ids is not None):
            return None
        unpadded = cls(index, B, T, slopes=slopes, dtype=dtype)
        if by_example:
            unpadded.spans = _contiguous_runs(attention_mask, segment_ids)
        return unpadded

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] -> [B, T, C], zeros at padding."""
        out = x.new_zeros(self.batch * self.length, x.shape[-1])
        return out.index_copy(0, self.index, x).view(self.batch, self.length, -1)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [N, C]."""
        return x.reshape(self.batch * self.length, -1).index_select(0, self.index)

    def span_bias(self, n: int) -> torch.Tensor:
        """ALiBi + causal bias [1, H, n, n] of one example of n tokens."""
        if n not in self._biases:
            pos = torch.arange(n, device=self.index.device)
            self._biases[n] = attention_bias(self.slopes, pos, None, n, self.dtype)
        return self._biases[n]


def _contiguous_runs(attention_mask: torch.Tensor, segment_ids: torch.Tensor | None) -> list[int] | None:
    """Lengths, in row-major order, of the examples' runs of real tokens, or None when an example's tokens
    are not one contiguous run (padding inside an example, an id used twice in a row): attention then
    needs the batch's mask."""
    B, T = attention_mask.shape
    real = attention_mask.flatten().bool()
    if not bool(real.any()):
        return None
    seg = torch.zeros(B, T, dtype=torch.long) if segment_ids is None else segment_ids.long() - int(segment_ids.min())
    key = (torch.arange(B)[:, None] * (int(seg.max()) + 1) + seg).flatten()  # (row, example) -> one id
    starts = real.clone()
    starts[1:] &= (key[1:] != key[:-1]) | ~real[:-1]
    if int(starts.sum()) != int(torch.unique(key[real]).numel()):
        return None
    at = (real.cumsum(0) - 1)[starts]  # where each run starts among the real tokens
    return torch.diff(at, append=torch.tensor([int(real.sum())])).tolist()
