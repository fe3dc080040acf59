"""The serving layer behind the HTTP routes: one :class:`Serving` owns the engine and turns requests into
engine jobs, and job events into OpenAI responses and server-sent-event chunks (the layout of vLLM's OpenAI
server: schemas in :mod:`alaya.infer.api_schemas`, this class, thin routes in :mod:`alaya.infer.server`)."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

from alaya.infer.api_schemas import APIError, ChatRequest, CompletionRequest, QARequest, SamplingFields, Stop, error_body
from alaya.infer.chat import build_prompt, clean_reply
from alaya.infer.generate import GenerationConfig
from alaya.infer.logprobs import openai_logprobs, sequence_logprobs
from alaya.infer.scheduler import BatchScheduler, Job, QueueFull, asyncio_emitter
from alaya.prompt import check_history, render_messages

QA_MAX_NEW_TOKENS = 1024  # the published api.py's


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def stop_list(stop: Stop) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


async def anext_or_none(agen):
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return None


class ChatChunks:
    """``chat.completion.chunk`` objects of one streamed reply: the role goes with the first piece."""

    def __init__(self, head: dict):
        self.head, self.role_sent = {**head, "object": "chat.completion.chunk"}, False

    def piece(self, text: str) -> dict:
        delta = {"content": text} if self.role_sent else {"role": "assistant", "content": text}
        self.role_sent = True
        return {**self.head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}

    def final(self, reason: str | None) -> dict:
        delta = {} if self.role_sent else {"role": "assistant", "content": ""}
        return {**self.head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}


class CompletionChunks:
    """``text_completion`` chunks of one streamed completion: an echoed prompt goes with the first piece."""

    def __init__(self, head: dict, prefix: str):
        self.head, self.prefix = head, prefix

    def piece(self, text: str) -> dict:
        text, self.prefix = self.prefix + text, ""
        return {**self.head, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]}

    def final(self, reason: str | None) -> dict:
        text, self.prefix = self.prefix, ""
        return {**self.head, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}]}


class Serving:
    def __init__(self, engine: BatchScheduler, model_name: str, default_max_tokens: int = 1024):
        self.engine, self.model_name, self.default_max_tokens = engine, model_name, default_max_tokens
        self.tok, self.context = engine.tok, engine.context
        self.started = int(time.time())
        # prompt log-probabilities are one forward pass in a worker thread beside the engine's decoding thread
        # (a forward without a cache changes no shared state); one at a time keeps the CPU threads for decoding
        self.score_lock = asyncio.Lock()

    # ------------------------------------------------------------------ requests -> jobs
    def sampling(self, req: SamplingFields | QARequest, max_new: int, stop: list[str]) -> GenerationConfig:
        if isinstance(req, SamplingFields):
            for name in ("presence_penalty", "frequency_penalty"):
                if getattr(req, name):
                    raise APIError(400, f"{name} is not supported; use repetition_penalty", param=name)
        tok = self.tok
        return GenerationConfig(
            max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p,
            top_k=getattr(req, "top_k", 0), repetition_penalty=req.repetition_penalty,
            seed=getattr(req, "seed", None), stop=stop,
            eos_token_id=-1 if getattr(req, "ignore_eos", False) else tok.eos_id, pad_token_id=tok.pad_id,
            banned_token_ids=[tok.reserved_id],
        )

    def max_new_tokens(self, req: SamplingFields, prompt_len: int) -> int:
        room = self.context - prompt_len
        if req.max_tokens == 0:
            raise APIError(400, "max_tokens 0 (score the prompt, generate nothing) needs /v1/completions with echo",
                           param="max_tokens")
        asked = req.max_completion_tokens or req.max_tokens
        if room < 1:
            raise APIError(400, f"the prompt has {prompt_len} tokens; this model's context is {self.context}",
                           param="messages" if isinstance(req, ChatRequest) else "prompt", type_="context_length_exceeded")
        if asked is None:
            return min(self.default_max_tokens, room)
        if asked > room:
            raise APIError(400, f"prompt ({prompt_len} tokens) + max_tokens ({asked}) exceeds this model's context "
                                f"of {self.context} tokens", param="max_tokens", type_="context_length_exceeded")
        return asked

    def prompt_ids(self, prompt: str | list[int]) -> tuple[str, list[int]]:
        tok = self.tok
        if isinstance(prompt, str):
            return prompt, tok.encode(prompt) or [tok.eos_id]  # "" starts a new document
        if any(not 0 <= t < tok.vocab_size for t in prompt):
            raise APIError(400, f"prompt token ids must be in [0, {tok.vocab_size})", param="prompt")
        return tok.decode(prompt), list(prompt)

    def completion_job(self, req: CompletionRequest, prompt: str | list[int]) -> tuple[str, list[int], Job]:
        text, ids = self.prompt_ids(prompt)
        if req.max_tokens is not None or req.max_completion_tokens:
            max_new = self.max_new_tokens(req, len(ids))
        else:
            max_new = min(16, self.context - len(ids))
        if max_new < 1:
            raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {self.context}", param="prompt")
        return text, ids, Job(ids, self.sampling(req, max_new, stop_list(req.stop)))

    # ------------------------------------------------------------------ jobs -> events
    async def events(self, job: Job, request: Request) -> AsyncIterator[tuple]:
        """Submit a job and yield its events; cancel it when the client goes away or the consumer stops."""
        queue: asyncio.Queue = asyncio.Queue()
        job.emit = asyncio_emitter(asyncio.get_running_loop(), queue)
        try:
            self.engine.submit(job)
        except QueueFull as e:
            raise APIError(429, str(e), "rate_limit_error", headers={"Retry-After": "1"}) from None
        except ValueError as e:
            raise APIError(400, str(e)) from None

        async def watch_client() -> None:  # twice a second, beside the events (not a timer per event)
            while not job.cancelled.is_set():
                await asyncio.sleep(0.5)
                if await request.is_disconnected():
                    job.cancel()
                    queue.put_nowait(("gone",))
                    return

        watcher = asyncio.create_task(watch_client())
        try:
            while True:
                event = await queue.get()
                if event[0] == "gone":
                    return
                yield event
                if event[0] in ("done", "error"):
                    return
        finally:
            watcher.cancel()
            job.cancel()  # no-op once finished; stops the row when the client is gone

    async def collect(self, job: Job, request: Request) -> tuple[str, str, int]:
        job.stream = False  # the whole text at the end: no event-loop wake-up per token
        pieces, reason, n = [], "length", 0
        async for event in self.events(job, request):
            if event[0] == "text":
                pieces.append(event[1])
            elif event[0] == "error":
                raise APIError(500, event[1], "server_error")
            else:
                reason, n = event[1], event[2]
        return "".join(pieces), reason, n

    async def stream(self, job: Job, request: Request, chunks: ChatChunks | CompletionChunks, include_usage: bool,
                     prompt_tokens: int) -> StreamingResponse:
        events = self.events(job, request)
        # the first event is awaited before the response starts, so a full queue is still answered 429
        first = await anext_or_none(events)

        async def body():
            try:
                event = first
                while event is not None:
                    if event[0] == "text":
                        yield sse(chunks.piece(event[1]))
                    elif event[0] == "error":
                        yield sse(error_body(event[1], "server_error"))
                        break
                    else:
                        if event[1] == "cancelled":
                            return
                        yield sse(chunks.final(event[1]))
                        if include_usage:
                            yield sse({**chunks.final(None), "choices": [], "usage": usage(prompt_tokens, event[2])})
                        break
                    event = await anext_or_none(events)
                yield "data: [DONE]\n\n"
            finally:
                await events.aclose()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ the endpoints' work
    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model", "created": self.started,
                                            "owned_by": "alaya", "context_length": self.context}]}

    def health(self) -> dict:
        # which code decodes: the compiled CPU kernels, or PyTorch on the model's device
        return {"status": "ok", "model": self.model_name, "decode_path": self.engine.backend.describe(), "waiting": self.engine.waiting,
                **self.engine.stats}

    async def qa(self, req: QARequest, request: Request) -> dict:
        try:
            check_history(req.history)
        except ValueError as e:
            raise APIError(400, str(e), param="history") from None
        max_new = min(QA_MAX_NEW_TOKENS, self.context // 2)
        prompt = build_prompt(self.tok, req.instruction, req.history, self.context, max_new)
        job = Job(prompt.ids, self.sampling(req, max_new, []), strip_flag=True)
        text, _, _ = await self.collect(job, request)
        return {"output": clean_reply(text), "org_output": prompt.text + job.raw_text}

    async def chat(self, req: ChatRequest, request: Request):
        messages = [{"role": m.role, "content": m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)}
                    for m in req.messages]
        if messages[-1]["role"] != "user":
            raise APIError(400, "the last message must come from the user", param="messages")
        ids = self.tok.encode(render_messages(messages))
        new = self.max_new_tokens(req, len(ids))
        job = Job(ids, self.sampling(req, new, stop_list(req.stop)), strip_flag=True)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model_name}
        if req.stream:
            return await self.stream(job, request, ChatChunks(head), _include_usage(req), len(ids))
        content, reason, n = await self.collect(job, request)
        return {**head, "choices": [{"index": 0, "message": {"role": "assistant", "content": clean_reply(content)},
                                     "logprobs": None, "finish_reason": reason}], "usage": usage(len(ids), n)}

    async def completions(self, req: CompletionRequest, request: Request):
        prompts = [req.prompt] if isinstance(req.prompt, str) or isinstance(req.prompt[0], int) else req.prompt
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.model_name}
        if req.stream and (len(prompts) > 1 or req.logprobs is not None):
            raise APIError(400, "stream supports one prompt without logprobs", param="stream")
        if req.stream:
            prompt, ids, job = self.completion_job(req, prompts[0])
            return await self.stream(job, request, CompletionChunks(head, prompt if req.echo else ""),
                                     _include_usage(req), len(ids))
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, p in enumerate(prompts):
            choice, n_prompt, n = await self.complete_one(req, p, request)
            choices.append({"index": index, **choice})
            prompt_tokens, completion_tokens = prompt_tokens + n_prompt, completion_tokens + n
        return {**head, "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}

    async def complete_one(self, req: CompletionRequest, prompt, request: Request) -> tuple[dict, int, int]:
        """One prompt's choice (text, logprobs, finish_reason), its prompt and completion token counts.
        ``max_tokens: 0`` with ``echo`` scores the prompt without generating."""
        if req.max_tokens == 0 and req.echo:
            text, ids = self.prompt_ids(prompt)
            if len(ids) > self.context:
                raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {self.context}",
                               param="prompt")
            completion, reason, n, new_ids = "", "length", 0, []
        else:
            text, ids, job = self.completion_job(req, prompt)
            completion, reason, n = await self.collect(job, request)
            new_ids = job.new_ids
        logprobs = None
        if req.logprobs is not None:
            seq = (ids + new_ids)[: self.context]
            async with self.score_lock:  # one scoring forward at a time, beside the engine's decoding
                lps, tops = await asyncio.to_thread(sequence_logprobs, self.engine.model, seq, req.logprobs or 1)
            logprobs = openai_logprobs(self.tok, seq, lps, tops, start=0 if req.echo else len(ids))
        return ({"text": (text if req.echo else "") + completion, "logprobs": logprobs, "finish_reason": reason},
                len(ids), n)


def _include_usage(req: SamplingFields) -> bool:
    return bool((req.stream_options or {}).get("include_usage"))

