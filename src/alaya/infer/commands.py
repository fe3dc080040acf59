"""The ``alaya infer``, ``alaya chat`` and ``alaya serve`` subcommands: their parsers and the calls they make (no logic)."""
from __future__ import annotations

import argparse
import json


def cmd_infer(args: argparse.Namespace) -> int:
    from alaya.infer.batch import run_batch_inference

    gen = _generation_config(args)
    counts = run_batch_inference(args.model_path, args.input_file, args.output_file, args.adapter_path, gen,
                                 batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                                 refuse_long=args.refuse_long, compile=args.compile, quantize=args.quantize,
                                 decode_path=args.decode_path, attention=args.attention)
    print(json.dumps(counts))
    return 0


def _generation_config(args: argparse.Namespace):
    from alaya.infer.generate import GenerationConfig

    return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed,
                            stop=args.stop)


def _add_generation_args(p: argparse.ArgumentParser, max_new_tokens: int) -> None:
    g = p.add_argument_group("generation (the published scripts' defaults)")
    # the underscore spellings are those of transformers' generate() keywords; both are accepted
    g.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=max_new_tokens)
    g.add_argument("--temperature", type=float, default=1.0, help="0 means greedy (default: %(default)s, sampling)")
    g.add_argument("--top-p", "--top_p", type=float, default=0.9)
    g.add_argument("--top-k", "--top_k", type=int, default=0)
    g.add_argument("--repetition-penalty", "--repetition_penalty", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop a reply at this text (repeatable)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bf16 on GPUs that support it, else fp32")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (faster decoding after a warm-up)")
    g.add_argument("--quantize", default="none", choices=["none", "int8"],
                   help="int8: weight-only int8 per output channel, quantized at load (CPU; activations fp32)")
    add_decode_path_arg(g)


def add_decode_path_arg(g) -> None:
    g.add_argument("--decode-path", default="auto", choices=["auto", "torch", "kernels", "graphs", "measure"],
                   help="which code decodes: torch, the compiled CPU kernels (fp32/int8 on CPU), or graphs (a static "
                        "cache, one compiled graph per step; CUDA graphs on a GPU); auto uses the choice measured "
                        "once for this machine and model shape (measure: measure it again)")
    g.add_argument("--attention", default="auto", choices=["auto", "sdpa", "flex"],
                   help="how prompts (and scored texts) attend: sdpa with a dense mask, or FlexAttention (no dense "
                        "mask; compiled per shape); auto: sdpa. Single-token decoding steps use sdpa either way")


def cmd_chat(args: argparse.Namespace) -> int:
    import sys

    from alaya.infer.chat import ChatSession, repl
    from alaya.infer.generate import warm_up
    from alaya.infer.loading import load_for_inference

    backend, tok = load_for_inference(args.model_path, args.adapter, device=args.device, dtype=args.dtype,
                                      compile=args.compile, quantize=args.quantize, decode_path=args.decode_path,
                                      attention=args.attention)
    warm_up(backend, 1, say=lambda line: print(line, file=sys.stderr, flush=True))  # before the first prompt
    return repl(ChatSession(backend, tok, _generation_config(args), system=args.system))


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from alaya.infer.server import serve

    api_key = args.api_key or os.environ.get("ALAYA_API_KEY") or None
    serve(args.model_path, args.adapter, host=args.host, port=args.port, api_key=api_key, device=args.device,
          dtype=args.dtype, compile=args.compile, quantize=args.quantize, decode_path=args.decode_path,
          attention=args.attention, max_batch=args.max_batch, max_queue=args.max_queue,
          model_name=args.model_name, log_level=args.log_level)
    return 0


def add_parsers(sub, formatter) -> None:
    i = sub.add_parser("infer", formatter_class=formatter, help="batch inference: a file of prompts to JSON lines",
                       description="The published inference script's arguments and output: INPUT_FILE is .txt (one prompt a line)\n"
                                   "or JSONL with a 'prompt' field; OUTPUT_FILE gets JSON lines with line, prompt, response,\n"
                                   "response_org (or error). Rerunning skips prompts already answered (resume).",
                       epilog="examples:\n  alaya infer alaya-quickstart/model prompts.txt answers.jsonl\n"
                              "  alaya infer MODEL prompts.jsonl out.jsonl --temperature 0 --max-new-tokens 64 --batch-size 16")
    i.add_argument("model_path", metavar="MODEL_PATH")
    i.add_argument("input_file", metavar="INPUT_FILE")
    i.add_argument("output_file", metavar="OUTPUT_FILE")
    i.add_argument("adapter_path", metavar="ADAPTER_PATH", nargs="?", default=None, help="a PEFT LoRA folder (merged into the weights)")
    i.add_argument("--batch-size", "--batch_size", type=int, default=8)
    i.add_argument("--refuse-long", action="store_true", help="answer an error instead of left-truncating a prompt that does not fit")
    _add_generation_args(i, max_new_tokens=1000)
    _add_model_args(i)
    i.set_defaults(func=cmd_infer)

    c = sub.add_parser("chat", formatter_class=formatter, help="multi-turn chat in the terminal",
                       description="A chat REPL in the published prompt format, streaming the reply. History is trimmed by tokens to\n"
                                   "fit the context. Commands: /reset, /system TEXT, /exit. Works with piped input too.",
                       epilog="examples:\n  alaya chat alaya-quickstart/model\n"
                              "  alaya chat MODEL --adapter my-lora --temperature 0.7\n  echo 你好 | alaya chat MODEL --temperature 0")
    c.add_argument("model_path", metavar="MODEL_PATH")
    c.add_argument("--adapter", default=None, metavar="PATH", help="a PEFT LoRA folder (merged into the weights)")
    c.add_argument("--system", default=None, help="a system text put before the conversation")
    _add_generation_args(c, max_new_tokens=1024)
    _add_model_args(c)
    c.set_defaults(func=cmd_chat)

    v = sub.add_parser("serve", formatter_class=formatter, help="HTTP API: the published /qa and OpenAI-compatible endpoints",
                       description="FastAPI + uvicorn. POST /qa (the published api.py), POST /v1/chat/completions and /v1/completions\n"
                                   "(streamed as server-sent events with stream=true), GET /v1/models, GET /health; OpenAPI at /docs.\n"
                                   "Concurrent requests are batched; a full queue answers 429. Binds 127.0.0.1 unless told otherwise.",
                       epilog="examples:\n  alaya serve alaya-quickstart/model --port 8000\n"
                              "  ALAYA_API_KEY=secret alaya serve MODEL --host 0.0.0.0\n"
                              "  curl -s localhost:8000/qa -H 'Content-Type: application/json' -d '{\"instruction\": \"你好\", \"history\": []}'")
    v.add_argument("model_path", metavar="MODEL_PATH")
    v.add_argument("--adapter", default=None, metavar="PATH", help="a PEFT LoRA folder (merged into the weights)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or set ALAYA_API_KEY)")
    v.add_argument("--model-name", default=None, help="the model id in the API (default: the folder's name)")
    v.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default: %(default)s)")
    v.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429 (default: %(default)s)")
    v.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _add_model_args(v)
    v.set_defaults(func=cmd_serve)
