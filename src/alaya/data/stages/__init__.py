"""Curation stages, one module each; :func:`build_stage` makes one from its config entry."""
from __future__ import annotations

from typing import Any


def stage_classes() -> dict[str, type]:
    from alaya.data.stages.doctype import TypeStage
    from alaya.data.stages.heuristics import HeuristicFilter
    from alaya.data.stages.language import LanguageStage
    from alaya.data.stages.normalize import Normalize
    from alaya.data.stages.quality import QualityStage
    from alaya.data.dedup.stage import ExactDedup, FuzzyDedup

    return {c.name: c for c in (Normalize, LanguageStage, HeuristicFilter, QualityStage, ExactDedup, FuzzyDedup, TypeStage)}


def build_stage(entry: dict[str, Any] | str):
    """``{"stage": NAME, ...params}`` (or just NAME) → a stage object; unknown names and params are named."""
    if isinstance(entry, str):
        entry = {"stage": entry}
    if not isinstance(entry, dict) or "stage" not in entry:
        raise ValueError(f"a pipeline entry needs a 'stage' key, got {entry!r}")
    params = {k: v for k, v in entry.items() if k != "stage"}
    classes = stage_classes()
    name = entry["stage"]
    if name not in classes:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(classes)}")
    try:
        return classes[name](**params)
    except TypeError as e:
        raise ValueError(f"stage {name!r}: {e}") from None
