"""Multi-turn chat in the published format: prompt building with history trimmed by tokens, streamed replies,
and the ``alaya chat`` REPL (``/reset``, ``/system TEXT``, ``/exit``; a terminal or piped input).

History is the published api.py's: a flat list alternating user and assistant turns, oldest first. When
the prompt does not fit the context next to the tokens to be generated, the oldest turns go first (a
user/assistant pair at a time); a single instruction that is still too long is left-truncated by tokens.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Iterator, Sequence, TextIO

from alaya.infer.backends import as_backend
from alaya.infer.generate import BatchDecoder, GenerationConfig
from alaya.infer.text import StreamedText
from alaya.prompt import check_history, format_prompt
from alaya.tokenizer import AlayaTokenizer


@dataclass
class Prompt:
    text: str
    ids: list[int]
    dropped_turns: int = 0  # history items left out to fit the context
    truncated: bool = False


def build_prompt(
    tok: AlayaTokenizer,
    instruction: str,
    history: Sequence[str],
    context: int,
    max_new_tokens: int,
    system: str | None = None,
) -> Prompt:
    """The prompt for ``instruction`` after ``history``, trimmed so prompt + max_new_tokens fits."""
    budget = context - max_new_tokens
    if budget < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in a {context}-token context")
    check_history(history)
    for drop in range(0, len(history) + 1, 2):
        text = format_prompt(instruction, history[drop:], system)
        ids = tok.encode(text)
        if len(ids) <= budget:
            return Prompt(text, ids, drop)
    return Prompt(tok.decode(ids[-budget:]), ids[-budget:], len(history), truncated=True)


def reply_stream(model, tok: AlayaTokenizer, prompt: Prompt, gen: GenerationConfig) -> Iterator[str]:
    """Pieces of the reply as they are generated: without the output flag, cut before a new turn."""
    decoder = BatchDecoder(model, [prompt.ids], gen)
    for _, piece in StreamedText(decoder, tok, strip_flag=True):
        yield piece


def clean_reply(text: str) -> str:
    """What goes into the history: the reply without the published format's trailing ' </s>' or whitespace."""
    text = text.rstrip()
    return text[: -len("</s>")].rstrip() if text.endswith("</s>") else text


@dataclass
class Reply:
    text: str  # as a chat user sees it: no output flag, cut before a new turn, no trailing ' </s>'
    stopped: bool  # the model ended it with </s> before the token limit


def chat_replies(model, tok: AlayaTokenizer, prompts: Sequence[str], max_new_tokens: int = 48,
                 batch_size: int = 8) -> list[Reply]:
    """Greedy single-turn replies to ``prompts``, ``batch_size`` at a time (left-padded batches give each row
    what it gets alone): what ``alaya chat`` answers, for evaluation (``alaya eval`` identity / refusal /
    over_refusal) and the samples an SFT run logs."""
    gen = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    backend = as_backend(model)
    out: list[Reply] = []
    for start in range(0, len(prompts), batch_size):
        ids = [build_prompt(tok, p, [], backend.model.config.max_seq_len, max_new_tokens).ids
               for p in prompts[start: start + batch_size]]
        decoder = BatchDecoder(backend, ids, gen)
        text = StreamedText(decoder, tok, strip_flag=True)
        pieces: list[list[str]] = [[] for _ in ids]
        for row, piece in text:
            pieces[row].append(piece)
        for row in range(len(ids)):
            ended = decoder.finish_reason[row] == "stop" and not text.streams[row].stopped
            out.append(Reply(clean_reply("".join(pieces[row])), ended))
    return out


@dataclass
class ChatSession:
    backend: object  # a decoding backend (alaya.infer.backends) or a bare model
    tok: AlayaTokenizer
    gen: GenerationConfig
    system: str | None = None
    history: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.backend = as_backend(self.backend)

    @property
    def context(self) -> int:
        return self.backend.model.config.max_seq_len

    @property
    def max_new_tokens(self) -> int:
        # leave at least half of the context to the conversation
        return min(self.gen.max_new_tokens, self.context // 2)

    def ask(self, instruction: str) -> Iterator[str]:
        prompt = build_prompt(self.tok, instruction, self.history, self.context,
                              self.max_new_tokens, self.system)
        if prompt.dropped_turns:
            self.history = self.history[prompt.dropped_turns:]
        pieces = []
        for piece in reply_stream(self.backend, self.tok, prompt, self.gen.with_(max_new_tokens=self.max_new_tokens)):
            pieces.append(piece)
            yield piece
        self.history += [instruction, clean_reply("".join(pieces))]

    def reset(self) -> None:
        self.history = []


HELP = "commands: /reset (forget the conversation), /system TEXT (set the system text; empty clears), /exit"


def repl(session: ChatSession, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    interactive = stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history in a terminal)
        except ImportError:
            pass
        print(f"Alaya chat. {HELP}", file=stdout, flush=True)
    while True:
        try:
            line = input("you> ") if interactive and stdin is sys.stdin else _read_line(stdin, stdout, interactive)
        except EOFError:
            break
        except KeyboardInterrupt:
            print(file=stdout)
            continue
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            cmd, _, arg = line.partition(" ")
            if cmd in ("/exit", "/quit"):
                break
            if cmd == "/reset":
                session.reset()
                print("(conversation cleared)", file=stdout, flush=True)
            elif cmd == "/system":
                session.system = arg.strip() or None
                print(f"(system text {'set' if session.system else 'cleared'})", file=stdout, flush=True)
            else:
                print(f"(unknown command {cmd}; {HELP})", file=stdout, flush=True)
            continue
        if interactive:  # piped: one reply a line, no prompts
            print("alaya> ", end="", file=stdout, flush=True)
        try:
            for piece in session.ask(line):
                print(piece, end="", file=stdout, flush=True)
        except KeyboardInterrupt:  # Ctrl-C stops the reply, not the chat
            print(" (stopped)", end="", file=stdout)
        print(file=stdout, flush=True)
    return 0


def _read_line(stdin: TextIO, stdout: TextIO, interactive: bool) -> str:
    if interactive:
        print("you> ", end="", file=stdout, flush=True)
    line = stdin.readline()
    if not line:
        raise EOFError
    return line
