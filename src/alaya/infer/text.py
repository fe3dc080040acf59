"""Token ids to text as they come: incremental decoding with stop strings.

Byte-level BPE can split a character over several tokens, so a prefix of the ids may decode to a
trailing U+FFFD that a later token completes; such text is held back. Text that could be the start of a
stop string is held back too, so a streamed reply never shows part of a stop string.
"""
from __future__ import annotations

from typing import Sequence

from alaya.tokenizer import AlayaTokenizer


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class TextStream:
    def __init__(self, tokenizer: AlayaTokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""  # all text decoded so far, cut at a stop string once one is seen
        self.sent = 0  # characters of self.text already handed out
        self.stopped = False

    def _held_back(self, text: str) -> int:
        hold = 0
        for s in self.stop_strings:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        return hold

    def push(self, token_id: int) -> str:
        """Add a token; return the new text that is certain (may be empty)."""
        if self.stopped:
            return ""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        text, hit = cut_at_stop(text, self.stop_strings)
        self.text = text
        if hit:
            self.stopped = True
            return self.flush()
        if text.endswith("\ufffd"):
            return ""
        safe = len(text) - self._held_back(text)
        if safe <= self.sent:
            return ""
        new = text[self.sent : safe]
        self.sent = safe
        return new

    def flush(self) -> str:
        """Whatever is still held back (at the end of generation)."""
        new = self.text[self.sent :]
        self.sent = len(self.text)
        return new


class ReplyFilter:
    """Drops the ``### Output:\\t\\n`` flag the model writes before its reply, from a stream of text pieces.

    The published api.py strips it with ``str.lstrip(flag)``, which also eats any reply that starts with
    one of the flag's characters (``Output is ...`` loses ``Outp``); here exactly the flag is removed.
    """

    def __init__(self, flag: str):
        self.flag = flag
        self.buf = ""
        self.decided = False

    def feed(self, piece: str) -> str:
        if self.decided:
            return piece
        self.buf += piece
        if self.buf.startswith(self.flag):
            self.decided = True
            return self.buf[len(self.flag):]
        if self.flag.startswith(self.buf):
            return ""  # could still become the flag
        self.decided = True
        return self.buf

    def flush(self) -> str:
        if self.decided:
            return ""
        self.decided = True
        return "" if self.flag.startswith(self.buf) else self.buf
