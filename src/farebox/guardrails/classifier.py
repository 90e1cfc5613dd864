"""Layer 2 of prompt-injection screening: a local classifier (``farebox[guard-model]``),
run off the event loop with a bounded queue and a timeout.

``ClassifierRunner`` owns ``threads`` worker threads (1 by default). A request's texts wait in
one queue of at most ``max_queue`` texts; a worker takes every waiting request, up to
``max_batch`` texts, and scores them in one model call (micro-batching: under load a call
serves many requests). The event loop never waits on the model:

- a full queue (or a closed runner) is a ``ClassifierTimeout`` at once, and so is a request
  that would wait past its ``timeout_ms`` (the texts ahead of it times the model's moving
  average time per text): under overload a request is refused now, not after waiting in vain;
- a request not answered within its plan's ``timeout_ms`` (queue included) is a
  ``ClassifierTimeout``; a worker drops what expired before it started on it;
- a failing model is a ``ClassifierFailed`` (a ``ClassifierTimeout``: the plan's
  ``on_timeout`` applies), logged with the exception's type only, never a text.

Scores are remembered by the text's digest (``cache`` texts, least recently used first out):
a conversation resends its history with every turn, and an earlier message is not scored
again. Only the digest and the score are kept, never the text.

``close()`` answers every waiting request with ``ClassifierTimeout``, lets the running batch
finish and joins the threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from farebox.errors import GuardrailUnavailable

if TYPE_CHECKING:
    from farebox.config.guardrail_model import GuardModelSettings

DETECTOR = "injection_classifier"
log = logging.getLogger("farebox.guardrails")


class LocalClassifier(Protocol):
    """A local model: the injection probability of each text, in [0, 1]. Blocking."""

    def scores(self, texts: list[str]) -> list[float]: ...


class ClassifierTimeout(Exception):
    """The classifier did not answer within the plan's ``timeout_ms`` (queue included)."""


class ClassifierFailed(ClassifierTimeout):
    """The model raised: treated as a timeout (the plan's ``on_timeout``)."""


@dataclass(eq=False)
class _Job:
    texts: list[str]
    deadline: float  # time.monotonic()
    future: Future[list[float]] = field(default_factory=Future)


class ClassifierRunner:
    """Runs a ``LocalClassifier`` in worker threads, with a bounded queue of texts."""

    def __init__(
        self,
        model: LocalClassifier,
        max_queue: int = 64,
        *,
        threads: int = 1,
        max_batch: int = 16,
        cache: int = 4096,
        name: str = "farebox-guard",
    ) -> None:
        if max_queue < 1 or threads < 1 or max_batch < 1 or cache < 0:
            raise ValueError("max_queue, threads and max_batch are at least 1")
        self._cache: OrderedDict[bytes, float] = OrderedDict()  # the event loop's only
        self._cache_size = cache
        self.model = model
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.timeouts = 0  # requests answered with ClassifierTimeout (full queue included)
        self.rejected = 0  # of which: refused at once, the queue being full or closed
        self._waiting = 0  # texts queued, not yet taken by a worker
        self._running = 0  # texts being scored
        self.text_s = 0.0  # the model's time per text, a moving average (0: not known yet)
        self._jobs: deque[_Job] = deque()
        self._closed = False
        self._ready = threading.Condition()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        """Texts queued and not yet taken by a worker."""
        return self._waiting

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def submit(self, texts: list[str], timeout_ms: int) -> Future[list[float]] | None:
        """Queue ``texts``; ``None`` when the queue is full or the runner closed. A request
        larger than the whole queue is admitted when nothing else waits."""
        job = self._submit(texts, timeout_ms)
        return job.future if job is not None else None

    def _submit(self, texts: list[str], timeout_ms: int) -> _Job | None:
        job = _Job(list(texts), time.monotonic() + timeout_ms / 1000)
        with self._ready:
            fits = self._waiting == 0 or self._waiting + len(texts) <= self.max_queue
            # the wait this request can expect, ahead of it and its own: past its timeout, it
            # is refused now rather than after timeout_ms spent waiting for nothing
            # (an idle runner admits anything: the estimate is only refreshed by scoring)
            ahead = self._waiting + self._running
            wait_ms = (ahead + len(texts)) * self.text_s / len(self._threads) * 1000
            late = ahead > 0 and wait_ms > timeout_ms
            if self._closed or not fits or late:
                self.rejected += 1
                self.timeouts += 1
                return None
            self._waiting += len(texts)
            self._jobs.append(job)
            self._ready.notify()
        return job

    def _withdraw(self, job: _Job) -> None:
        """A request whose caller gave up leaves the queue at once (if still in it)."""
        job.future.cancel()
        with self._ready:
            try:
                self._jobs.remove(job)
            except ValueError:
                return  # a worker has it already
            self._waiting -= len(job.texts)

    async def scores(self, texts: list[str], timeout_ms: int) -> list[float]:
        """The texts' scores; ``ClassifierTimeout`` past ``timeout_ms`` or with a full queue."""
        keys = [_digest(text) for text in texts]
        known = [self._remembered(key) for key in keys]
        todo = [i for i, score in enumerate(known) if score is None]
        if todo:
            found = await self._score([texts[i] for i in todo], timeout_ms)
            for i, score in zip(todo, found, strict=True):
                known[i] = score
                self._remember(keys[i], score)
        return [score if score is not None else 0.0 for score in known]

    def _remembered(self, key: bytes) -> float | None:
        score = self._cache.get(key)
        if score is not None:
            self._cache.move_to_end(key)
        return score

    def _remember(self, key: bytes, score: float) -> None:
        if self._cache_size:
            self._cache[key] = score
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    async def _score(self, texts: list[str], timeout_ms: int) -> list[float]:
        job = self._submit(texts, timeout_ms)
        if job is None:
            raise ClassifierTimeout("the classifier's queue is full (or would answer too late)")
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout_ms / 1000)
        except TimeoutError:
            self._withdraw(job)
            self.timeouts += 1
            raise ClassifierTimeout(f"no classifier answer within {timeout_ms} ms") from None
        except ClassifierTimeout:
            self.timeouts += 1
            raise
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    async def close(self) -> None:
        """Answer the waiting requests with ``ClassifierTimeout``, finish the running batch,
        join the threads."""
        with self._ready:
            self._closed = True
            drained = list(self._jobs)
            self._jobs.clear()
            self._waiting = 0
            self._ready.notify_all()
        for job in drained:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(ClassifierTimeout("the classifier closed"))
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _take(self) -> list[_Job] | None:
        """The next batch: waiting jobs (at least one, then up to ``max_batch`` texts) that
        are neither cancelled nor expired; None once closed."""
        with self._ready:
            while not self._jobs and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            batch: list[_Job] = []
            size, now = 0, time.monotonic()
            while self._jobs and (not batch or size + len(self._jobs[0].texts) <= self.max_batch):
                job = self._jobs.popleft()
                self._waiting -= len(job.texts)
                if not job.future.set_running_or_notify_cancel():
                    continue  # its caller gave up
                if job.deadline <= now:  # its caller is about to give up: not worth scoring
                    job.future.set_exception(ClassifierTimeout("expired in the queue"))
                    continue
                batch.append(job)
                size += len(job.texts)
            self._running += size
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        texts = [text for job in batch for text in job.texts]
        began = time.monotonic()
        try:
            found = self.model.scores(texts)
            if len(found) != len(texts):
                raise ValueError(f"{len(found)} scores for {len(texts)} texts")
        except Exception as exc:  # a failing model is a timeout for the plan, never a crash
            log.warning("guard classifier failed: %s", type(exc).__name__)
            for job in batch:
                job.future.set_exception(ClassifierFailed(type(exc).__name__))
            return
        finally:
            self._took(len(texts), time.monotonic() - began)
        start = 0
        for job in batch:
            job.future.set_result([float(s) for s in found[start : start + len(job.texts)]])
            start += len(job.texts)

    def _took(self, texts: int, seconds: float) -> None:
        """A batch is done: its texts no longer run, and the time per text moves."""
        per_text = seconds / texts
        with self._ready:
            self._running -= texts
            known = self.text_s
            self.text_s = per_text if not known else 0.8 * known + 0.2 * per_text


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def load_classifier(
    model: str = "nanoguard",
    path: str | None = None,
    *,
    threads: int = 1,
    max_batch: int = 16,
    int8: bool = False,
) -> LocalClassifier:
    """The configured local model (``nanoguard``: the ``metatronnanoguard`` package's; or a
    local checkpoint at ``path``). ``GuardrailUnavailable`` names the extra when missing."""
    from farebox.guardrails import classifier_models as models

    if path is not None:
        return models.LocalCheckpoint(path, threads=threads, max_batch=max_batch)
    if model != "nanoguard":
        raise GuardrailUnavailable(
            f"unknown guard model {model!r}: 'nanoguard', or 'local' with a path"
        )
    return models.NanoGuardModel(threads=threads, max_batch=max_batch, int8=int8)


def runner_for(cfg: GuardModelSettings) -> ClassifierRunner:
    """A runner of the model ``cfg`` (``guard_model:``) names, loaded and warmed up (blocking;
    ``GuardrailUnavailable`` naming the extra or the bad checkpoint)."""
    path = cfg.path if cfg.model == "local" else None
    model = load_classifier(cfg.model, path, threads=1, max_batch=cfg.max_batch, int8=cfg.int8)
    model.scores(["warm-up: the first call is the slow one"])  # and a broken model fails here
    return ClassifierRunner(
        model, cfg.queue, threads=cfg.threads, max_batch=cfg.max_batch, cache=cfg.cache
    )
