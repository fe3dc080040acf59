from __future__ import annotations

from alaya.data.documents import Document


class DocumentStage:
    """A stage that decides one document at a time: ``apply`` returns (document, None) to keep it,
    possibly changed, or (None, reason) to remove it. ``setup`` runs once per worker (load models)."""

    name = "stage"
    per_document = True

    def setup(self) -> None:
        pass

    def apply(self, doc: Document) -> tuple[Document | None, str | None]:
        raise NotImplementedError
