from __future__ import annotations

from alaya.data.documents import Document


class DocumentStage:
    """A stage that decides one document at a time: ``apply`` returns (document, None) to keep it,
    possibly changed, or (None, reason) to remove it. ``setup`` runs once per worker (load models)."""

    name = "stage"

    def setup(self) -> None:
        pass

    def apply(self, doc: Document) -> tuple[Document | None, str | None]:
        raise NotImplementedError


class CorpusStage:
    """A stage that must see the whole corpus (deduplication): ``run`` takes the engine, the input shards and
    the stage folder, does its own phases as engine tasks and returns the manifest (``finish_stage``). The
    engine knows the two protocols: this one, and :class:`DocumentStage`'s one document at a time."""

    name = "corpus_stage"

    def run(self, engine, inputs: list[str], out) -> dict:
        raise NotImplementedError
