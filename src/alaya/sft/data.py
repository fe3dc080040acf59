"""The SFT training set: sources read and encoded, held out, mixed to the category shares, and drawn as
global batches (padded or packed) with a state that a resumed run restores exactly.

Mixing: each source belongs to one of the six categories of the published recipe (alaya.sft.formats.
CATEGORIES). One pass of the mixture holds ``share_c × T`` examples of category c, where T is
``data.examples`` or, by default, the largest size at which no source repeats more than its epoch cap
(``max_epochs``, per source or for all). Within a category the sources contribute in proportion to their
size. A category without data gives its share to the others in proportion (the report says so). The
achieved shares, in examples and in supervised tokens, are written beside the targets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from alaya.data.documents import Quarantine, expand_paths, is_heldout
from alaya.sft.formats import CATEGORIES, read_examples
from alaya.sft.template import IGNORE, Encoded, PieceIds, TooLong, encode_example
from alaya.tokenizer import AlayaTokenizer


@dataclass
class SourceStats:
    name: str
    category: str
    read: int = 0
    quarantined: int = 0
    too_long: int = 0
    truncated: int = 0  # kept after losing their oldest exchanges
    held_out: int = 0
    train: int = 0  # examples available for training
    used: int = 0  # examples in one pass of the mixture (repeats counted)


@dataclass
class SFTData:
    train: list[Encoded]  # one pass of the mixture, shuffled
    heldout: list[Encoded]
    sources: list[SourceStats]
    quarantine: Quarantine
    report: dict = field(default_factory=dict)


def load_sft_data(sources: list[dict], tok: AlayaTokenizer, seq_len: int, shares: dict[str, float] | None = None,
                  max_epochs: float = 3.0, examples: int | None = None, heldout_fraction: float = 0.02,
                  heldout_max: int = 64, policy: str = "drop", last_turn_only: bool = False, seed: int = 0,
                  quarantine: Quarantine | None = None) -> SFTData:
    """Read, encode, hold out and mix ``sources`` (``{path, category, format?, fields?, max_epochs?, name?}``)."""
    quarantine = quarantine if quarantine is not None else Quarantine()
    shares = dict(CATEGORIES if shares is None else shares)
    unknown = sorted(set(shares) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"data.shares names unknown categories {unknown}; known: {', '.join(CATEGORIES)}")
    if not sources:
        raise ValueError("data.sources is empty: list the instruction files, each with its category")
    pools: list[tuple[SourceStats, list[Encoded], float]] = []
    heldout: list[Encoded] = []
    for i, src in enumerate(sources):
        if not isinstance(src, dict) or "path" not in src:
            raise ValueError(f"data.sources[{i}] must be a mapping with 'path' (and 'category'), got {src!r}")
        bad = sorted(set(src) - {"path", "category", "format", "max_epochs", "name", "fields"})
        if bad:
            raise ValueError(f"data.sources[{i}]: unknown keys {bad}")
        category = src.get("category", "general")
        if category not in CATEGORIES:
            raise ValueError(f"data.sources[{i}].category is {category!r}; known: {', '.join(CATEGORIES)}")
        paths = src["path"] if isinstance(src["path"], list) else [src["path"]]
        stats = SourceStats(src.get("name") or str(paths[0]), category)
        expand_paths(paths)  # a missing file is an error before any work
        before = quarantine.count
        kept: list[Encoded] = []
        for chunk in _chunks(read_examples([str(p) for p in paths], quarantine, src.get("format"), category,
                                           src.get("fields")), 4096):
            ids = PieceIds(tok, chunk)
            for ex in chunk:
                stats.read += 1
                try:
                    enc = encode_example(ids, ex, seq_len, policy, last_turn_only)
                except TooLong:
                    stats.too_long += 1
                    continue
                enc.category = ex.category or category
                stats.truncated += enc.dropped_turns > 0
                # keyed on the file's name and line, not its folder: the same data held out wherever it lives
                if is_heldout(f"{Path(ex.source).name}:{ex.line}", heldout_fraction) and len(heldout) < heldout_max:
                    heldout.append(enc)
                    stats.held_out += 1
                    continue
                kept.append(enc)
        stats.quarantined = quarantine.count - before
        stats.train = len(kept)
        cap = float(src.get("max_epochs", max_epochs))
        by_cat: dict[str, list[Encoded]] = {}
        for enc in kept:  # a record's own category wins over its source's
            by_cat.setdefault(enc.category, []).append(enc)
        if set(by_cat) <= {category}:
            pools.append((stats, kept, cap))
            continue
        for cat, encs in sorted(by_cat.items()):
            pools.append((SourceStats(f"{stats.name} [{cat}]", cat, train=len(encs)), encs, cap))
        pools.append((stats, [], cap))  # the source's read/quarantine counts
    train = _mix(pools, shares, examples, seed)
    report = mixture_report(train, pools, shares)
    return SFTData(train, heldout, [p[0] for p in pools], quarantine, report)


def _chunks(items, size: int):
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


GENERATORS = ("identity", "refusals")


def materialize_sources(sources: list, folder: Path, write: bool = True) -> list[dict]:
    """Sources as files: ``{generate: identity, ...}`` and ``{generate: refusals, input: [...]}`` entries are
    generated into ``folder`` (with their held-out splits, for ``alaya eval``) and replaced by the files
    they wrote: identity dialogues (self_awareness), refusals (bias_refusal) and their benign look-alikes
    (hhh). ``write`` False (ranks other than 0) only names the files."""
    out = []
    for i, src in enumerate(sources):
        if not isinstance(src, dict) or "generate" not in src:
            out.append(src)
            continue
        kind = src["generate"]
        opts = {k: v for k, v in src.items() if k not in ("generate", "max_epochs")}
        extra = {"max_epochs": src["max_epochs"]} if "max_epochs" in src else {}
        if kind == "identity":
            from alaya.sft.identity import Identity, write_identity_data

            allowed = {"name", "name_zh", "developer", "developer_zh", "examples", "templates", "seed"}
            bad = sorted(set(opts) - allowed)
            if bad:
                raise ValueError(f"data.sources[{i}] (generate: identity): unknown keys {bad}; known: {sorted(allowed)}")
            path = folder / "identity.jsonl"
            if write:
                ident = Identity(**{k: opts[k] for k in ("name", "name_zh", "developer", "developer_zh") if k in opts})
                write_identity_data(str(path), ident, examples=int(opts.get("examples", 4000)),
                                    seed=int(opts.get("seed", 0)), templates=opts.get("templates") or [])
            out.append({"path": str(path), "category": "self_awareness", "name": "identity (generated)", **extra})
        elif kind == "refusals":
            from alaya.sft.refusals import write_refusal_data

            if not opts.get("input"):
                raise ValueError(f"data.sources[{i}] (generate: refusals) needs input: [red-team files or folders]")
            path = folder / "refusals.jsonl"
            if write:
                inputs = opts["input"] if isinstance(opts["input"], list) else [opts["input"]]
                write_refusal_data([str(x) for x in inputs], str(path), seed=int(opts.get("seed", 0)),
                                   heldout_fraction=float(opts.get("heldout_fraction", 0.1)),
                                   templates=opts.get("templates"))
            out.append({"path": str(path), "category": "bias_refusal", "name": "refusals (generated)", **extra})
            out.append({"path": str(folder / "refusals.benign.jsonl"), "category": "hhh",
                        "name": "benign look-alikes (generated)", **extra})
        else:
            raise ValueError(f"data.sources[{i}]: generate must be one of {', '.join(GENERATORS)}, got {kind!r}")
    return out


def _take(pool: list[Encoded], k: int, rng: np.random.Generator) -> list[Encoded]:
    """k examples of a pool: whole shuffled passes, then a random part of one more."""
    out: list[Encoded] = []
    while k >= len(pool) > 0:
        out += [pool[i] for i in rng.permutation(len(pool))]
        k -= len(pool)
    if k > 0:
        out += [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
    return out


def _mix(pools, shares: dict[str, float], examples: int | None, seed: int) -> list[Encoded]:
    rng = np.random.Generator(np.random.PCG64(seed))
    by_cat: dict[str, list] = {}
    for stats, kept, cap in pools:
        if kept:
            by_cat.setdefault(stats.category, []).append((stats, kept, cap))
    active = {c: s for c, s in shares.items() if s > 0 and c in by_cat}
    if not active:
        raise ValueError("no category with a positive share has training examples (see the data report)")
    total_share = sum(active.values())
    active = {c: s / total_share for c, s in active.items()}
    capacity = {c: sum(len(k) * cap for _, k, cap in by_cat[c]) for c in active}
    limit = min(capacity[c] / active[c] for c in active)
    size = int((min(examples, limit) if examples else limit) + 1e-9)
    out: list[Encoded] = []
    for c, share in active.items():
        want = max(1, round(share * size))
        n_all = sum(len(k) for _, k, _ in by_cat[c])
        for stats, kept, cap in by_cat[c]:
            k = min(int(len(kept) * cap), round(want * len(kept) / n_all))
            stats.used = k
            out += _take(kept, k, rng)
    return [out[i] for i in rng.permutation(len(out))]


def mixture_report(train: list[Encoded], pools, shares: dict[str, float]) -> dict:
    n = max(len(train), 1)
    sup_total = max(sum(e.supervised for e in train), 1)
    cats: dict[str, dict] = {}
    for c in CATEGORIES:
        rows = [e for e in train if e.category == c]
        cats[c] = {"target": round(shares.get(c, 0.0), 4), "examples": len(rows),
                   "share_examples": round(len(rows) / n, 4),
                   "share_supervised_tokens": round(sum(e.supervised for e in rows) / sup_total, 4)}
    missing = sorted(c for c, s in shares.items() if s > 0 and not cats[c]["examples"])
    return {"examples_per_pass": len(train), "categories": cats, "categories_without_data": missing,
            "sources": [vars(p[0]) for p in pools]}


def padding_share(lengths: list[int], seq_len: int, packing: bool) -> float:
    """The share of a window's tokens that are padding, with one example per window or packed in order."""
    if not lengths:
        return 0.0
    if not packing:
        return 1.0 - sum(lengths) / (len(lengths) * seq_len)
    windows, fill = 1, 0
    for n in lengths:
        if fill + n > seq_len:
            windows, fill = windows + 1, 0
        fill += n
    return 1.0 - sum(lengths) / (windows * seq_len)


# ---------------------------------------------------------------------------------------- batches
LOSS_AVERAGES = ("token", "example")


def collate(rows: list[list[Encoded]], pad_id: int, length: int | None = None, per_example: bool = False) -> dict:
    """A batch of rows, each holding one example or several packed ones, padded on the right to the longest
    row (or ``length``). Packed rows get ``segment_ids`` (1, 2, ... per example, 0 for padding) so
    attention stays inside each example. ``per_example``: ``loss_weights`` [B, T] give each supervised
    label 1 / (its example's supervised tokens), so every example weighs 1 in the loss, whatever its length."""
    T = length or max(sum(len(e) for e in row) for row in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    packed = any(len(row) > 1 for row in rows)
    seg = torch.zeros((B, T), dtype=torch.long) if packed else None
    weights = torch.zeros((B, T), dtype=torch.float32) if per_example else None
    for b, row in enumerate(rows):
        pos = 0
        for k, e in enumerate(row, 1):
            n = len(e)
            ids[b, pos : pos + n] = torch.tensor(e.input_ids)
            labels[b, pos : pos + n] = torch.tensor(e.labels)
            mask[b, pos : pos + n] = 1
            if seg is not None:
                seg[b, pos : pos + n] = k
            if weights is not None and e.supervised:
                supervised = torch.tensor(e.labels) != IGNORE
                supervised[0] = False  # nothing predicts an example's first token
                weights[b, pos : pos + n] = supervised.float() / e.supervised
            pos += n
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if seg is not None:
        batch["segment_ids"] = seg
    if weights is not None:
        batch["loss_weights"] = weights
    return batch


class SFTBatches:
    """Global batches drawn in order from passes over the mixture, each pass shuffled by (seed, pass).

    A row is one example, or (``packing``) as many whole examples, in order, as fit in ``seq_len``. Every
    rank draws the same global batch and keeps its slice; the state is (pass, position), so a resumed
    run continues with the very batches an uninterrupted one would have drawn. ``loss_average``:
    ``token`` (every supervised token weighs the same) or ``example`` (every example does; ``collate``).
    """

    def __init__(self, examples: list[Encoded], seq_len: int, pad_id: int, packing: bool, seed: int,
                 pad_multiple: int = 128, loss_average: str = "token"):
        if loss_average not in LOSS_AVERAGES:
            raise ValueError(f"train.loss_average must be one of {', '.join(LOSS_AVERAGES)}, got {loss_average!r}")
        self.per_example = loss_average == "example"
        if not examples:
            raise ValueError("the SFT mixture holds no training example")
        too_long = [len(e) for e in examples if len(e) > seq_len]
        if too_long:
            raise ValueError(f"{len(too_long)} examples are longer than seq_len {seq_len}")
        self.examples, self.seq_len, self.pad_id, self.packing, self.seed = examples, seq_len, pad_id, packing, seed
        self.pad_multiple = pad_multiple
        self.epoch, self.pos = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(len(self.examples))

    def _next(self) -> Encoded:
        if self.pos >= len(self._order):
            self.epoch, self.pos = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        e = self.examples[self._order[self.pos]]
        self.pos += 1
        return e

    def _peek(self) -> Encoded:
        if self.pos >= len(self._order):
            return self.examples[self._permutation(self.epoch + 1)[0]]
        return self.examples[self._order[self.pos]]

    def _row(self) -> list[Encoded]:
        row = [self._next()]
        if self.packing:
            fill = len(row[0])
            while fill + len(self._peek()) <= self.seq_len:
                row.append(self._next())
                fill += len(row[-1])
        return row

    def global_batch(self, micro_batch: int, world: int, accum: int, rank: int) -> list[dict]:
        rows = [self._row() for _ in range(micro_batch * world * accum)]
        out = []
        for k in range(accum):
            start = (k * world + rank) * micro_batch
            mine = rows[start : start + micro_batch]
            out.append(collate(mine, self.pad_id, self.padded_length(max(sum(map(len, r)) for r in mine)),
                               self.per_example))
        return out

    def padded_length(self, longest: int) -> int:
        """The batch's length: ``seq_len`` for packed rows, else the longest row rounded up to a multiple of
        ``pad_multiple`` (at most ``seq_len``), so a run sees a handful of shapes (a compiled step or a GPU
        attention kernel is built once per shape, not once per batch); 0 pads to the longest row."""
        if self.packing:
            return self.seq_len
        if self.pad_multiple <= 0:
            return longest
        return min(self.seq_len, -(-longest // self.pad_multiple) * self.pad_multiple)

    @property
    def epochs(self) -> float:
        return self.epoch + self.pos / len(self.examples)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "examples": len(self.examples), "packing": self.packing,
                "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("examples", "packing", "seq_len"):
            if state[key] != mine[key]:
                raise ValueError(f"the checkpoint's data has {key}={state[key]!r}, this run {mine[key]!r}")
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._permutation(self.epoch)


def eval_batches(examples: list[Encoded], batch_size: int, pad_id: int) -> list[dict]:
    return [collate([[e] for e in examples[i : i + batch_size]], pad_id) for i in range(0, len(examples), batch_size)]
