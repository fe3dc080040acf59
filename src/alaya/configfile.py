"""Reading a YAML config file: one place for the checks every config loader needs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml_mapping(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """The top-level mapping of a YAML file; a missing file, bad YAML or a non-mapping is named with the path."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} not found")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise error(f"{p}: not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise error(f"{p}: the top level must be a mapping of keys")
    return loaded


def settings_changes(old: dict, new: dict, free: set[tuple[str, ...]] = frozenset()) -> list[str]:
    """``key.sub: old -> new`` for every setting that differs (nested mappings compared key by key), except
    the keys in ``free`` (tuples of the key path). The one guard of "a rerun must not change the settings"."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: tuple[str, ...]) -> None:
        if path in free:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(a) + [k for k in b if k not in a]:
                walk(a.get(k), b.get(k), path + (str(k),))
        elif a != b:
            out.append(f"{'.'.join(path)}: {a!r} -> {b!r}")

    walk(old or {}, new or {}, ())
    return out
