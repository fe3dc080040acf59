"""What a training step needs to know about a batch, computed on the host when the batch is made, so the step
itself never waits for the accelerator (no ``nonzero`` of a device mask, no ``.item()``).

:func:`with_host_layout` adds to a batch ``{input_ids, labels[, attention_mask][, segment_ids][, loss_weights]}``:

- ``supervised`` (int): labels[:, 1:] that are not -100, the tokens that carry a loss;
- ``loss_weight`` (float): what the batch's summed loss is divided by (``supervised``, or the sum of its
  ``loss_weights``: SFT with ``train.loss_average: example``);
- ``real_tokens`` (int): tokens that are not padding (what tokens/s and MFU count);
- ``next_all``: True when every position but the last predicts a supervised token (pretraining: the
  logits are a slice, not a gather);
- ``logits_index`` [M] and ``targets`` [M]: the flattened positions whose next token carries a loss, and
  those tokens, in row-major order (``target_weights`` [M]: their ``loss_weights``);
- ``real_index`` [N]: the flattened positions of the real tokens (absent without padding).
"""
from __future__ import annotations

import torch

IGNORE = -100
LAYOUT_KEYS = ("supervised", "loss_weight", "real_tokens", "next_all", "logits_index", "targets", "real_index")


def with_host_layout(batch: dict) -> dict:
    """A copy of the batch with its host layout (module docstring); a batch that has it is returned as it is.
    The given dict is not changed."""
    if "logits_index" in batch:
        return batch
    batch = dict(batch)
    labels = batch["labels"]
    at = torch.zeros(labels.shape, dtype=torch.bool)
    at[:, :-1] = labels[:, 1:] != IGNORE
    supervised = int(at.sum())
    batch["supervised"] = supervised
    batch["loss_weight"] = float(batch["loss_weights"].sum()) if "loss_weights" in batch else float(supervised)
    batch["next_all"] = bool(at[:, :-1].all())
    batch["logits_index"] = at.flatten().nonzero().squeeze(1)
    batch["targets"] = labels[:, 1:][at[:, :-1]]
    if "loss_weights" in batch:
        batch["target_weights"] = batch["loss_weights"][:, 1:][at[:, :-1]]
    mask = batch.get("attention_mask")
    batch["real_tokens"] = int(mask.sum()) if mask is not None else labels.numel()
    if mask is not None and batch["real_tokens"] < mask.numel():
        batch["real_index"] = mask.flatten().nonzero().squeeze(1)
    return batch
