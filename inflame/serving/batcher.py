"""Micro-batching: images from requests arriving together share one forward pass."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Runs `work` on one worker thread over batches of submitted items. A batch starts
    with the oldest waiting item and takes what else arrives within `max_wait` seconds, up
    to `max_batch` items; `work` returns one result per item, in order. Its exception is
    every item's exception in that batch, and the worker goes on."""

    def __init__(
        self,
        work: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch: int,
        max_wait: float,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.work, self.max_batch, self.max_wait = work, max_batch, max_wait
        self.on_batch = on_batch
        self.failed: BaseException | None = None  # what ended the worker, if anything did
        self._queue: queue.SimpleQueue[tuple[Item, Future[Result]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="inflame-batcher", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence[Item]) -> list[Future[Result]]:
        if self.failed is not None:
            raise RuntimeError(f"the batcher stopped: {self.failed!r}")
        futures: list[Future[Result]] = []
        for item in items:
            future: Future[Result] = Future()
            self._queue.put((item, future))
            futures.append(future)
        return futures

    def close(self) -> None:
        """Finish what was submitted, then stop the worker."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # never silently: whoever waits would wait forever
            self.failed = exc
            raise

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, closing = [first], False
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    entry = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if entry is None:
                    closing = True
                    break
                batch.append(entry)
            self._process(batch)
            if closing:
                return

    def _process(self, batch: list[tuple[Item, Future[Result]]]) -> None:
        # a request that gave up (its future cancelled) is dropped from the batch
        batch = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            results: Sequence[Any] = self.work([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except BaseException as exc:  # every waiting request learns of it
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
