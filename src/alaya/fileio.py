"""Atomic file writes, the one way every room writes a file that a crash must never leave half-written.

A file is written to a hidden sibling (``.NAME.tmp-PID``), flushed to disk and renamed over the target, so
a reader sees the old file or the whole new one, never a torn one. A folder is written the same way
(:func:`atomic_folder`).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give ``path`` (and all below it) the modes a plain ``open``/``mkdir`` would have given: temporaries
    from ``mkdtemp`` are 0700, and some writers (safetensors) create 0600 files, which would leave a model
    folder unreadable to another user, a container's non-root account or a serving engine."""
    mask = current_umask()
    path = Path(path)
    todo = [path]
    while todo:
        p = todo.pop()
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, 0o777 & ~mask)
            todo.extend(p.iterdir())
        else:
            os.chmod(p, 0o666 & ~mask)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


def atomic_folder(final: str | Path) -> "_AtomicFolder":
    """Write into a hidden sibling folder, then rename it into place: a crash never leaves a folder at
    ``final`` that looks complete. An existing folder at ``final`` is replaced only once the new one is whole."""
    return _AtomicFolder(Path(final))


class _AtomicFolder:
    def __init__(self, final: Path):
        self.final = final

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.tmp-", dir=self.final.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        for f in self.tmp.iterdir():  # data on disk before the rename makes it visible
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        follow_umask(self.tmp)
        old = None
        if self.final.exists():
            old = self.final.with_name(f".{self.final.name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
