"""Screening SFT data: a model and simple signals first, then people (``alaya sft screen``).

Every example gets scores:
- ``ifd``: instruction-following difficulty (Cherry LLM / Superfiltering), loss(answer | question) /
  loss(answer), on the last exchange: near or above 1 means the question does not help predict the answer
  (the pair is incoherent, or the answer is generic).
- ``ppl``: the answer's perplexity given the question.
- ``length_ratio``: answer characters / question characters.
- ``language_match``: a Chinese question answered in Chinese, an English one in English (1 or 0; a
  translation request always matches).
- ``repetition``: the share of the answer's word (English) or character (Chinese) 3-grams that repeat.
- ``translationese``: signals of machine-translated Chinese per 100 characters (Western punctuation inside
  Chinese text, runs of 的, 被 passives, dense pronouns and 一个, untranslated Latin words).

Examples over a threshold are dropped with the reason; the rest are accepted, and a share of them
(``review_share``) waits for people. Outputs in OUT: ``scores.jsonl`` (every example, its scores and
decision), ``dropped.jsonl``, ``accepted.jsonl``, ``review/queue.jsonl``, ``review/queue.csv`` and
``review/label_studio.json`` (Label Studio tasks with the scores as predictions, so reviewers sort by them)
with ``review/label_config.xml``, and ``manifest.json``, where read = quarantined + dropped + accepted +
in review. ``alaya sft screen apply OUT DECISIONS --output FILE`` reads the reviewers' accept / reject
decisions back (our JSONL or CSV, or a Label Studio JSON export) and writes the final set; examples
without a decision stay pending and are listed, never lost.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from alaya.data.documents import Quarantine, json_error, stable_id
from alaya.fileio import write_json_atomic, write_text_atomic
from alaya.prompt import OUTPUT_FORMAT
from alaya.sft.data import collate
from alaya.sft.formats import Example, read_examples
from alaya.sft.template import IGNORE, Encoded, TooLong, encode_example

_CJK = re.compile(r"[\u4e00-\u9fff]")
_TRANSLATE = re.compile(r"translat|翻译|译成|译为", re.I)


@dataclass
class Thresholds:
    max_ifd: float | None = 1.0
    max_ppl: float | None = None
    min_length_ratio: float | None = None
    max_length_ratio: float | None = None
    max_repetition: float | None = 0.5
    max_translationese: float | None = None
    require_language_match: float = 1.0  # 1: drop answers in another language than the question


def cjk_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if _CJK.match(c)) / max(len(letters), 1)


def language_match(question: str, answer: str) -> int:
    if _TRANSLATE.search(question):
        return 1
    return int((cjk_share(question) > 0.3) == (cjk_share(answer) > 0.3))


def repetition(text: str) -> float:
    units = list(text.replace(" ", "")) if cjk_share(text) > 0.3 else text.lower().split()
    grams = [tuple(units[i : i + 3]) for i in range(len(units) - 2)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def translationese(text: str) -> float:
    """Machine-translation signals per 100 characters of Chinese text (0 for text that is not Chinese)."""
    n = len(text)
    if n == 0 or cjk_share(text) < 0.3:
        return 0.0
    signals = len(re.findall(r"[\u4e00-\u9fff][,.;:?!](?=[\u4e00-\u9fff])", text))  # Western punctuation in Chinese
    signals += len(re.findall(r"的[^的，。]{0,6}的[^的，。]{0,6}的", text))  # 的 chains
    signals += text.count("被") + text.count("一个") / 2
    signals += sum(text.count(p) for p in ("他们", "它们", "它的", "他的", "她的")) / 2
    signals += len(re.findall(r"[\u4e00-\u9fff]\s?[A-Za-z]{4,}\s?[\u4e00-\u9fff]", text))  # untranslated words
    return 100.0 * signals / n


def _unconditioned(tok, ex: Example) -> Encoded:
    """The last answer block alone: what loss(answer) is measured on."""
    ids = tok.encode(OUTPUT_FORMAT.format(output=ex.pairs[-1][1]))
    return Encoded([tok.bos_id] + ids, [IGNORE] + ids, ex.category or "general")


def _last_turn(tok, ex: Example, seq_len: int) -> Encoded:
    return encode_example(tok, ex, seq_len, "truncate_turns", last_turn_only=True)


def _mean_losses(model, encs: list[Encoded], pad_id: int, batch_size: int, device) -> list[float]:
    from alaya.train.loop import row_losses

    out: list[float] = []
    for i in range(0, len(encs), batch_size):
        sums, counts = row_losses(model, collate([[e] for e in encs[i : i + batch_size]], pad_id), device)
        out += (sums / counts.clamp(min=1)).tolist()
    return out


def _example_id(ex: Example) -> str:
    return stable_id(ex.source, ex.line)[:16]


def _decide(s: dict, th: Thresholds) -> str | None:
    checks = [("ifd", th.max_ifd, ">"), ("ppl", th.max_ppl, ">"), ("length_ratio", th.min_length_ratio, "<"),
              ("length_ratio", th.max_length_ratio, ">"), ("repetition", th.max_repetition, ">"),
              ("translationese", th.max_translationese, ">")]
    for key, limit, op in checks:
        if limit is None or s.get(key) is None:
            continue
        if (op == ">" and s[key] > limit) or (op == "<" and s[key] < limit):
            return f"{key} {s[key]:.3g} {op} {limit:g}"
    if th.require_language_match and s["language_match"] == 0:
        return "answer not in the question's language"
    return None


def score_examples(model, tok, examples: list[Example], seq_len: int, batch_size: int = 8,
                   progress: bool = True) -> list[dict]:
    """Scores of each example (dicts, in order); an example too long for ``seq_len`` gets ``too_long``."""
    device = model.device
    model.eval()
    rows: list[dict] = []
    cond, uncond, idx = [], [], []
    for k, ex in enumerate(examples):
        q, a = ex.pairs[-1]
        row = {"length_ratio": round(len(a) / max(len(q), 1), 4), "language_match": language_match(q, a),
               "repetition": round(repetition(a), 4), "translationese": round(translationese(a), 4)}
        try:
            c = _last_turn(tok, ex, seq_len)
            u = _unconditioned(tok, ex)
            if len(u) > seq_len:
                raise TooLong(f"{ex.where}: answer longer than {seq_len} tokens")
            cond.append(c)
            uncond.append(u)
            idx.append(k)
        except TooLong as e:
            row["too_long"] = str(e)
        rows.append(row)
    with tqdm(total=2 * len(cond), desc="screen", unit=" passes", disable=not progress) as bar:
        lc = _mean_losses(model, cond, tok.pad_id, batch_size, device)
        bar.update(len(cond))
        lu = _mean_losses(model, uncond, tok.pad_id, batch_size, device)
        bar.update(len(cond))
    for k, a, b in zip(idx, lc, lu):
        rows[k].update(ifd=round(a / b, 4) if b > 0 else None, ppl=round(math.exp(min(a, 50)), 3),
                       loss_conditioned=round(a, 4), loss_answer=round(b, 4))
    return rows


def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


LABEL_CONFIG = """<View>
  <Header value="Instruction"/>
  <Text name="instruction" value="$instruction"/>
  <Header value="Answer"/>
  <Text name="text" value="$output"/>
  <Choices name="decision" toName="text" choice="single" showInLine="true">
    <Choice value="accept"/>
    <Choice value="reject"/>
  </Choices>
</View>
"""


def screen_examples(model_path: str, inputs: list[str], output: str, thresholds: Thresholds | None = None,
                    review_share: float = 1.0, batch_size: int = 8, device: str | None = None,
                    seq_len: int | None = None, fmt: str | None = None, progress: bool = True) -> dict:
    from alaya.model.hf import load_model
    from alaya.tokenizer import AlayaTokenizer

    th = thresholds or Thresholds()
    quarantine = Quarantine()
    examples = list(read_examples(inputs, quarantine, fmt))
    tok = AlayaTokenizer.load(model_path)
    model = load_model(model_path, device=device or ("cuda" if torch.cuda.is_available() else "cpu"), dtype=torch.float32)
    seq_len = seq_len or model.config.max_seq_len
    scores = score_examples(model, tok, examples, seq_len, batch_size, progress)
    out = Path(output)
    records, dropped, accepted, review = [], [], [], []
    for ex, s in zip(examples, scores):
        reason = ("too long: " + s["too_long"]) if "too_long" in s else _decide(s, th)
        rec = {"id": _example_id(ex), "source": ex.where, **ex.to_json(), "scores": s}
        if reason:
            rec["decision"], rec["reason"] = "dropped", reason
            dropped.append(rec)
        elif int(rec["id"], 16) / 16**16 < review_share:
            rec["decision"] = "review"
            review.append(rec)
        else:
            rec["decision"] = "accepted"
            accepted.append(rec)
        records.append(rec)
    write_text_atomic(out / "scores.jsonl", _jsonl(records))
    write_text_atomic(out / "dropped.jsonl", _jsonl(dropped))
    write_text_atomic(out / "accepted.jsonl", _jsonl(accepted))
    write_text_atomic(out / "review" / "queue.jsonl", _jsonl(review))
    write_text_atomic(out / "review" / "queue.csv", _csv(review))
    write_json_atomic(out / "review" / "label_studio.json", [_task(r) for r in review], indent=1)
    write_text_atomic(out / "review" / "label_config.xml", LABEL_CONFIG)
    write_text_atomic(out / "quarantine.jsonl", _jsonl(r.to_json() for r in quarantine.records))
    reasons: dict[str, int] = {}
    for r in dropped:
        key = {"too": "too_long", "answer": "language"}.get(r["reason"].split(" ")[0], r["reason"].split(" ")[0])
        reasons[key] = reasons.get(key, 0) + 1
    manifest = {"read": len(examples) + quarantine.count, "quarantined": quarantine.count, "dropped": len(dropped),
                "accepted": len(accepted), "review": len(review), "dropped_by": reasons,
                "thresholds": asdict(th), "model": str(model_path)}
    assert manifest["read"] == manifest["quarantined"] + len(dropped) + len(accepted) + len(review)
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "decision", "ifd", "ppl", "instruction", "output", "source"])
    for r in rows:
        user = [m["content"] for m in r["messages"] if m["role"] == "user"][-1]
        answer = r["messages"][-1]["content"]
        w.writerow([r["id"], "", r["scores"].get("ifd"), r["scores"].get("ppl"), user, answer, r["source"]])
    return buf.getvalue()


def _task(r: dict) -> dict:
    user = [m["content"] for m in r["messages"] if m["role"] == "user"][-1]
    ifd = r["scores"].get("ifd")
    return {"data": {"id": r["id"], "instruction": user, "output": r["messages"][-1]["content"], "source": r["source"],
                     **{f"score_{k}": v for k, v in r["scores"].items()}},
            "predictions": [{"model_version": "alaya-screen", "score": None if ifd is None else round(1.0 / max(ifd, 1e-6), 4),
                             "result": [{"from_name": "decision", "to_name": "text", "type": "choices",
                                         "value": {"choices": ["accept"]}}]}]}


def read_decisions(path: str) -> dict[str, str]:
    """{example id: "accept" | "reject"} from our JSONL or CSV, or a Label Studio JSON export."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"decisions file {p} not found")
    text = p.read_text(encoding="utf-8-sig")
    out: dict[str, str] = {}

    def put(where: str, ident, decision) -> None:
        decision = str(decision or "").strip().lower()
        if not decision:
            return
        if decision not in ("accept", "reject"):
            raise ValueError(f"{where}: decision must be accept or reject, got {decision!r}")
        if not ident:
            raise ValueError(f"{where}: no example id")
        out[str(ident)] = decision

    if p.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"id", "decision"} <= set(reader.fieldnames):
            raise ValueError(f"{p}: a CSV of decisions needs the columns id and decision, has {reader.fieldnames}")
        for n, row in enumerate(reader, 2):
            put(f"{p}:{n}", row["id"], row["decision"])
    elif text.lstrip().startswith("["):  # Label Studio export
        try:
            tasks = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON: {e}") from None
        for i, t in enumerate(tasks):
            anns = [a for a in t.get("annotations", []) if not a.get("was_cancelled")]
            choices = [c for a in anns[-1:] for res in a.get("result", []) for c in res.get("value", {}).get("choices", [])]
            put(f"{p}: task {i}", (t.get("data") or {}).get("id"), choices[0] if choices else "")
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{p}:{n}: not valid JSON: {json_error(e)}") from None
                put(f"{p}:{n}", rec.get("id"), rec.get("decision"))
    return out


def apply_review(screened: str, decisions: str, output: str) -> dict:
    folder = Path(screened)
    queue_path = folder / "review" / "queue.jsonl"
    if not queue_path.is_file():
        raise FileNotFoundError(f"{folder}: no review/queue.jsonl; is it an `alaya sft screen` output folder?")
    queue = [json.loads(l) for l in queue_path.read_text(encoding="utf-8").splitlines() if l.strip()]
    accepted = [json.loads(l) for l in (folder / "accepted.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
    got = read_decisions(decisions)
    known = {r["id"] for r in queue}
    unknown = sorted(set(got) - known)
    if unknown:
        raise ValueError(f"{decisions}: decisions for ids not in the review queue, e.g. {unknown[:3]}")
    keep = [r for r in queue if got.get(r["id"]) == "accept"]
    rejected = [r for r in queue if got.get(r["id"]) == "reject"]
    pending = [r for r in queue if r["id"] not in got]

    def plain(r: dict) -> dict:
        return {k: r[k] for k in ("messages", "category", "meta") if k in r}

    write_text_atomic(output, _jsonl(plain(r) for r in accepted + keep))
    write_text_atomic(folder / "review" / "rejected.jsonl", _jsonl(rejected))
    write_text_atomic(folder / "review" / "pending.jsonl", _jsonl(pending))
    return {"output": output, "accepted_without_review": len(accepted), "accepted_by_review": len(keep),
            "rejected_by_review": len(rejected), "pending": len(pending), "written": len(accepted) + len(keep)}
