"""Batch inference: a file of prompts to JSON lines, as the published inference script does.

Input: ``.txt`` with one prompt a line, or JSONL with a ``prompt`` field. Output: one JSON object a line,
``{"line", "prompt", "response", "response_org"}`` (UTF-8, not escaped), where ``response_org`` is the
formatted prompt and everything generated, and ``response`` the text after ``### Output:\\t\\n``. A line
that cannot be used (empty, invalid UTF-8, bad JSON) gives ``{"line", "prompt", "error"}`` instead.
Results are appended and flushed batch by batch; a rerun skips the lines already answered, so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from alaya.data.documents import json_error
from alaya.infer.generate import BatchDecoder, GenerationConfig
from alaya.infer.loading import load_for_inference
from alaya.infer.text import StreamedText
from alaya.prompt import OUTPUT_FLAG, format_prompt


@dataclass
class PromptLine:
    line: int
    prompt: str | None
    error: str | None = None


def read_prompts(path: str | Path) -> Iterator[PromptLine]:
    path = Path(path)
    is_jsonl = path.suffix in (".jsonl", ".json", ".ndjson")
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\r\n")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield PromptLine(n, raw.decode("utf-8", "replace"), f"{path}:{n}: invalid UTF-8 at byte {e.start}")
                continue
            if is_jsonl:
                if not text.strip():
                    yield PromptLine(n, "", f"{path}:{n}: empty line")
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    yield PromptLine(n, text, f"{path}:{n}: invalid JSON: {json_error(e)}")
                    continue
                prompt = obj.get("prompt") if isinstance(obj, dict) else None
                if not isinstance(prompt, str):
                    yield PromptLine(n, text, f"{path}:{n}: needs a string field 'prompt'")
                    continue
                text = prompt
            text = text.strip()
            if not text:
                yield PromptLine(n, "", f"{path}:{n}: empty prompt")
                continue
            yield PromptLine(n, text)


def answered_lines(output: Path) -> set[int]:
    """Lines already in OUTPUT_FILE; a torn last line (a crash mid-write) is cut off first."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(output, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    done = set()
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            done.add(int(json.loads(raw)["line"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ValueError(f"{output}:{n}: not a result line of `alaya infer`; use another output file") from None
    return done


def extract_response(generated: str) -> str:
    """The published script's rule, kept as the output contract: the text between the first and the second
    '### Output:\\t\\n' of prompt + generation, without trailing newlines (not :class:`ReplyFilter`, which
    streams a reply without its leading flag: the two differ when the model does not start with the flag)."""
    parts = generated.split(OUTPUT_FLAG)
    return parts[1].rstrip("\n") if len(parts) > 1 else ""


def run_batch_inference(
    model_path: str,
    input_file: str,
    output_file: str,
    adapter_path: str | None = None,
    gen: GenerationConfig | None = None,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str = "auto",
    refuse_long: bool = False,
    compile: bool = False,
    quantize: str = "none",
    decode_path: str = "auto",
    attention: str = "auto",
) -> dict:
    gen = gen or GenerationConfig()
    output = Path(output_file)
    if not Path(input_file).is_file():  # inputs first: a missing file fails before the model loads
        raise FileNotFoundError(f"prompt file {input_file} does not exist")
    done = answered_lines(output)
    todo = [p for p in read_prompts(input_file) if p.line not in done]
    counts = {"answered": 0, "errors": 0, "skipped_already_done": len(done), "truncated": 0, "empty_response": 0}
    backend, tok = load_for_inference(model_path, adapter_path, device=device, dtype=dtype, compile=compile,
                                      quantize=quantize, decode_path=decode_path, attention=attention)
    ctx = backend.model.config.max_seq_len
    new_tokens = min(gen.max_new_tokens, ctx // 2)  # as chat and serve: the prompt keeps at least half
    if new_tokens < gen.max_new_tokens:
        print(f"note: the model's context is {ctx} tokens, so at most {new_tokens} new tokens are generated "
              f"(asked {gen.max_new_tokens}); prompts keep up to {ctx - new_tokens} tokens", file=sys.stderr)
    gen = gen.with_(max_new_tokens=new_tokens)
    max_prompt = ctx - new_tokens

    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a", encoding="utf-8") as out, tqdm(total=len(todo), desc="infer", unit=" prompts") as bar:
        def write(rec: dict) -> None:
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")

        def prepare(p: PromptLine) -> tuple[str, list[int]] | dict:
            if p.error:
                return {"line": p.line, "prompt": p.prompt, "error": p.error}
            text = format_prompt(p.prompt)
            ids = tok.encode(text)
            if len(ids) > max_prompt:
                if refuse_long:
                    return {"line": p.line, "prompt": p.prompt,
                            "error": f"{input_file}:{p.line}: prompt has {len(ids)} tokens; at most {max_prompt} fit"}
                print(f"warning: {input_file}:{p.line}: prompt of {len(ids)} tokens left-truncated to {max_prompt}",
                      file=sys.stderr)
                ids = ids[-max_prompt:]
                text = tok.decode(ids)
                counts["truncated"] += 1
            return text, ids

        for i in range(0, len(todo), batch_size):  # results are written in input order, a batch at a time
            chunk = [(p, prepare(p)) for p in todo[i : i + batch_size]]
            valid = [(p, prep) for p, prep in chunk if not isinstance(prep, dict)]
            outs = iter(generate_texts(backend, tok, [ids for _, (_, ids) in valid], gen)) if valid else iter(())
            for p, prep in chunk:
                if isinstance(prep, dict):
                    write(prep)
                    counts["errors"] += 1
                    continue
                org = prep[0] + next(outs)
                response = extract_response(org)
                write({"line": p.line, "prompt": p.prompt, "response": response, "response_org": org})
                counts["answered"] += 1
                counts["empty_response"] += not response
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(chunk))
    if counts["empty_response"]:
        print(f"note: {counts['empty_response']} of {counts['answered']} responses are empty: the model wrote nothing "
              f"after '### Output:' (the published script's rule keeps only that text; see response_org)", file=sys.stderr)
    return counts


def generate_texts(model, tok, prompts: list[list[int]], gen: GenerationConfig) -> list[str]:
    """Generated text per prompt, each cut at the first of ``gen.stop`` (the row stops generating there)."""
    return StreamedText(BatchDecoder(model, prompts, gen), tok).texts()
