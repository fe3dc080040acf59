"""The Alaya network: an MPT decoder (docs/design.md, "The recipe"); its attention masks live beside it
(alaya.model.attention).

    x = wte(ids)
    for each block:  x = x + out_proj(attn(LN1(x)));  x = x + down(gelu(up(LN2(x))))
    logits = LN_f(x) @ wte.T

Attention is ``scaled_dot_product_attention`` with an additive mask that carries ALiBi, causality and
padding, or (``model.attention = "flex"``) FlexAttention with the same rules and no dense mask
(alaya.model.flex). ALiBi is written in its relative form, ``slope_h * (j - i)``; MPT's reference code uses the
key-only form ``slope_h * (j - (L - 1))``. Both give the same softmax (they differ by a constant per row),
but the relative form stays small near the diagonal, so it survives being cast to bf16, where the key-only
form's values near -1000 lose the differences between neighbouring keys.

State-dict names are those of ``transformers.MptForCausalLM`` (``transformer.wte``,
``transformer.blocks.{i}.attn.Wqkv``, ...), so Hugging Face folders load without renaming.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from alaya.model.attention import alibi_slopes, attention_layout, Unpadded
from alaya.model.config import ModelConfig
from alaya.model.flex import FlexLayout


@dataclass
class KVCache:
    """Preallocated keys and values of every layer: [n_layers, B, H, capacity, head_dim] each.

    ``length`` (a Python int) counts the positions written; each forward writes after them and attends to
    them. With ``position`` set (a device tensor [1]), the cache is static: a forward takes one new token
    per row, writes it at ``position`` and attends over the whole capacity with a [B, capacity] mask, so
    every step has the same shapes (one compiled graph, replayed; ``length`` is left alone)."""

    keys: torch.Tensor
    values: torch.Tensor
    length: int = 0
    position: torch.Tensor | None = None

    @classmethod
    def empty(
        cls, config: ModelConfig, batch_size: int, capacity: int, device: torch.device | str, dtype: torch.dtype
    ) -> "KVCache":
        shape = (config.n_layers, batch_size, config.n_heads, capacity, config.head_dim)
        return cls(torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype))

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


class LayerNorm(nn.Module):
    """LayerNorm without bias, computed in the activation dtype (MPT's low_precision_layernorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        if not torch.is_autocast_enabled(device):
            w = self.weight if self.weight.dtype == x.dtype else self.weight.to(x.dtype)
            return F.layer_norm(x, (x.shape[-1],), w, None, self.eps)
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device_type=device, enabled=False):  # autocast would promote it to fp32
            return F.layer_norm(x.to(dtype), (x.shape[-1],), self.weight.to(dtype), None, self.eps)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.Wqkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | FlexLayout | None, cache: KVCache | None, layer: int,
                unpadded: Unpadded | None = None) -> torch.Tensor:
        qkv = self.Wqkv(x)
        if unpadded is not None and unpadded.spans is not None:  # each example alone (CPU, no cache)
            return self.out_proj(torch.cat([self._attend(part, unpadded.span_bias(len(part)))
                                            for part in qkv.split(unpadded.spans)]))
        if unpadded is not None:  # x holds only the real tokens, [N, D]
            qkv = unpadded.pad(qkv)
        B, T, D = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
        q, k, v = qkv.view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if cache is not None and cache.position is not None:  # static: one token at a device position
            cache.keys[layer].index_copy_(2, cache.position, k)
            cache.values[layer].index_copy_(2, cache.position, v)
            k, v = cache.keys[layer], cache.values[layer]
        elif cache is not None:
            end = cache.length + T
            cache.keys[layer, :, :, cache.length : end] = k
            cache.values[layer, :, :, cache.length : end] = v
            k, v = cache.keys[layer, :, :, :end], cache.values[layer, :, :, :end]
        if k.dtype != q.dtype:  # a KV cache kept in another dtype than the activations
            k, v = k.to(q.dtype), v.to(q.dtype)
        if isinstance(bias, FlexLayout):
            y = bias.attend(q, k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.out_proj(y if unpadded is None else unpadded.unpad(y))

    def _attend(self, qkv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Attention of one example's n tokens: qkv [n, 3D] -> [n, D]."""
        n = qkv.shape[0]
        q, k, v = qkv.view(1, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).reshape(n, -1)


class FeedForward(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.ffn_dim, bias=False)
        self.down_proj = nn.Linear(config.ffn_dim, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x), approximate="none"))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm_1 = LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.attn = Attention(config)
        self.norm_2 = LayerNorm(config.d_model, config.layer_norm_epsilon)
        self.ffn = FeedForward(config)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | FlexLayout | None, cache: KVCache | None, layer: int,
                unpadded: Unpadded | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x), bias, cache, layer, unpadded)
        return x + self.ffn(self.norm_2(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm_f = LayerNorm(config.d_model, config.layer_norm_epsilon)


class TiedHead(nn.Module):
    """The output head's product with the tied embedding table, ``x @ wte.T``. A module without parameters
    (the state dict is unchanged), so a decoding backend can put its own product in its place, as it does
    for the Linears (alaya.infer.backends)."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.linear(x, weight)


class AlayaForCausalLM(nn.Module):
    """The MPT causal language model with the output head tied to the token embedding."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.head = TiedHead()
        self.activation_checkpointing = False
        self.attention = "sdpa"  # sdpa | flex (alaya.model.flex): how forwards of several tokens attend
        self.blocks_compiled = False  # each block compiled on its own (alaya.train.builder.compile_for_training)
        self._slopes: dict[torch.device, torch.Tensor] = {}  # per device; not a buffer, so meta init is clean
        if self.transformer.wte.weight.device.type != "meta":
            self.reset_parameters()

    @property
    def device(self) -> torch.device:
        return self.transformer.norm_f.weight.device

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """llm-foundry's MPT init: kaiming-normal (fan_in) weights, residual projections / sqrt(2 n_layers)."""
        div = math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if p.ndim == 1:  # LayerNorm weights
                p.fill_(1.0)
                continue
            nn.init.kaiming_normal_(p, mode="fan_in", nonlinearity=self.config.init_nonlinearity, generator=generator)
            if name.endswith(("attn.out_proj.weight", "ffn.down_proj.weight")):
                p.div_(div)

    def slopes(self, device: torch.device) -> torch.Tensor:
        if device not in self._slopes:
            self._slopes[device] = alibi_slopes(self.config.n_heads, self.config.alibi_bias_max).to(device)
        return self._slopes[device]

    def new_cache(self, batch_size: int, capacity: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        dtype = dtype or self.transformer.norm_f.weight.dtype  # the activations' (an int8 model's are fp32)
        return KVCache.empty(self.config, batch_size, capacity or self.config.max_seq_len, self.device, dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_token_only: bool = False,
        segment_ids: torch.Tensor | None = None,
        logits_at: torch.Tensor | None = None,
        real_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T or 1, V] and, with ``labels``, the mean next-token cross-entropy.

        ``attention_mask``, ``cache`` and ``segment_ids``: as :meth:`hidden_states` takes them. ``labels``
        are shifted inside; -100 is ignored. ``logits_at`` [B, T] (bool): only the logits of these
        positions, as [M, V] in row-major order (a training loss needs them only where a label is
        supervised: the head is the largest product of a small model and its fp32 logits the largest
        tensor of a large vocabulary's); or, as a long tensor [M], those positions flattened, computed on
        the host (no device sync). ``real_index``: see :meth:`hidden_states`.
        """
        if logits_at is not None and (labels is not None or last_token_only):
            raise ValueError("logits_at selects the logits itself; it cannot go with labels or last_token_only")
        x = self.hidden_states(input_ids, attention_mask, cache, segment_ids, real_index)
        if last_token_only:
            x = x[:, -1:]
        elif logits_at is not None:
            x = x[logits_at] if logits_at.dtype == torch.bool else x.flatten(0, 1).index_select(0, logits_at)
        logits = self.logits(x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return logits, loss

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      cache: KVCache | None = None, segment_ids: torch.Tensor | None = None,
                      real_index: torch.Tensor | None = None) -> torch.Tensor:
        """The final layer norm's output [B, T, D], the head's input.

        ``attention_mask`` [B, S] marks real tokens (1) and padding (0) over all S keys (past + current
        when a cache is given). With ``cache``, the new keys and values are written at ``cache.length`` and
        the cache advances. ``segment_ids`` [B, T] (training on packed examples) keeps attention inside
        each example. States at padding positions are not defined (a batch with padding runs on its real
        tokens only). ``real_index`` [N]: where those real tokens are in the flattened [B * T], computed on
        the host (otherwise found with ``nonzero`` on the mask, a device sync on an accelerator).
        """
        B, T = input_ids.shape
        static = cache is not None and cache.position is not None
        past = cache.length if cache is not None and not static else 0
        n_keys = cache.capacity if static else past + T
        if static and (T != 1 or attention_mask is None):
            raise ValueError("a static KV cache takes one new token per row and a [B, capacity] attention_mask")
        if cache is not None and n_keys > cache.capacity:
            raise ValueError(f"KV cache holds {cache.capacity} positions; {n_keys} requested")
        if attention_mask is not None and attention_mask.shape != (B, n_keys):
            raise ValueError(f"attention_mask must have shape {(B, n_keys)}, got {tuple(attention_mask.shape)}")
        x = self.transformer.wte(input_ids)
        act_dtype = (
            torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        )
        bias, unpadded = attention_layout(self.slopes(x.device), attention_mask, segment_ids, past, T, act_dtype,
                                          with_cache=cache is not None, position=cache.position if static else None,
                                          real_index=real_index, attention=self.attention,
                                          unpad=not self.blocks_compiled)
        if unpadded is not None:
            x = unpadded.unpad(x)
        for i, block in enumerate(self.transformer.blocks):
            if self.activation_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, bias, None, i, unpadded, use_reentrant=False)
            else:
                x = block(x, bias, cache, i, unpadded)
        if cache is not None and not static:
            cache.length = n_keys
        x = self.transformer.norm_f(x)
        return unpadded.pad(x) if unpadded is not None else x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The tied head: hidden states [..., D] -> logits [..., V]."""
        wte = self.transformer.wte
        if isinstance(wte, nn.Embedding):
            logits = self.head(x, wte.weight if wte.weight.dtype == x.dtype else wte.weight.to(x.dtype))
        else:  # a quantized table multiplies with its own stored weights (alaya.infer.int8)
            logits = wte.project(x)
        if self.config.logit_scale is not None:
            logits = logits * self.config.logit_scale
        return logits
