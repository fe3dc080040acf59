"""Embedded default data: a corpus every install has, with no download (``builtin:demo``).

``demo`` is three parts, in a fixed order:
- ``bilingual.jsonl``: parallel English/Chinese paragraphs of every document type (news, encyclopedia,
  books, forum, academic, others) and a few dialogues in the seed's prompt format, written for Alaya;
- English: the docstrings of the Python standard library's modules, classes and functions;
- code: the source of the standard library's top-level modules.
The standard-library parts are read from the running interpreter, so they differ slightly between
Python versions; within one interpreter the corpus is the same on every run.
"""
from __future__ import annotations

import ast
import json
import sysconfig
from importlib import resources
from pathlib import Path
from typing import Iterator

from alaya.data.documents import Document

BUILTIN_CORPORA = ("demo", "demo-bilingual")
_STDLIB_CODE_BYTES = 3_000_000  # about 3 MB of source keeps the demo corpus quick to train on
_SKIP = {"__phello__", "antigravity", "this", "_pydecimal", "pydoc_data"}


def builtin_documents(name: str) -> Iterator[Document]:
    if name not in BUILTIN_CORPORA:
        raise FileNotFoundError(f"unknown built-in corpus 'builtin:{name}'; known: {', '.join('builtin:' + n for n in BUILTIN_CORPORA)}")
    yield from _bilingual()
    if name == "demo":
        files = _stdlib_files()
        for path in files:
            yield from _docstrings(path)
        for path in files:
            text = path.read_text(encoding="utf-8", errors="replace")
            yield Document(f"stdlib/{path.name}", text, {"lang": "code", "type": "code", "source": "python-stdlib"})


def _bilingual() -> Iterator[Document]:
    text = resources.files(__name__).joinpath("bilingual.jsonl").read_text(encoding="utf-8")
    for line in text.splitlines():
        obj = json.loads(line)
        yield Document(obj["id"], obj["text"], obj["meta"])


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files, size = [], 0
    for path in sorted(root.glob("*.py")):
        if path.stem in _SKIP or path.stem.startswith("test"):
            continue
        n = path.stat().st_size
        if size + n > _STDLIB_CODE_BYTES:
            continue
        files.append(path)
        size += n
    return files


def _docstrings(path: Path) -> Iterator[Document]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:
        return
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 40:
                parts.append(doc)
    if parts:
        yield Document(f"stdlib-doc/{path.stem}", "\n\n".join(parts), {"lang": "en", "type": "others", "source": "python-stdlib"})
