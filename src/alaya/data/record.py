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
