"""The document record every room passes around: ``{"id", "text", "meta"}`` (docs/design.md, "Contracts").
Its own module so that the built-in corpus (alaya.data.builtin) and the reader (alaya.data.documents) both
use it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "meta": self.meta}


def clean_text(text: str) -> str:
    """Replace lone surrogates by U+FFFD (pairs written as two code points become one character): what a
    document's text is before a tokenizer sees it (curation keeps them, JSON allows them)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class TokenCounter:
    """Tokens per text by the tokenizer of a tokenizer folder (its ``tokenizer.json``, the `tokenizers` file
    the tokenizer room writes; counted exactly as :meth:`alaya.tokenizer.AlayaTokenizer.encode` counts), for
    the statistics of curation and mixing. Picklable: the file is read in the process that counts."""

    def __init__(self, folder: str):
        from pathlib import Path

        self.path = str(Path(folder) / "tokenizer.json")
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"{self.path}: not found; a tokenizer folder needs tokenizer.json")
        self._tok = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_tok": None}

    def __call__(self, texts: list[str]) -> list[int]:
        if self._tok is None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(self.path)
        return [len(e.ids) for e in self._tok.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)]
