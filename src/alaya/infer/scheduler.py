"""The server's generation engine: a bounded queue of requests and one worker thread that owns the model.

The worker takes the oldest request and every other waiting one that fits beside it (at most
``max_batch``, and prompt + new tokens within the context), decodes them as one batch with each request's
own settings, and hands text pieces back to each request as they are produced. A full queue refuses new
work (:class:`QueueFull`, answered 429 by the server); a cancelled request (its client went away) stops
its row at the next step. Static batches are simple and correct; a request that arrives while a batch
runs waits for the next one.
"""
from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from alaya.infer.backends import as_backend
from alaya.infer.generate import BatchDecoder, GenerationConfig
from alaya.infer.text import StreamedText


class QueueFull(RuntimeError):
    pass


@dataclass
class Job:
    prompt_ids: list[int]
    cfg: GenerationConfig
    strip_flag: bool = False  # chat replies: drop the "### Output:\t\n" the model writes first, stop at a new turn
    emit: Callable[[tuple], None] = lambda event: None  # ("text", piece) ... then ("done", reason, n_tokens)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # False: the text comes as one ("text", all) event before "done" (a non-streaming reply), so the worker
    # does not wake the server's event loop at every token, which on a few cores slows the decoding itself
    stream: bool = True
    pieces: list[str] = field(default_factory=list)
    raw_text: str = ""  # everything generated (cut at a stop string), for /qa's org_output
    new_ids: list[int] = field(default_factory=list)  # the generated token ids (to the stop string's token)
    created: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        self.cancelled.set()


class BatchScheduler:
    def __init__(self, model, tokenizer, max_batch: int = 8, max_queue: int = 64, start: bool = True):
        """``model``: a decoding backend (alaya.infer.backends) or a bare model (decoded by its forward)."""
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.backend = as_backend(model)
        self.model, self.tok = self.backend.model, tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.context = self.model.config.max_seq_len
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.stats = {"completed": 0, "cancelled": 0, "rejected": 0, "failed": 0, "batches": 0, "tokens": 0}
        self._worker = threading.Thread(target=self._run, name="alaya-generate", daemon=True)
        if start:
            self._worker.start()

    # ------------------------------------------------------------------ callers (any thread)
    def submit(self, job: Job) -> None:
        need = len(job.prompt_ids) + job.cfg.max_new_tokens
        if need > self.context:
            raise ValueError(f"prompt ({len(job.prompt_ids)} tokens) + max tokens ({job.cfg.max_new_tokens}) "
                             f"exceeds the model's context of {self.context} tokens")
        with self._cond:
            if len(self._queue) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting); retry later")
            self._queue.append(job)
            self._cond.notify()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------ the worker thread
    def _take_batch(self) -> list[Job]:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            batch = [self._queue.popleft()]
            longest, most_new = len(batch[0].prompt_ids), batch[0].cfg.max_new_tokens
            kept = deque()
            while self._queue and len(batch) < self.max_batch:
                job = self._queue.popleft()
                L, n = max(longest, len(job.prompt_ids)), max(most_new, job.cfg.max_new_tokens)
                if L + n <= self.context and not job.cancelled.is_set():
                    batch.append(job)
                    longest, most_new = L, n
                elif job.cancelled.is_set():
                    self._finish(job, "cancelled", 0)
                else:
                    kept.append(job)  # does not fit beside this batch: first in line for the next one
            self._queue.extendleft(reversed(kept))
            return batch

    def _finish(self, job: Job, reason: str, n_tokens: int) -> None:
        self.stats["cancelled" if reason == "cancelled" else "completed"] += 1
        job.emit(("done", reason, n_tokens))

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            try:
                self._decode(batch)
            except Exception as e:  # a bug must not kill the worker: fail these requests, go on
                traceback.print_exc()
                for job in batch:
                    self.stats["failed"] += 1
                    job.emit(("error", f"generation failed: {type(e).__name__}: {e}"))

    def _decode(self, batch: list[Job]) -> None:
        self.stats["batches"] += 1
        decoder = BatchDecoder(self.backend, [j.prompt_ids for j in batch], [j.cfg for j in batch])
        text = StreamedText(decoder, self.tok, [j.strip_flag for j in batch],
                            cancelled=lambda row: batch[row].cancelled.is_set())
        for row, piece in text:
            job = batch[row]
            if job.stream:
                job.emit(("text", piece))
            else:
                job.pieces.append(piece)
        for row, job in enumerate(batch):
            if not job.stream and job.pieces:
                job.emit(("text", "".join(job.pieces)))
            job.raw_text = text.raw_text(row)
            job.new_ids = list(decoder.tokens[row])
            self.stats["tokens"] += len(decoder.tokens[row])
            self._finish(job, decoder.finish_reason[row] or "length", len(decoder.tokens[row]))


def asyncio_emitter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Callable[[tuple], None]:
    """An ``emit`` for a Job that delivers events into an asyncio queue from the worker thread. Events that
    arrive while a delivery is still pending go with it: one wake-up of the event loop for all of them."""
    pending: list[tuple] = []
    lock = threading.Lock()

    def deliver() -> None:
        with lock:
            events = pending[:]
            pending.clear()
        for event in events:
            queue.put_nowait(event)

    def emit(event: tuple) -> None:
        with lock:
            pending.append(event)
            if len(pending) > 1:  # a delivery is scheduled and has not run yet: it takes this one too
                return
        try:
            loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass
    return emit
