"""A bounded hand-over of batches from one producer thread to the consumer (the bulk loaders:
the demo data's generator, the census file's reader), so Python builds the next batch while
PostgreSQL stores this one."""

from __future__ import annotations

import queue
import threading
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.2
"""How often a waiting side looks whether the other has stopped."""


class Handoff(Generic[T]):
    """The producer `put`s batches, then an exception it raised or None at its end; the consumer
    `get`s them. Once `stopped` is set, neither side waits any longer."""

    def __init__(self, maxsize: int) -> None:
        self._queue: queue.Queue[T | BaseException | None] = queue.Queue(maxsize)
        self.stopped = threading.Event()

    def put(self, item: T | BaseException | None) -> bool:
        """Hand `item` over (waiting for room); False if the consumer stopped first."""
        while not self.stopped.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def get(self) -> T | None:
        """The next batch (blocking), or None after the last or once stopped; raises what the
        producer raised."""
        while True:
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stopped.is_set():
                    return None
                continue
            if isinstance(item, BaseException):
                raise item
            return item
