"""Reading a YAML config file and ``key.sub=value`` overrides: one place for the checks every config loader needs."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import yaml


class ConfigError(ValueError):
    pass


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``key.sub=value`` -> (["key", "sub"], value read as YAML; 3e-4 is a number)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': bad key '{key}'")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML: {e}") from None
    if isinstance(parsed, str) and _FLOAT.fullmatch(parsed.strip()):
        parsed = float(parsed)  # YAML 1.1 reads 3e-4 (no dot) as a string
    return key.split("."), parsed


def nested_overrides(texts: Iterable[str]) -> dict[str, Any]:
    """``["gopher.min_words=50", "c4.enabled=false"]`` -> ``{"gopher": {"min_words": 50}, "c4": {"enabled": False}}``."""
    out: dict[str, Any] = {}
    for text in texts:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is already set to a value")
        node[keys[-1]] = value
    return out


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
