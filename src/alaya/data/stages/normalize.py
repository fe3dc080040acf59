"""Normalize: Unicode normalization, control characters and whitespace, configurable."""
from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

from alaya.data.documents import Document
from alaya.data.stages.base import DocumentStage

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")


class Normalize(DocumentStage):
    name = "normalize"

    def __init__(self, form: str | None = "NFC", strip_control: bool = True, collapse_spaces: bool = True,
                 max_blank_lines: int = 1, min_chars: int = 1):
        if form not in (None, "NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(f"form must be NFC, NFKC, NFD, NFKD or null, got {form!r}")
        self.form, self.strip_control, self.collapse_spaces = form, strip_control, collapse_spaces
        self.max_blank_lines, self.min_chars = max_blank_lines, min_chars

    def apply(self, doc: Document):
        text = doc.text.replace("\r\n", "\n").replace("\r", "\n")
        if self.form:
            text = unicodedata.normalize(self.form, text)
        if self.strip_control:
            text = _CONTROL.sub("", text)
        if self.collapse_spaces:
            text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        if self.max_blank_lines is not None:
            text = re.sub(r"\n{%d,}" % (self.max_blank_lines + 2), "\n" * (self.max_blank_lines + 1), text)
        text = text.strip()
        if len(text) < self.min_chars:
            return None, "empty_after_normalize"
        return replace(doc, text=text), None
