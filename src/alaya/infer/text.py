"""Token ids to text as they come: incremental decoding with stop strings.

Byte-level BPE can split a character over several tokens, so a prefix of the ids may decode to a
trailing U+FFFD that a later token completes; such text is held back, and a character still incomplete
when generation ends is dropped (the reply never ends inside a character). Text that could be the start
of a stop string is held back too, so a streamed reply never shows part of a stop string. Control
characters other than newline and tab (a byte-level model can write any byte) never reach the text.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

from alaya.tokenizer import AlayaTokenizer


# C0 and C1 control characters but newline and tab, and DEL
_CONTROLS = dict.fromkeys([c for c in range(32) if c not in (9, 10)] + list(range(127, 160)))


def drop_controls(text: str) -> str:
    """``text`` without control characters other than newline and tab."""
    return text.translate(_CONTROLS)


def cut_at_stop(text: str, stop: Sequence[str], start: int = 0) -> tuple[str, bool]:
    """The text before the first stop string at or after ``start``, and whether one was found."""
    hits = [i for i in (text.find(s, start) for s in stop if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class TextStream:
    """One row's text. ``after``: stop strings are looked for only after this prefix when the text starts
    with it (a chat reply stops at the output flag, but not at the one the model writes first)."""

    def __init__(self, tokenizer: AlayaTokenizer, stop: Sequence[str] = (), after: str = ""):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop if s]
        self.after = after
        self.ids: list[int] = []
        self.text = ""  # all text decoded so far, cut at a stop string once one is seen
        self.sent = 0  # characters of self.text already handed out
        self.stopped = False

    def _search_from(self, text: str) -> int:
        if not self.after:
            return 0
        if text.startswith(self.after):
            return len(self.after)
        return len(text) if self.after.startswith(text) else 0  # still (part of) the prefix: nothing to find

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
        text = drop_controls(self.tokenizer.decode(self.ids))
        text, hit = cut_at_stop(text, self.stop_strings, self._search_from(text))
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
        """Whatever is still held back (at the end of generation), without a character left incomplete."""
        if self.text.endswith("\ufffd") and self.tokenizer.ends_inside_a_character(self.ids):
            self.text = self.text[:-1]
        new = self.text[self.sent :]
        self.sent = len(self.text)
        return new


class ReplyFilter:
    """Drops the ``### Output:\\t\\n`` flag the model writes before its reply, from a stream of text pieces.

    The published api.py strips it with ``str.lstrip(flag)``, which also eats any reply that starts with
    one of the flag's characters (``Output is ...`` loses ``Outp``); here exactly the flag is removed.
    Whitespace is held back until more text follows it, so a reply does not end with the space the format
    puts before ``</s>``.
    """

    def __init__(self, flag: str):
        self.flag = flag
        self.buf = ""
        self.decided = False
        self.spaces = ""  # trailing whitespace held back

    def _hold(self, text: str) -> str:
        text = self.spaces + text
        kept = text.rstrip()
        self.spaces = text[len(kept):]
        return kept

    def feed(self, piece: str) -> str:
        if self.decided:
            return self._hold(piece)
        self.buf += piece
        if self.buf.startswith(self.flag):
            self.decided = True
            return self._hold(self.buf[len(self.flag):])
        if self.flag.startswith(self.buf):
            return ""  # could still become the flag
        self.decided = True
        return self._hold(self.buf)

    def flush(self) -> str:
        """The end of the reply: held whitespace is dropped."""
        if self.decided:
            return ""
        self.decided = True
        return "" if self.flag.startswith(self.buf) else self.buf.rstrip()


class StreamedText:
    """The one way generated tokens become text, for every caller (chat, the server's scheduler, batch
    inference): iterating gives ``(row, piece)`` as each row's text becomes certain; a row stops at its stop
    strings; with ``strip_flag`` (a chat reply) a row's leading ``### Output:\\t\\n`` is removed
    (:class:`ReplyFilter`) and the row also stops where the model writes a new output flag, so the published
    format's markers never reach a reply;
    ``cancelled(row)`` is asked after every step and stops a row (its held-back text is then dropped).
    :meth:`texts` runs to the end and returns each row's whole text, cut at its stop string."""

    def __init__(self, decoder, tokenizer: AlayaTokenizer, strip_flag: Sequence[bool] | bool = False,
                 cancelled: Callable[[int], bool] | None = None):
        from alaya.prompt import OUTPUT_FLAG, OUTPUT_MARKER, TURN_STOP

        rows = len(decoder.cfgs)
        strip = [strip_flag] * rows if isinstance(strip_flag, bool) else list(strip_flag)
        self.decoder, self.tokenizer, self.cancelled = decoder, tokenizer, cancelled
        self.streams = [TextStream(tokenizer, [*cfg.stop, TURN_STOP, OUTPUT_MARKER], after=OUTPUT_FLAG) if s
                        else TextStream(tokenizer, cfg.stop) for cfg, s in zip(decoder.cfgs, strip)]
        self.flags = [ReplyFilter(OUTPUT_FLAG) if s else None for s in strip]

    def _filtered(self, row: int, piece: str) -> str:
        flag = self.flags[row]
        return flag.feed(piece) if flag is not None and piece else piece

    def __iter__(self) -> Iterator[tuple[int, str]]:
        d = self.decoder
        for emitted in d:
            for row, token in emitted:
                piece = self._filtered(row, self.streams[row].push(token))
                if piece:
                    yield row, piece
                if self.streams[row].stopped:
                    d.stop(row)
            if self.cancelled is not None:
                for row in range(len(self.streams)):
                    if d.finish_reason[row] is None and self.cancelled(row):
                        d.stop(row, "cancelled")
        for row, stream in enumerate(self.streams):
            if d.finish_reason[row] == "cancelled":
                continue
            tail = self._filtered(row, stream.flush())
            if self.flags[row] is not None:
                tail += self.flags[row].flush()
            if tail:
                yield row, tail

    def raw_text(self, row: int) -> str:
        """Everything the row generated as text (the flag included), cut at a stop string."""
        return self.streams[row].text

    def texts(self) -> list[str]:
        if not any(s.stop_strings for s in self.streams) and not any(self.flags) and self.cancelled is None:
            for _ in self.decoder:  # nothing to watch while decoding: decode each row once at the end
                pass
            texts = [drop_controls(self.tokenizer.decode(ids)) for ids in self.decoder.tokens]
            return [t[:-1] if t.endswith("\ufffd") and self.tokenizer.ends_inside_a_character(ids) else t
                    for t, ids in zip(texts, self.decoder.tokens)]
        for _ in self:
            pass
        return [self.raw_text(r) for r in range(len(self.streams))]
