"""Reading the benchmark files as they ship (../shared/data or a user's copy): CSV inside zip archives or
folders, JSONL, JSON, TSV. Every value stays a string ("0.50" stays "0.50"); a missing file, a wrong
header or a malformed line is one :class:`EvalDataError` naming the file (and line)."""
from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Iterator

from alaya.data.documents import Quarantine, read_json_records


class EvalDataError(ValueError):
    """A benchmark file that is missing or not in the expected layout."""


def default_data_dir() -> Path:
    """``$ALAYA_DATA``, else ``../shared/data`` (the project's real data sets beside a checkout)."""
    return Path(os.environ.get("ALAYA_DATA") or "../shared/data")


def need_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise EvalDataError(f"{path}: not found ({what}); pass --data-dir or set ALAYA_DATA to the folder that "
                            f"holds the benchmark sets")
    return path


class CsvTree:
    """CSV files of a benchmark in a zip archive or in a folder, addressed by their path inside it."""

    def __init__(self, path: Path, what: str):
        self.path = need_file(path, what)
        self.zip = zipfile.ZipFile(path) if path.is_file() else None

    def names(self) -> list[str]:
        if self.zip is not None:
            return sorted(n for n in self.zip.namelist() if n.endswith(".csv"))
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*.csv"))

    def where(self, name: str) -> str:
        return f"{self.path}:{name}" if self.zip is not None else str(self.path / name)

    def records(self, name: str) -> list[tuple[int, list[str]]]:
        """(line, fields) of every non-empty row, all strings as written: "0.50" stays "0.50", NA stays NA."""
        text = self._read(name, self.where(name))
        return [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1) if row]

    def rows(self, name: str, header: list[str]) -> list[dict[str, str]]:
        """Rows as dicts keyed by the lower-cased header, which must hold the columns ``header``
        (case-insensitive; an unnamed first column, a pandas index, is called ``_index``)."""
        records = self.records(name)
        if not records:
            raise EvalDataError(f"{self.where(name)}: empty file")
        cols = [c.strip() for c in records[0][1]]
        keys = [c.lower() for c in cols]
        if keys[0] in ("", "unnamed: 0"):
            keys[0] = "_index"
        missing = [h for h in header if h.lower() not in keys]
        if missing:
            raise EvalDataError(f"{self.where(name)}: the header {cols} lacks the columns {missing}")
        return self._named(name, records[1:], keys, "the header has")

    def rows_without_header(self, name: str, columns: list[str]) -> list[dict[str, str]]:
        return self._named(name, self.records(name), columns, "expected")

    def _named(self, name: str, records, keys: list[str], expectation: str) -> list[dict[str, str]]:
        out = []
        for n, row in records:
            if len(row) != len(keys):
                raise EvalDataError(f"{self.where(name)}:{n}: {len(row)} columns, {expectation} {len(keys)}")
            out.append(dict(zip(keys, row)))
        return out

    def _read(self, name: str, where: str) -> str:
        try:
            raw = self.zip.read(name) if self.zip is not None else (self.path / name).read_bytes()
        except (KeyError, FileNotFoundError):
            raise EvalDataError(f"{where}: not found") from None
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise EvalDataError(f"{where}: not UTF-8 ({e})") from None


def json_lines(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line, object) of a JSONL file (whatever its suffix: LogiQA's are .txt) or of a JSON array of
    objects, through the data room's one record reader; a malformed record is an error naming its line."""
    need_file(path, what)
    q = Quarantine()
    yield from ((n, obj) for _, n, obj in read_json_records([str(path)], q, any_suffix=True))
    if q.count:
        r = q.records[0]
        raise EvalDataError(f"{r.file}:{r.line}: {r.reason} ({q.count} malformed records in all)")


def json_file(path: Path, what: str):
    need_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalDataError(f"{path}: not valid JSON ({e})") from None


def tsv_rows(path: Path, what: str, columns: int) -> list[tuple[int, list[str]]]:
    need_file(path, what)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != columns:
            raise EvalDataError(f"{path}:{n}: {len(parts)} tab-separated fields, expected {columns}")
        out.append((n, parts))
    return out


def field(obj: dict, key: str, where: str, kind=str):
    if key not in obj:
        raise EvalDataError(f"{where}: missing field {key!r}")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise EvalDataError(f"{where}: field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value
