"""``alaya serve``: the published api.py's ``POST /qa`` and an OpenAI-compatible API, on FastAPI + uvicorn.

Endpoints: ``POST /qa``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (both streamed as
server-sent events when ``stream`` is true), ``GET /v1/models``, ``GET /health``. Requests go through the
:class:`~alaya.infer.scheduler.Engine`: batched with other waiting requests, refused with 429 when the
queue is full, stopped when the client disconnects. With an API key every endpoint but /health needs
``Authorization: Bearer KEY``. Errors use OpenAI's body, ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from importlib import resources
from typing import Annotated, Any, AsyncIterator, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from alaya.infer.chat import build_prompt, clean_reply
from alaya.infer.generate import GenerationConfig
from alaya.infer.logprobs import openai_logprobs, sequence_logprobs
from alaya.infer.scheduler import Engine, Job, QueueFull, asyncio_emitter
from alaya.prompt import TURN_STOP, check_history, render_messages

CHAT_PAGE = (resources.files("alaya.infer") / "web" / "chat.html").read_text(encoding="utf-8")

QA_MAX_NEW_TOKENS = 1024  # the published api.py's
ERROR = {"content": {"application/json": {"schema": {"type": "object"}}}}
ERROR_RESPONSES = {400: {"description": "invalid request", **ERROR}, 401: {"description": "missing or wrong API key", **ERROR},
                   429: {"description": "queue full, retry later", **ERROR}}


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.headers = status, message, type_, param, headers


def _error(status: int, message: str, type_: str, param: str | None = None, headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


# ----------------------------------------------------------------------------- request schemas
Stop = Union[str, Annotated[list[str], Field(max_length=8)], None]


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (user, logit_bias=None, ...)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=0, description="0: score the prompt only (/v1/completions with echo)")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="extension: 0 switches it off")
    repetition_penalty: float = Field(1.0, gt=0, le=10, description="extension, as in transformers")
    ignore_eos: bool = Field(False, description="extension, as in vLLM: generate max_tokens tokens (benchmarks)")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="only 0 is supported")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="only 0 is supported")
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    seed: int | None = None
    stop: Stop = None
    stream: bool = False
    stream_options: dict | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: Union[str, list[TextPart]]


class ChatRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(SamplingFields):
    # a text, texts, token ids, or lists of token ids (as lm-eval's local-completions sends them)
    prompt: Union[str, Annotated[list[str], Field(min_length=1)], Annotated[list[int], Field(min_length=1)],
                  Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20, description="the top-N log-probabilities at each token")


class QARequest(BaseModel):
    instruction: str
    history: list[str] = Field(default_factory=list)
    temperature: float = Field(1.0, ge=0, le=2)
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    top_p: float = Field(0.9, gt=0, le=1)


class QAResponse(BaseModel):
    output: str
    org_output: str


# ----------------------------------------------------------------------------- the app
def create_app(engine: Engine, model_name: str, api_key: str | None = None, default_max_tokens: int = 1024) -> FastAPI:
    app = FastAPI(title="Alaya", version="1", description="The Alaya model: the published /qa API and an OpenAI-compatible API.")
    tok, context = engine.tok, engine.context
    started = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return _error(e.status, e.message, e.type, e.param, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(400, f"{loc or 'body'}: {first.get('msg', 'invalid request')}", "invalid_request_error", loc or None)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path not in ("/", "/health", "/docs", "/openapi.json"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "authentication_error")
        return await call_next(request)

    def sampling(req: SamplingFields | QARequest, max_new: int, stop: list[str]) -> GenerationConfig:
        if isinstance(req, SamplingFields):
            for name in ("presence_penalty", "frequency_penalty"):
                if getattr(req, name):
                    raise APIError(400, f"{name} is not supported; use repetition_penalty", param=name)
        return GenerationConfig(
            max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p,
            top_k=getattr(req, "top_k", 0), repetition_penalty=req.repetition_penalty,
            seed=getattr(req, "seed", None), stop=stop,
            eos_token_id=-1 if getattr(req, "ignore_eos", False) else tok.eos_id, pad_token_id=tok.pad_id, banned_token_ids=[tok.reserved_id],
        )

    def max_new_tokens(req: SamplingFields, prompt_len: int) -> int:
        room = context - prompt_len
        if req.max_tokens == 0:
            raise APIError(400, "max_tokens 0 (score the prompt, generate nothing) needs /v1/completions with echo",
                           param="max_tokens")
        asked = req.max_completion_tokens or req.max_tokens
        if room < 1:
            raise APIError(400, f"the prompt has {prompt_len} tokens; this model's context is {context}",
                           param="messages" if isinstance(req, ChatRequest) else "prompt", type_="context_length_exceeded")
        if asked is None:
            return min(default_max_tokens, room)
        if asked > room:
            raise APIError(400, f"prompt ({prompt_len} tokens) + max_tokens ({asked}) exceeds this model's context "
                                f"of {context} tokens", param="max_tokens", type_="context_length_exceeded")
        return asked

    def stop_list(stop: Stop) -> list[str]:
        return [stop] if isinstance(stop, str) else list(stop or [])

    async def run(job: Job, request: Request) -> AsyncIterator[tuple]:
        """Submit a job and yield its events; cancel it when the client goes away or the consumer stops."""
        events: asyncio.Queue = asyncio.Queue()
        job.emit = asyncio_emitter(asyncio.get_running_loop(), events)
        try:
            engine.submit(job)
        except QueueFull as e:
            raise APIError(429, str(e), "rate_limit_error", headers={"Retry-After": "1"}) from None
        except ValueError as e:
            raise APIError(400, str(e)) from None
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        job.cancel()
                        return
                    continue
                yield event
                if event[0] in ("done", "error"):
                    return
        finally:
            job.cancel()  # no-op once finished; stops the row when the client is gone

    async def collect(job: Job, request: Request) -> tuple[str, str, int]:
        pieces, reason, n = [], "length", 0
        async for event in run(job, request):
            if event[0] == "text":
                pieces.append(event[1])
            elif event[0] == "error":
                raise APIError(500, event[1], "server_error")
            else:
                reason, n = event[1], event[2]
        return "".join(pieces), reason, n

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def sse(obj: Any) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    async def stream_events(job: Job, request: Request, chunk, final, include_usage: bool, prompt_tokens: int):
        events = run(job, request)
        # the first event is awaited before the response starts, so a full queue is still answered 429
        first = await anext_or_none(events)

        async def body():
            try:
                event = first
                while event is not None:
                    if event[0] == "text":
                        yield sse(chunk(event[1]))
                    elif event[0] == "error":
                        yield sse({"error": {"message": event[1], "type": "server_error", "param": None, "code": None}})
                        break
                    else:
                        if event[1] == "cancelled":
                            return
                        yield sse(final(event[1]))
                        if include_usage:
                            yield sse({**final(None), "choices": [], "usage": usage(prompt_tokens, event[2])})
                        break
                    event = await anext_or_none(events)
                yield "data: [DONE]\n\n"
            finally:
                await events.aclose()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ endpoints
    @app.get("/", include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        """The chat page (one static file shipped with the package; it calls /v1/chat/completions)."""
        return HTMLResponse(CHAT_PAGE, headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "waiting": engine.waiting, **engine.stats}

    @app.get("/v1/models", responses=ERROR_RESPONSES)
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": started, "owned_by": "alaya",
                                            "context_length": context}]}

    @app.post("/qa", response_model=QAResponse, responses=ERROR_RESPONSES)
    async def qa(req: QARequest, request: Request):
        """The published api.py: instruction + history (user, assistant, ...) → output, org_output."""
        try:
            check_history(req.history)
        except ValueError as e:
            raise APIError(400, str(e), param="history") from None
        max_new = min(QA_MAX_NEW_TOKENS, context // 2)
        prompt = build_prompt(tok, req.instruction, req.history, context, max_new)
        job = Job(prompt.ids, sampling(req, max_new, [TURN_STOP]), strip_flag=True)
        text, _, _ = await collect(job, request)
        return {"output": clean_reply(text), "org_output": prompt.text + job.raw_text}

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES)
    async def chat_completions(req: ChatRequest, request: Request):
        messages = [{"role": m.role, "content": m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)}
                    for m in req.messages]
        if messages[-1]["role"] != "user":
            raise APIError(400, "the last message must come from the user", param="messages")
        text = render_messages(messages)
        ids = tok.encode(text)
        new = max_new_tokens(req, len(ids))
        job = Job(ids, sampling(req, new, [*stop_list(req.stop), TURN_STOP]), strip_flag=True)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "chat.completion", "created": created, "model": model_name}
        if not req.stream:
            content, reason, n = await collect(job, request)
            return {**head, "choices": [{"index": 0, "message": {"role": "assistant", "content": clean_reply(content)},
                                         "logprobs": None, "finish_reason": reason}], "usage": usage(len(ids), n)}
        head = {**head, "object": "chat.completion.chunk"}
        sent_role = {"done": False}

        def chunk(piece: str) -> dict:
            delta = {"content": piece}
            if not sent_role["done"]:
                delta, sent_role["done"] = {"role": "assistant", "content": piece}, True
            return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}

        def final(reason: str | None) -> dict:
            delta = {} if sent_role["done"] else {"role": "assistant", "content": ""}
            return {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}

        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return await stream_events(job, request, chunk, final, include_usage, len(ids))

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def completions(req: CompletionRequest, request: Request):
        prompts = [req.prompt] if isinstance(req.prompt, str) or isinstance(req.prompt[0], int) else req.prompt
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": model_name}
        if req.stream and (len(prompts) > 1 or req.logprobs is not None):
            raise APIError(400, "stream supports one prompt without logprobs", param="stream")
        if not req.stream:
            choices, prompt_tokens, completion_tokens = [], 0, 0
            for index, p in enumerate(prompts):
                choice, n_prompt, n = await complete_one(req, p, request)
                choices.append({"index": index, **choice})
                prompt_tokens, completion_tokens = prompt_tokens + n_prompt, completion_tokens + n
            return {**head, "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}
        prompt, ids, job = completion_job(req, prompts[0])
        prefix = prompt if req.echo else ""
        echoed = {"done": not req.echo}

        def chunk(piece: str) -> dict:
            if not echoed["done"]:
                piece, echoed["done"] = prefix + piece, True
            return {**head, "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}]}

        def final(reason: str | None) -> dict:
            text = "" if echoed["done"] else prefix
            echoed["done"] = True
            return {**head, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}]}

        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return await stream_events(job, request, chunk, final, include_usage, len(ids))

    def prompt_ids(prompt: str | list[int]) -> tuple[str, list[int]]:
        if isinstance(prompt, str):
            return prompt, tok.encode(prompt) or [tok.eos_id]  # "" starts a new document
        if any(not 0 <= t < tok.vocab_size for t in prompt):
            raise APIError(400, f"prompt token ids must be in [0, {tok.vocab_size})", param="prompt")
        return tok.decode(prompt), list(prompt)

    # prompt log-probabilities are one forward pass in a worker thread beside the engine's decoding thread
    # (a forward without a cache changes no shared state); one at a time keeps the CPU threads for decoding
    score_lock = asyncio.Lock()

    def completion_job(req: CompletionRequest, prompt: str | list[int], max_new: int | None = None):
        text, ids = prompt_ids(prompt)
        if max_new is None:
            max_new = max_new_tokens(req, len(ids)) if (req.max_tokens is not None or req.max_completion_tokens) else min(16, context - len(ids))
        if max_new < 1:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {context}", param="prompt")
        return text, ids, Job(ids, sampling(req, max_new, stop_list(req.stop)))

    async def complete_one(req: CompletionRequest, prompt, request: Request) -> tuple[dict, int, int]:
        """One prompt's choice (text, logprobs, finish_reason), its prompt and completion token counts.
        ``max_tokens: 0`` with ``echo`` scores the prompt without generating."""
        if req.max_tokens == 0 and req.echo:
            text, ids = prompt_ids(prompt)
            if len(ids) > context:
                raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {context}", param="prompt")
            completion, reason, n, new_ids = "", "length", 0, []
        else:
            text, ids, job = completion_job(req, prompt)
            completion, reason, n = await collect(job, request)
            new_ids = job.new_ids
        logprobs = None
        if req.logprobs is not None:
            seq = (ids + new_ids)[:context]
            async with score_lock:  # one scoring forward at a time, beside the engine's decoding
                lps, tops = await asyncio.to_thread(sequence_logprobs, engine.model, seq, req.logprobs or 1)
            logprobs = openai_logprobs(tok, seq, lps, tops, start=0 if req.echo else len(ids))
        return ({"text": (text if req.echo else "") + completion, "logprobs": logprobs, "finish_reason": reason},
                len(ids), n)

    return app


async def anext_or_none(agen):
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return None


def serve(model_path: str, adapter: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, device: str | None = None, dtype: str = "auto", compile: bool = False,
          max_batch: int = 8, max_queue: int = 64, model_name: str | None = None, log_level: str = "info") -> None:
    import os

    import uvicorn

    from alaya.infer.loading import load_for_inference

    model, tok = load_for_inference(model_path, adapter, device=device, dtype=dtype, compile=compile)
    name = model_name or os.path.basename(os.path.normpath(model_path))
    engine = Engine(model, tok, max_batch=max_batch, max_queue=max_queue)
    app = create_app(engine, name, api_key=api_key)
    print(f"serving {name} on http://{host}:{port}  (OpenAI base_url http://{host}:{port}/v1; docs at /docs)", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        engine.close()
