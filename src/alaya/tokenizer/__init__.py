"""The Alaya tokenizer: byte-level BPE trained with the ``tokenizers`` library.

Special tokens (docs/design.md, "Contracts"): ``<unk>``=0, ``<s>``=1, ``</s>``=2 (end of text and padding),
``<pad>``=3 (reserved, banned from generation). Digits are split one by one; no normaliser touches the
text, so any string round-trips: ``decode(encode(s)) == clean_text(s)``, where ``clean_text`` only
replaces lone surrogates (which UTF-8 cannot hold) by U+FFFD. The vocabulary has exactly the size
asked: when the corpus runs out of merges first, the rest is filled with ``<|unused_N|>`` entries that
no merge can produce.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from alaya.fileio import write_text_atomic
from alaya.recipe import ALAYA_VOCAB_SIZE
from alaya.prompt import CHAT_TEMPLATE
from alaya.data.record import clean_text

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
TOKENIZER_FILE = "tokenizer.json"
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)
HELDOUT_FRACTION = 0.02  # the share of documents held out, by a stable hash of their id (tokenizer and shards)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet (what ByteLevel vocabularies are written in): character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


_BYTE_OF = _byte_level_alphabet()


class AlayaTokenizer:
    def __init__(self, tokenizer: Tokenizer, model_max_length: int = 2048):
        self.tok = tokenizer
        self.model_max_length = model_max_length
        self.unk_id, self.bos_id, self.eos_id, self.reserved_id = (tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
        self.pad_id = self.eos_id

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(clean_text(text), add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def ends_inside_a_character(self, ids: Sequence[int]) -> bool:
        """Whether the bytes of ``ids`` end with an incomplete UTF-8 character (a lead byte and fewer
        continuation bytes than it announces), which ``decode`` shows as one trailing U+FFFD."""
        tail = b""
        for i in reversed(ids):  # the last 3 bytes are enough
            piece = self.tok.id_to_token(i)
            if piece is None or any(ch not in _BYTE_OF for ch in piece):
                break  # a special token: the text does not end in a byte sequence
            tail = bytes(_BYTE_OF[ch] for ch in piece) + tail
            if len(tail) >= 3:
                break
        for k in range(1, min(3, len(tail)) + 1):
            lead = tail[-k]
            if lead >= 0xC0:
                need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
                return need > k and all(0x80 <= b < 0xC0 for b in tail[len(tail) - k + 1:])
            if lead < 0x80:
                return False
        return False

    # ----------------------------------------------------------------------------------- files
    def save(self, folder: str | Path) -> None:
        """tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / TOKENIZER_FILE, self.tok.to_str(pretty=False))
        special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>",
                   "additional_special_tokens": ["<pad>"]}
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "model_max_length": self.model_max_length,
            "padding_side": "left",
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        }
        write_text_atomic(folder / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        write_text_atomic(folder / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "AlayaTokenizer":
        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; a tokenizer folder needs tokenizer.json")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise ValueError(f"{path}: not a valid tokenizer file: {e}") from None
        for i, t in enumerate(SPECIAL_TOKENS[:3]):
            if tok.token_to_id(t) != i:
                raise ValueError(f"{path}: special token {t} must have id {i}, has {tok.token_to_id(t)}")
        max_len = 2048
        cfg = folder / "tokenizer_config.json"
        if cfg.is_file():
            max_len = int(json.loads(cfg.read_text(encoding="utf-8")).get("model_max_length", max_len))
        return cls(tok, model_max_length=min(max_len, 1 << 30))


def build_untrained(vocab: dict[str, int] | None = None, merges: list | None = None) -> Tokenizer:
    """The tokenizer pipeline: split digits, byte-level pre-tokenisation (GPT-2 regex), BPE, byte decoder."""
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False)
                    if vocab is not None else models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = ALAYA_VOCAB_SIZE,
    min_frequency: int = 2,
    show_progress: bool = True,
    length: int | None = None,
) -> AlayaTokenizer:
    """Train byte-level BPE on ``texts``; the result has exactly ``vocab_size`` tokens."""
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
    tok = build_untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator((clean_text(t) for t in texts), trainer=trainer, length=length)
    tok = _pad_vocab(tok, vocab_size)
    return AlayaTokenizer(tok)


def _pad_vocab(tok: Tokenizer, vocab_size: int) -> Tokenizer:
    """Fill the vocabulary up to exactly vocab_size with entries no merge produces."""
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    n = len(vocab)
    if n < vocab_size:
        for i in range(vocab_size - n):
            vocab[f"<|unused_{i}|>"] = n + i
    data["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    ]
    out = Tokenizer.from_str(json.dumps(data))
    assert out.get_vocab_size(with_added_tokens=True) == vocab_size, (out.get_vocab_size(), vocab_size)
    return out


def train_tokenizer_on_documents(
    inputs: Sequence[str],
    output: str | Path,
    vocab_size: int = ALAYA_VOCAB_SIZE,
    min_frequency: int = 2,
    heldout_fraction: float = HELDOUT_FRACTION,
    progress: bool = True,
    max_length: int | None = None,
) -> dict:
    """The one way the project trains a tokenizer on documents (``alaya tokenizer train``, ``alaya pretrain``
    on raw documents, ``alaya quickstart``): every document that the token shards hold out (a stable hash
    of its id, :func:`alaya.data.documents.is_heldout`) is kept out of training and used to report
    characters per token by language. Writes the folder and ``training_report.json``; returns the report."""
    from tqdm import tqdm

    from alaya.data.documents import Quarantine, expand_paths, is_heldout, read_documents

    files = expand_paths(inputs)  # a missing input fails here, before any work
    quarantine = Quarantine()
    held_out: dict[str, list[str]] = {}
    count = {"documents": 0, "held_out": 0}

    def texts():
        with tqdm(desc="reading", unit=" docs", mininterval=1.0, disable=not progress, leave=False) as bar:
            for doc in read_documents(files, quarantine):
                count["documents"] += 1
                bar.update(1)
                if is_heldout(doc.id, heldout_fraction):
                    count["held_out"] += 1
                    held_out.setdefault(doc.meta.get("lang", "all"), []).append(doc.text)
                    continue
                yield doc.text

    tok = train_tokenizer(texts(), vocab_size=vocab_size, min_frequency=min_frequency, show_progress=progress)
    if max_length:
        tok.model_max_length = max_length
    tok.save(output)
    stats = {lang: round(chars_per_token(tok, t), 3) for lang, t in sorted(held_out.items())}
    report = {"output": str(output), "vocab_size": tok.vocab_size, "documents": count["documents"],
              "held_out_documents": count["held_out"], "heldout_fraction": heldout_fraction,
              "quarantined": quarantine.count,
              "quarantine_examples": [f"{r.file}:{r.line}: {r.reason}" for r in quarantine.records[:10]],
              "chars_per_token_held_out": stats}
    write_text_atomic(Path(output) / "training_report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def chars_per_token(tokenizer: AlayaTokenizer, texts: Iterable[str]) -> float:
    chars = tokens = 0
    for t in texts:
        chars += len(t)
        tokens += len(tokenizer.encode(t))
    return chars / max(tokens, 1)

