"""The embedding path split in three, plus the dynamic batcher that merges concurrent requests.

- ``pre``: tokenize (CPU, in the request's worker thread, many at once); a static student's texts are
  not tokenized here: they go to ``core`` as they are;
- ``core``: one full-width forward pass over the merged sequences (one model thread, one at a time); a
  static student's texts go through its word cache there (no tokenizer for words seen before: what makes
  ``encode`` fast), on that one thread, so that the cache grows without a lock;
- ``post``: truncate each request to its own ``dimensions`` and re-normalize (in the request again).

While ``core`` runs a batch, new requests keep tokenizing and queueing, so the next forward pass
starts full: CPU work (tokenize, normalize, JSON) overlaps the forward pass instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from distill.students import StaticStudent, Student
from distill.students.base import ContextualStudent, normalize
from distill.students.long import Plan, plan_ids, plan_texts

Row = list[int] | str  # token ids, or (static students) a text embedded whole

logger = logging.getLogger("distill.service")

class Embedder:
    """A student's encode() in three steps, so the batcher can merge the middle one across requests."""

    def __init__(self, student: Student, max_batch: int = 256, max_batch_tokens: int = 512):
        self.student = student
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens
        # contextual students pad and have a position table: longer id lists would index past it
        self.padded = isinstance(student, ContextualStudent)
        self.max_length: int | None = student.config.max_length if self.padded else None

    @property
    def vocab_size(self) -> int:
        return int(self.student.config.vocab_size)

    def plan_texts(self, texts: list[str], long: str = "truncate", truncate: bool = True) -> Plan:
        """Tokenize, saying what is cut: the forward rows of the texts (windows in ``chunk`` mode) and the counts.

        A static student has no limit: its texts are the rows, and their tokens are counted by ``core``.

        :raises LongTextError: a text past the student's limit with ``truncate`` off.
        """
        if isinstance(self.student, StaticStudent):
            n = len(texts)
            return Plan(list(texts), np.arange(n), np.ones(n), n, 0)
        return plan_texts(self.student, texts, long, truncate)

    def plan_ids(self, seqs: list[list[int]], long: str = "truncate", truncate: bool = True) -> Plan:
        """Token-id inputs, already checked against the vocabulary, as :meth:`plan_texts` plans texts."""
        return plan_ids(self.student, seqs, long, truncate)

    def core(self, seqs: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        """Raw full-width vectors (N, dim) of a merged batch, in chunks the model runs well, and (N,) the
        tokens of each row."""
        out = np.empty((len(seqs), self.student.dim), dtype=np.float32)
        tokens = np.empty(len(seqs), dtype=np.int64)
        texts = [i for i, q in enumerate(seqs) if isinstance(q, str)]
        ids = [i for i, q in enumerate(seqs) if not isinstance(q, str)]
        if texts:
            out[texts], tokens[texts] = self.student.embed_texts_counted([seqs[i] for i in texts])
        if ids:
            id_seqs = [seqs[i] for i in ids]
            for chunk in self.chunks(id_seqs):
                out[[ids[j] for j in chunk]] = self.student.embed_ids([id_seqs[j] for j in chunk])
            tokens[ids] = [len(q) for q in id_seqs]
        return out, tokens

    def chunks(self, seqs: list[list[int]]) -> list[list[int]]:
        """Row indices of each forward chunk: at most ``max_batch`` rows, and for padded students at most
        ``max_batch_tokens`` padded tokens, longest first. A merged batch of random lengths padded to its
        longest text costs more on a CPU than the texts one by one; similar lengths together cost half.
        """
        if not self.padded:
            return [list(range(start, min(start + self.max_batch, len(seqs))))
                    for start in range(0, len(seqs), self.max_batch)]
        out: list[list[int]] = []
        chunk: list[int] = []
        width = 1
        for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
            if chunk and ((len(chunk) + 1) * width > self.max_batch_tokens or len(chunk) == self.max_batch):
                out.append(chunk)
                chunk = []
            if not chunk:
                width = max(1, len(seqs[i]))  # the chunk's longest: every row is padded to it
            chunk.append(i)
        if chunk:
            out.append(chunk)
        return out

    @staticmethod
    def post(raw: np.ndarray, dim: int) -> np.ndarray:
        """The first ``dim`` dims of each row, re-normalized: (N, dim) float32, as ``Student.encode``."""
        return normalize(raw[:, :dim]).astype(np.float32, copy=False)


@dataclass
class _Job:
    seqs: list[list[int]]
    future: asyncio.Future


class Overloaded(Exception):
    """The server cannot take this request now (its queue is full, or it waited past the timeout): a 503."""


class Batcher:
    """Merges concurrent ``embed`` calls into forward passes of up to ``max_batch`` sequences.

    The first job of a batch waits at most ``max_wait_s`` for others; a job is never split across
    passes (one bigger than ``max_batch`` runs alone, and ``core`` chunks it). With ``merge=False``
    every job runs alone: one request per forward pass, the baseline the benchmark compares with.
    """

    def __init__(self, core: Callable[[list], np.ndarray | tuple[np.ndarray, ...]], max_batch: int = 256,
                 max_wait_s: float = 0.005, merge: bool = True, on_batch: Callable[[int, float], None] | None = None,
                 max_pending: int = 16_384, timeout_s: float = 30.0):
        self.core = core
        self.max_pending, self.timeout_s = max_pending, timeout_s
        self.pending = 0  # texts queued or in a forward pass: what the server holds for its clients
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.merge = merge
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._carry: _Job | None = None  # a job that did not fit the last batch: first in the next
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distill-core")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="distill-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        pending = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for job in pending:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def embed(self, seqs: list) -> np.ndarray | tuple[np.ndarray, ...]:
        """What ``core`` returns for one request's rows: raw full-width vectors (len(seqs), dim), or a tuple of
        arrays whose first axis is the rows (:meth:`Embedder.core`: vectors and token counts)."""
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        if not seqs:
            return np.empty((0, 0), dtype=np.float32)
        if self.pending + len(seqs) > self.max_pending:
            raise Overloaded(f"the server holds {self.pending} texts already (at most {self.max_pending}); "
                             "retry shortly")
        future = asyncio.get_running_loop().create_future()
        self.pending += len(seqs)
        self._queue.put_nowait(_Job(seqs, future))
        try:
            return await asyncio.wait_for(future, self.timeout_s)  # cancels the future: the batcher skips it
        except asyncio.TimeoutError:
            raise Overloaded(f"the request waited more than {self.timeout_s:g} s for a forward pass; "
                             "retry shortly") from None
        finally:
            self.pending -= len(seqs)

    async def _next_batch(self) -> list[_Job]:
        if self._queue is None:
            raise RuntimeError("the batcher is not running")
        if self._carry is not None:
            jobs, self._carry = [self._carry], None
        else:
            jobs = [await self._queue.get()]
        if not self.merge:
            return jobs
        n = len(jobs[0].seqs)
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_batch:
            try:
                if self._queue.empty():
                    job = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.monotonic()))
                else:  # jobs that queued up during the last forward pass: take them without waiting
                    job = self._queue.get_nowait()
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if n + len(job.seqs) > self.max_batch:
                self._carry = job
                break
            jobs.append(job)
            n += len(job.seqs)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._next_batch()
            jobs = [j for j in jobs if not j.future.done()]  # clients that went away
            if not jobs:
                continue
            seqs = [s for j in jobs for s in j.seqs]
            start = time.perf_counter()
            try:
                raw = await loop.run_in_executor(self._executor, self.core, seqs)  # (N, dim)
            except Exception as e:  # one failed pass fails its requests, never the batcher
                logger.exception("forward pass over %d sequences failed", len(seqs))
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(len(seqs), time.perf_counter() - start)
            offset = 0
            for j in jobs:
                if not j.future.done():
                    end = offset + len(j.seqs)
                    j.future.set_result(tuple(x[offset:end] for x in raw) if isinstance(raw, tuple)
                                        else raw[offset:end])
                offset += len(j.seqs)
