"""Instruction and dialogue records in the three formats people ship them in, read into one shape.

- **alpaca**: ``instruction``, optional ``input`` (joined to the instruction with a newline, as Alpaca and
  LLaMA-Factory do), ``output``, optional ``history`` (``[[user, assistant], ...]``, oldest first) and
  ``system``.
- **sharegpt**: ``conversations``: ``[{"from": "human"|"user"|"gpt"|"assistant"|"system", "value": ...}]``,
  optional ``system``.
- **openai**: ``messages``: ``[{"role": "system"|"user"|"assistant", "content": ...}]``.
- **dialogue**: ``turns`` (rename with ``fields``): utterances without roles, strings or objects with
  ``message`` / ``text`` / ``content`` / ``value``, alternating user and assistant; a trailing user
  utterance is dropped (KdConv, LCCC-style chat logs).
- **hh**: Anthropic HH-RLHF's ``chosen`` text (``\n\nHuman: ...\n\nAssistant: ...``).

Files are JSONL (.gz/.zst too) or one JSON array; the format is detected from each record's keys (so a
file may mix them), or set. Any record may carry ``category`` (one of :data:`CATEGORIES`). A malformed record (bad JSON,
wrong types, an empty turn, roles that do not alternate user/assistant or do not end with the assistant,
a system turn after the first) is quarantined with its file, line (or array index) and the reason.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from alaya.data.documents import Quarantine, QuarantineRecord, read_json_records

# The published recipe's six SFT categories and their shares of the mixture (docs/design.md, "The recipe")
CATEGORIES = {
    "general": 0.715,          # general knowledge
    "reasoning": 0.197,        # logical deduction: chain of thought, code, math
    "hhh": 0.052,              # helpful, honest, harmless
    "bias_refusal": 0.018,     # red-team prompts answered with refusals
    "self_awareness": 0.011,   # identity
    "role_play": 0.007,        # role-play and multi-turn dialogue
}
FORMATS = ("alpaca", "sharegpt", "openai", "dialogue", "hh")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "bot": "assistant", "model": "assistant"}


class RecordError(ValueError):
    """A record that cannot be an example; the message is the quarantine reason."""


@dataclass
class Example:
    """One conversation: user/assistant turns alternating, starting with the user, ending with the assistant."""

    turns: list[tuple[str, str]]  # (role, text), role "user" or "assistant"
    system: str | None = None
    category: str | None = None
    source: str = ""  # file
    line: int = 0  # line in the file, or index in its JSON array
    meta: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """(instruction, output) for each exchange."""
        return [(self.turns[i][1], self.turns[i + 1][1]) for i in range(0, len(self.turns), 2)]

    def to_json(self) -> dict:
        """The example as OpenAI messages (what ``alaya sft`` writes and reads back losslessly)."""
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": r, "content": c} for r, c in self.turns]
        out: dict = {"messages": messages}
        if self.category:
            out["category"] = self.category
        if self.meta:
            out["meta"] = self.meta
        return out


def detect_format(record: dict) -> str:
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    raise RecordError(f"unknown record format (keys {sorted(record)[:8]}); expected alpaca (instruction/output), "
                      "sharegpt (conversations) or openai (messages)")


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f"{what} is {type(value).__name__}, not a string")
    return value


def _nonempty(value, what: str) -> str:
    if not _text(value, what).strip():
        raise RecordError(f"{what} is empty")
    return value


def _from_alpaca(r: dict) -> tuple[list[tuple[str, str]], str | None]:
    instruction = _nonempty(r.get("instruction"), "field 'instruction'")
    extra = r.get("input")
    if extra is not None and _text(extra, "field 'input'").strip():
        instruction = f"{instruction}\n{extra}"
    output = _nonempty(r.get("output"), "field 'output'")
    turns: list[tuple[str, str]] = []
    history = r.get("history") or []
    if not isinstance(history, list):
        raise RecordError(f"field 'history' is {type(history).__name__}, not a list of [user, assistant] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise RecordError(f"history[{i}] is not a [user, assistant] pair")
        turns += [("user", _nonempty(pair[0], f"history[{i}][0]")), ("assistant", _nonempty(pair[1], f"history[{i}][1]"))]
    turns += [("user", instruction), ("assistant", output)]
    system = r.get("system")
    return turns, (_text(system, "field 'system'") or None) if system is not None else None


def _from_messages(items, key: str, role_key: str, text_key: str, roles: dict | None) -> tuple[list, str | None]:
    if not isinstance(items, list) or not items:
        raise RecordError(f"field '{key}' must be a non-empty list")
    system = None
    turns: list[tuple[str, str]] = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise RecordError(f"{key}[{i}] is {type(m).__name__}, not an object")
        raw_role = m.get(role_key)
        role = roles.get(raw_role) if roles is not None and isinstance(raw_role, str) else raw_role
        if role not in ("system", "user", "assistant"):
            raise RecordError(f"{key}[{i}].{role_key} is {raw_role!r}; expected user, assistant or system")
        text = m.get(text_key)
        if isinstance(text, list):  # OpenAI content parts: keep the text ones
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict) and p.get("type") == "text")
        if role == "system":
            if i != 0:
                raise RecordError(f"{key}[{i}] is a system turn in the middle of the conversation")
            system = _text(text, f"{key}[{i}].{text_key}") or None
            continue
        turns.append((role, _nonempty(text, f"{key}[{i}].{text_key}")))
    return turns, system


def _from_dialogue(items) -> list[tuple[str, str]]:
    if not isinstance(items, list) or len(items) < 2:
        raise RecordError("field 'turns' must be a list of at least two utterances")
    texts = []
    for i, it in enumerate(items):
        if isinstance(it, dict):
            it = next((it[k] for k in ("message", "text", "content", "value") if k in it), None)
        texts.append(_nonempty(it, f"turns[{i}]"))
    if len(texts) % 2:
        texts = texts[:-1]  # the last user utterance has no answer
    return [("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]


def _from_hh(text) -> list[tuple[str, str]]:
    text = _nonempty(text, "field 'chosen'")
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    turns = [("user" if parts[i] == "Human" else "assistant", parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    if not turns:
        raise RecordError("field 'chosen' has no 'Human:' / 'Assistant:' turns")
    for i, (_, t) in enumerate(turns):
        if not t:
            raise RecordError(f"turn {i + 1} of 'chosen' is empty")
    return turns


def example_from_record(record: dict, fmt: str | None = None) -> Example:
    """The record as an :class:`Example`; :class:`RecordError` says why it cannot be one."""
    fmt = fmt or detect_format(record)
    if fmt == "alpaca":
        turns, system = _from_alpaca(record)
    elif fmt == "sharegpt":
        turns, system = _from_messages(record.get("conversations"), "conversations", "from", "value", _SHAREGPT_ROLES)
        if record.get("system") is not None:
            if system is not None:
                raise RecordError("both a 'system' field and a system turn")
            system = _text(record["system"], "field 'system'") or None
    elif fmt == "openai":
        turns, system = _from_messages(record.get("messages"), "messages", "role", "content", None)
    elif fmt == "dialogue":
        turns, system = _from_dialogue(record.get("turns")), None
    elif fmt == "hh":
        turns, system = _from_hh(record.get("chosen")), None
    else:
        raise ValueError(f"unknown SFT format {fmt!r}; known: {', '.join(FORMATS)}")
    if not turns:
        raise RecordError("no user or assistant turn")
    for i, (role, _) in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if role != want:
            raise RecordError(f"turn {i + 1} is {role}, expected {want}: turns must alternate user/assistant, "
                              "starting with the user")
    if turns[-1][0] != "assistant":
        raise RecordError("the conversation ends with a user turn: nothing to learn an answer from")
    category = record.get("category")
    if category is not None and category not in CATEGORIES:
        raise RecordError(f"field 'category' is {category!r}; known: {', '.join(CATEGORIES)}")
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    return Example(turns=turns, system=system, category=category, meta=meta)


def read_examples(paths: Iterable[str], quarantine: Quarantine, fmt: str | None = None,
                  category: str | None = None, fields: dict[str, str] | None = None) -> Iterator[Example]:
    """The examples of every file; ``fmt`` None detects each record's format from its keys.
    ``fields`` renames a set's own keys to the format's (GSM8K: ``{instruction: question, output: answer}``)."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown SFT format {fmt!r}; known: {', '.join(FORMATS)}")
    for path, line, record in read_json_records(paths, quarantine):
        if fields:
            record = {**record, **{ours: record[theirs] for ours, theirs in fields.items() if theirs in record}}
        try:
            ex = example_from_record(record, fmt)
        except RecordError as e:
            quarantine.add(QuarantineRecord(path, line, str(e),
                                            json.dumps(record, ensure_ascii=False).encode("utf-8")))
            continue
        ex.source, ex.line = path, line
        if category is not None and ex.category is None:
            ex.category = category
        yield ex
