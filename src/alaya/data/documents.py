"""Documents and the one reader of corpus files.

A document is ``{"id", "text", "meta"}`` (docs/design.md, "Contracts"). ``read_documents`` streams them from JSONL
(plain, .gz, .zst), Parquet, plain text and ``builtin:demo``, never holding a whole file in memory.
Malformed input never stops a run and is never dropped silently: each bad record goes to the
``Quarantine`` given, with file, line, reason and the raw bytes.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from alaya.data.record import Document

BUILTIN_PREFIX = "builtin:"
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt", ".md", ".txt.gz")
MAX_LINE_BYTES = 64 * 1024 * 1024  # a longer line is quarantined, not read into memory
RAW_KEEP_BYTES = 4096  # how much of a bad line the quarantine keeps
DEFAULT_SHARD_MB = 64  # a plain JSONL input above 1.5 × this is read as line-aligned ranges (plan_shards)


@dataclass
class QuarantineRecord:
    file: str
    line: int
    reason: str
    raw: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "reason": self.reason,
                "raw": self.raw[:RAW_KEEP_BYTES].decode("utf-8", "backslashreplace")}


class Quarantine:
    """Collects malformed records; by default it keeps them in memory and counts them."""

    def __init__(self, sink: Callable[[QuarantineRecord], None] | None = None):
        self.count = 0
        self.records: list[QuarantineRecord] = []
        self._sink = sink

    def add(self, record: QuarantineRecord) -> None:
        self.count += 1
        if self._sink is not None:
            self._sink(record)
        else:
            self.records.append(record)


def stable_id(source: str, line: int) -> str:
    """The id of a document that came without one: a hash of its source file and line."""
    return hashlib.sha1(f"{source}:{line}".encode("utf-8")).hexdigest()[:20]


def json_error(e: json.JSONDecodeError, line: bool = False) -> str:
    """json's message with its position as one phrase: 'Unterminated string starting at column 5' (json's
    own ``msg`` ends in 'at' and leaves the position to ``str(e)``)."""
    where = f"line {e.lineno} column {e.colno}" if line else f"column {e.colno}"
    return f"{e.msg} {where}" if e.msg.endswith(" at") else f"{e.msg} at {where}"


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone (blake2b), the same on every machine and run."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")
    return h / 2**64


def is_heldout(key: str, fraction: float) -> bool:
    """The project's one held-out rule: :func:`stable_fraction` of a key below ``fraction``. Keys: the document
    id (the tokenizer's statistics and the token shards' held-out split use the same documents), an SFT
    record's ``file name:line``, a red-team prompt's text."""
    return fraction > 0 and stable_fraction(key) < fraction


def expand_paths(paths: Iterable[str | Path]) -> list[str]:
    """Files named, globbed or found under folders (sorted), plus ``builtin:NAME`` entries as they are."""
    out: list[str] = []
    for p in paths:
        p = str(p)
        if p.startswith(BUILTIN_PREFIX):
            out.append(p)
            continue
        if any(ch in p for ch in "*?["):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches the pattern '{p}'")
            out.extend(m for m in matches if Path(m).is_file())
        elif Path(p).is_dir():
            found = sorted(
                str(f) for f in Path(p).rglob("*")
                if f.is_file() and f.name.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES)
            )
            if not found:
                raise FileNotFoundError(f"folder '{p}' holds no JSONL, Parquet or text files")
            out.extend(found)
        elif Path(p).is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"input '{p}' does not exist")
    return out


@dataclass(frozen=True)
class FileRange:
    """The lines of a plain JSONL file that start in bytes [start, end); ``start`` is a line start and
    ``first_line`` the (1-based) number of that line, so ids and quarantine records are those of the whole
    file. A large file is read as several ranges so that several processes share it."""

    path: str
    start: int
    end: int
    first_line: int

    def __str__(self) -> str:
        return f"{self.path} (bytes {self.start}-{self.end})"


def _splittable(path: str) -> bool:
    return (not path.startswith(BUILTIN_PREFIX) and not path.endswith((".gz", ".zst"))
            and not path.endswith(PARQUET_SUFFIXES + TEXT_SUFFIXES))


def plan_shards(paths: Iterable[str], shard_bytes: int) -> list[str | FileRange]:
    """The inputs as shard tasks: a plain JSONL file larger than 1.5 × ``shard_bytes`` becomes ranges of
    about ``shard_bytes`` cut at line starts (one sequential pass counts the lines before each cut);
    everything else stays one shard per file. The plan depends only on the files and ``shard_bytes``."""
    if shard_bytes < 1:
        raise ValueError(f"shard_bytes must be positive, got {shard_bytes}")
    out: list[str | FileRange] = []
    for path in paths:
        path = str(path)
        if not _splittable(path) or os.path.getsize(path) <= 1.5 * shard_bytes:
            out.append(path)
            continue
        with open(path, "rb") as f:
            if _is_binary(f.read(8192)):
                out.append(path)  # quarantined whole, once
                continue
        out.extend(_split_file(path, shard_bytes))
    return out


def _split_file(path: str, shard_bytes: int, block_bytes: int = 1 << 24) -> list[FileRange]:
    size = os.path.getsize(path)
    ranges: list[FileRange] = []
    start, first_line = 0, 1
    pos, newlines = 0, 0  # bytes read so far and the newlines among them
    cut = shard_bytes  # the next range starts at the first line start at or after this offset
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            while cut < pos + len(block):
                i = block.find(b"\n", max(0, cut - pos - 1))
                if i < 0:
                    break  # the line crossing the cut ends in a later block
                boundary = pos + i + 1
                if boundary >= size:
                    cut = size  # the file's last line: no range after it
                    break
                ranges.append(FileRange(path, start, boundary, first_line))
                start, first_line = boundary, newlines + block.count(b"\n", 0, i + 1) + 1
                cut = boundary + shard_bytes
            newlines += block.count(b"\n")
            pos += len(block)
    ranges.append(FileRange(path, start, size, first_line))
    return ranges


def read_documents(
    paths: Iterable[str | Path | FileRange],
    quarantine: Quarantine | None = None,
    text_field: str = "text",
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[Document]:
    """Stream the documents of every input; bad records go to ``quarantine`` (a fresh one if None)."""
    quarantine = quarantine if quarantine is not None else Quarantine()
    for item in paths:
        if isinstance(item, FileRange):
            yield from _read_jsonl(item.path, quarantine, text_field, max_line_bytes, item.start, item.end,
                                   item.first_line)
            continue
        for path in expand_paths([item]):
            if path.startswith(BUILTIN_PREFIX):
                from alaya.data.builtin import builtin_documents

                yield from builtin_documents(path[len(BUILTIN_PREFIX):])
            elif path.endswith(PARQUET_SUFFIXES):
                yield from _read_parquet(path, quarantine, text_field)
            elif path.endswith(TEXT_SUFFIXES):
                yield from _read_text(path, quarantine)
            else:  # JSONL is the default for any other name
                yield from _read_jsonl(path, quarantine, text_field, max_line_bytes)


def read_texts(paths: Iterable[str | Path], quarantine: Quarantine | None = None) -> Iterator[str]:
    for doc in read_documents(paths, quarantine):
        yield doc.text


def _open_binary(path: str) -> BinaryIO:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise ImportError(f"{path}: reading .zst files needs the 'zstandard' package (pip install zstandard)") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _is_binary(head: bytes) -> bool:
    return b"\x00" in head


def _lines(f: BinaryIO, max_line_bytes: int, first_line: int = 1,
           limit: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each line (the lines that start within ``limit`` bytes, if given); bytes
    is None for a line longer than max_line_bytes, which is skipped in chunks so it never sits whole in
    memory."""
    n, consumed = first_line - 1, 0
    while limit is None or consumed < limit:
        chunk = f.readline(max_line_bytes + 1)
        if not chunk:
            return
        n += 1
        consumed += len(chunk)
        if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = f.readline(max_line_bytes)
                consumed += len(chunk)
            yield n, None
            continue
        yield n, chunk


def _jsonl_objects(path: str, q: Quarantine, max_line_bytes: int, start: int = 0, end: int | None = None,
                   first_line: int = 1) -> Iterator[tuple[int, dict, bytes]]:
    """(line number, object, raw bytes) for each JSON-object line; bad lines go to ``q``."""
    try:
        f = _open_binary(path)
        if start:
            f.seek(start)
        head = f.peek(8192)[:8192] if hasattr(f, "peek") else b""
    except OSError as e:
        q.add(QuarantineRecord(path, 0, f"cannot open file: {e}"))
        return
    with f:
        if start == 0 and not head:
            q.add(QuarantineRecord(path, 0, "empty file"))
            return
        if start == 0 and _is_binary(head):  # a later range of a split file: bad lines are caught one by one
            q.add(QuarantineRecord(path, 0, "binary file (NUL bytes), not JSONL", head[:256]))
            return
        try:
            limit = None if end is None else end - start
            for n, raw in _lines(f, max_line_bytes, first_line, limit):
                if raw is None:
                    q.add(QuarantineRecord(path, n, f"line longer than {max_line_bytes} bytes"))
                    continue
                if not raw.strip():
                    continue  # blank lines separate nothing and hold nothing
                obj = _parse_json_object(path, n, raw, q)
                if obj is not None:
                    yield n, obj, raw
        except (OSError, EOFError) as e:  # truncated .gz / .zst
            q.add(QuarantineRecord(path, -1, f"file ends early or is corrupt: {e}"))


def _read_jsonl(path: str, q: Quarantine, text_field: str, max_line_bytes: int, start: int = 0,
                end: int | None = None, first_line: int = 1) -> Iterator[Document]:
    for n, obj, raw in _jsonl_objects(path, q, max_line_bytes, start, end, first_line):
        doc = _document(path, n, obj, raw, q, text_field)
        if doc is not None:
            yield doc


def _parse_json_object(path: str, n: int, raw: bytes, q: Quarantine) -> dict | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        q.add(QuarantineRecord(path, n, f"invalid UTF-8 at byte {e.start}", raw))
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        q.add(QuarantineRecord(path, n, f"invalid JSON: {json_error(e)}", raw))
        return None
    if not isinstance(obj, dict):
        q.add(QuarantineRecord(path, n, f"expected a JSON object, got {type(obj).__name__}", raw))
        return None
    return obj


def _document(path: str, n: int, obj: dict, raw: bytes, q: Quarantine, text_field: str) -> Document | None:
    text = obj.get(text_field)
    if text is None:
        q.add(QuarantineRecord(path, n, f"missing field '{text_field}'", raw))
        return None
    if not isinstance(text, str):
        q.add(QuarantineRecord(path, n, f"field '{text_field}' is {type(text).__name__}, not a string", raw))
        return None
    doc_id = obj.get("id")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return Document(str(doc_id) if doc_id is not None else stable_id(path, n), text, meta)


def read_json_records(paths: Iterable[str | Path], quarantine: Quarantine | None = None,
                      max_line_bytes: int = MAX_LINE_BYTES, any_suffix: bool = False) -> Iterator[tuple[str, int, dict]]:
    """(file, line or 1-based array index, object) of every JSON object in JSONL files (plain, .gz, .zst)
    and in files holding one JSON array of objects (``[{...}, ...]``, as Alpaca-style sets ship);
    bad records go to ``quarantine`` with their place. The reader of records that are not documents.
    ``any_suffix``: read a ``.txt`` file as JSONL too (benchmarks such as LogiQA ship JSONL so named)."""
    quarantine = quarantine if quarantine is not None else Quarantine()
    for path in expand_paths(paths):
        if path.startswith(BUILTIN_PREFIX) or (path.endswith(PARQUET_SUFFIXES + TEXT_SUFFIXES) and not any_suffix):
            raise ValueError(f"{path}: expected a JSON or JSONL file of records")
        try:
            with _open_binary(path) as f:
                head = f.peek(8192)[:8192] if hasattr(f, "peek") else b""
        except OSError as e:
            quarantine.add(QuarantineRecord(path, 0, f"cannot open file: {e}"))
            continue
        if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            yield from _json_array_objects(path, quarantine)
        else:
            for n, obj, _ in _jsonl_objects(path, quarantine, max_line_bytes):
                yield path, n, obj


def _json_array_objects(path: str, q: Quarantine) -> Iterator[tuple[str, int, dict]]:
    try:
        with _open_binary(path) as f:
            raw = f.read()
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        q.add(QuarantineRecord(path, 0, f"invalid UTF-8 at byte {e.start}"))
        return
    except json.JSONDecodeError as e:
        q.add(QuarantineRecord(path, e.lineno, f"invalid JSON: {json_error(e, line=True)}"))
        return
    except (OSError, EOFError) as e:
        q.add(QuarantineRecord(path, -1, f"file ends early or is corrupt: {e}"))
        return
    if not isinstance(data, list):
        q.add(QuarantineRecord(path, 0, f"expected a JSON array of objects, got {type(data).__name__}"))
        return
    for i, obj in enumerate(data, 1):
        if isinstance(obj, dict):
            yield path, i, obj
        else:
            q.add(QuarantineRecord(path, i, f"item {i} of the array is {type(obj).__name__}, not an object",
                                   json.dumps(obj, ensure_ascii=False)[:RAW_KEEP_BYTES].encode()))


def _read_parquet(path: str, q: Quarantine, text_field: str) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"{path}: reading Parquet needs the 'pyarrow' package (pip install pyarrow)") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-Parquet files
        q.add(QuarantineRecord(path, 0, f"not a readable Parquet file: {e}"))
        return
    if text_field not in pf.schema_arrow.names:
        q.add(QuarantineRecord(path, 0, f"no column '{text_field}' (columns: {pf.schema_arrow.names})"))
        return
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        cols = batch.to_pydict()
        for i in range(batch.num_rows):
            row += 1
            text = cols[text_field][i]
            if not isinstance(text, str):
                q.add(QuarantineRecord(path, row, f"field '{text_field}' is {type(text).__name__}, not a string"))
                continue
            doc_id = cols["id"][i] if "id" in cols else None
            meta = cols["meta"][i] if "meta" in cols and isinstance(cols["meta"][i], dict) else {}
            yield Document(str(doc_id) if doc_id is not None else stable_id(path, row), text, meta)


TEXT_DOC_BYTES = 64 * 1024


def _read_text(path: str, q: Quarantine) -> Iterator[Document]:
    """Plain text: paragraphs (blank-line separated) grouped into documents of about 64 KB."""
    with _open_binary(path) as f:
        head = f.peek(8192)[:8192] if hasattr(f, "peek") else b""
        if not head:
            q.add(QuarantineRecord(path, 0, "empty file"))
            return
        if _is_binary(head):
            q.add(QuarantineRecord(path, 0, "binary file (NUL bytes), not text", head[:256]))
            return
        buf: list[str] = []
        size, start = 0, 1
        for n, raw in _lines(f, MAX_LINE_BYTES):
            if raw is None:
                q.add(QuarantineRecord(path, n, f"line longer than {MAX_LINE_BYTES} bytes"))
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                q.add(QuarantineRecord(path, n, f"invalid UTF-8 at byte {e.start}", raw))
                continue
            if not buf:
                start = n
            buf.append(line)
            size += len(raw)
            if size >= TEXT_DOC_BYTES and not line.strip():
                yield Document(stable_id(path, start), "".join(buf), {"source": path})
                buf, size = [], 0
        if buf and "".join(buf).strip():
            yield Document(stable_id(path, start), "".join(buf), {"source": path})
