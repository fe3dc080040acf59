"""Examples rendered in the published prompt format, as token ids with the loss mask.

An example is ``[system + "\\n\\n"]`` then, per exchange, ``### Instruction:\\t\\n{instruction}\\n\\n`` and
``### Output:\\t\\n{output} </s>`` (alaya.prompt, the one place the format is written). Each piece is
tokenized on its own and the ids are concatenated, so a labelled span starts and ends exactly at its
piece: no token straddles an instruction and an output. A generation prompt ends right after the
instruction block too, so the model sees at training time the very ids it is given at inference.

Labels: the whole output block of every assistant turn, flag and ``</s>`` included (the published
inference lets the model write ``### Output:\\t\\n`` itself and stops at ``</s>``), or of the last turn only
(``last_turn_only``); never the system text or an instruction. Masked positions hold -100.

Length policy (``max_tokens``, usually ``train.seq_len``): an example that does not fit is dropped
(``drop``) or loses its oldest exchanges until it fits (``truncate_turns``; dropped when even its last
exchange does not fit). Nothing is ever cut inside a turn.
"""
from __future__ import annotations

from dataclasses import dataclass

from alaya.prompt import INSTRUCTION_FORMAT, OUTPUT_FORMAT
from alaya.sft.formats import Example
from alaya.tokenizer import AlayaTokenizer

IGNORE = -100
LENGTH_POLICIES = ("drop", "truncate_turns")


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    category: str
    dropped_turns: int = 0  # exchanges cut from the front by the length policy

    @property
    def supervised(self) -> int:
        return sum(1 for x in self.labels[1:] if x != IGNORE)

    def __len__(self) -> int:
        return len(self.input_ids)


class TooLong(ValueError):
    pass


def _texts(ex: Example) -> tuple[str | None, list[tuple[str, str]]]:
    """The example in the published format: its system text (or None) and each exchange's instruction block
    and output block, the texts that are tokenized one by one."""
    system = ex.system + "\n\n" if ex.system else None
    return system, [(INSTRUCTION_FORMAT.format(instruction=i), OUTPUT_FORMAT.format(output=o)) for i, o in ex.pairs]


def piece_texts(ex: Example) -> list[str]:
    """Every text :func:`encode_example` may tokenize for ``ex`` (to encode many examples in one batch)."""
    system, turns = _texts(ex)
    return ([system] if system else []) + [t for turn in turns for t in turn]


class PieceIds:
    """A tokenizer's ``encode`` answered from ids computed beforehand with one ``encode_batch`` call per
    chunk of examples (the Rust tokenizer's threads, not a Python call per piece); a text it was not given
    is encoded on the spot. Gives exactly the tokenizer's ids."""

    def __init__(self, tok: AlayaTokenizer, examples: list[Example]):
        self.tok = tok
        texts = list(dict.fromkeys(t for ex in examples for t in piece_texts(ex)))
        self.ids = dict(zip(texts, tok.encode_batch(texts)))

    def encode(self, text: str) -> list[int]:
        ids = self.ids.get(text)
        return list(ids) if ids is not None else self.tok.encode(text)


def _pieces(tok: AlayaTokenizer | PieceIds, ex: Example, first: int, last_turn_only: bool) -> list[tuple[list[int], bool]]:
    system, turns = _texts(ex)
    pieces: list[tuple[list[int], bool]] = [(tok.encode(system), False)] if system else []
    turns = turns[first:]
    for k, (instruction, output) in enumerate(turns):
        pieces.append((tok.encode(instruction), False))
        pieces.append((tok.encode(output), not last_turn_only or k == len(turns) - 1))
    return pieces


def encode_example(tok: AlayaTokenizer | PieceIds, ex: Example, max_tokens: int | None = None, policy: str = "drop",
                   last_turn_only: bool = False) -> Encoded:
    """Ids and labels of ``ex``; :class:`TooLong` when the length policy drops it."""
    if policy not in LENGTH_POLICIES:
        raise ValueError(f"length policy must be one of {', '.join(LENGTH_POLICIES)}, got {policy!r}")
    n_pairs = len(ex.pairs)
    for first in range(n_pairs if policy == "truncate_turns" else 1):
        ids: list[int] = []
        labels: list[int] = []
        for piece, trained in _pieces(tok, ex, first, last_turn_only):
            ids += piece
            labels += piece if trained else [IGNORE] * len(piece)
        if max_tokens is None or len(ids) <= max_tokens:
            labels[0] = IGNORE  # never a target (nothing precedes it); keeps packed and unpacked equal
            return Encoded(ids, labels, ex.category or "general", dropped_turns=first)
    raise TooLong(f"{ex.where}: {len(ids)} tokens" + (" in its last exchange" if policy == "truncate_turns" else "")
                  + f"; at most {max_tokens} fit (train.seq_len)")
