"""A dramatiq worker that sleeps while idle: its threads wake on a message, a due retry or ``stop``, not on a tick.

dramatiq's threads wait with a timeout (``worker_timeout``) and wake at each
one only to see whether they were stopped: 4 worker threads and 2 consumers at
100 ms were 60 wakeups a second of an idle ``gpuq serve``. What each wait
really waits for:

- a worker thread, the shared work queue (``queue.PriorityQueue.get``, which
  wakes on a put): here the queue is :class:`ClosableQueue`, which ``stop``
  closes, so the wait can be long (``IDLE_WAKE_S``) and shutdown still prompt;
- a consumer of the in-memory broker (``StubBroker``), its node queue (a
  ``queue.Queue``, which wakes on a put) and, for retries (the delay queue),
  the next message's eta: :class:`QuietStubConsumer` sleeps until the earlier
  of the two and ``stop`` wakes it;
- a Redis consumer polls (``do_fetch``, then a back-off up to the timeout):
  the timeout is its pickup latency, so it stays ``REDIS_PICKUP_MS``.
"""

from __future__ import annotations

import threading
import time
from queue import Empty, PriorityQueue, Queue
from typing import Any, cast

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker, _StubConsumer, _StubMessageProxy
from dramatiq.message import Message

IDLE_WAKE_S = 60.0  # the longest an idle thread sleeps: a missed wake-up would last this long, nothing else waits on it
REDIS_PICKUP_MS = 100  # a Redis consumer's longest poll back-off: a message waits this long at most


class ClosableQueue(PriorityQueue):
    """A priority queue whose blocking ``get`` raises ``Empty`` at once after ``close`` (items left stay gettable)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        with self.not_empty:
            self.closed = True
            self.not_empty.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if block:
            deadline = None if timeout is None else time.monotonic() + timeout
            with self.not_empty:
                while not self._qsize():
                    remaining_s = None if deadline is None else deadline - time.monotonic()
                    if self.closed or (remaining_s is not None and remaining_s <= 0):
                        raise Empty
                    self.not_empty.wait(remaining_s)
        return super().get(block=False)  # the lock is free again: another getter may have won (then Empty)


class QuietStubConsumer(_StubConsumer):
    """A ``StubBroker`` consumer that waits for a message, its delay queue's next eta or ``wake``, with no tick."""

    def __init__(self, queue: Queue, dead_letters: Any, prefetch: int, *, delayed: PriorityQueue) -> None:
        super().__init__(queue, dead_letters, prefetch, int(IDLE_WAKE_S * 1000))
        self._delayed = delayed  # its ConsumerThread's delay queue: items ordered by eta (epoch ms)
        self.closed = False

    def wake(self) -> None:
        """Make a waiting ``__next__`` return None now, and every later one at once (the thread is stopping)."""
        self.closed = True
        self.prefetch_semaphore.release()  # a wait for a prefetch slot ends too (the slot is never given back)
        with self.queue.not_empty:
            self.queue.not_empty.notify_all()  # other consumers of the queue wake, find it empty, wait again

    def _wait_s(self) -> float:
        """Until the next delayed message is due (the ConsumerThread re-enqueues it then), at most ``IDLE_WAKE_S``."""
        with self._delayed.mutex:
            eta_ms = self._delayed.queue[0].priority if self._delayed.queue else None
        if eta_ms is None:
            return IDLE_WAKE_S
        return min(IDLE_WAKE_S, max(0.0, eta_ms / 1000 - time.time()))

    def __next__(self) -> MessageProxy | None:
        deadline = time.monotonic() + self._wait_s()
        if not self.prefetch_semaphore.acquire(timeout=self._wait_s()) or self.closed:
            return None
        queue = self.queue
        while True:
            with queue.not_empty:
                while not queue._qsize():
                    remaining_s = deadline - time.monotonic()
                    if self.closed or remaining_s <= 0:
                        self.prefetch_semaphore.release()
                        return None
                    queue.not_empty.wait(remaining_s)
            try:
                data = queue.get(block=False)  # the lock is free again: another consumer may have taken it
            except Empty:
                continue
            return _StubMessageProxy(Message.decode(data))


class _ConsumingBroker:
    """The broker as the worker's threads see it: the same broker, but its consumers are quiet ones."""

    def __init__(self, broker: StubBroker, worker: QuietWorker) -> None:
        self._broker = broker
        self._worker = worker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 0) -> QuietStubConsumer:
        return self._worker.quiet_consumer(self._broker, queue_name, prefetch)


class QuietWorker(dramatiq.Worker):
    """``dramatiq.Worker`` whose idle threads sleep (see the module docstring); ``stop`` wakes them."""

    def __init__(self, broker: dramatiq.Broker, *, queues: set[str], worker_threads: int) -> None:
        quiet = isinstance(broker, StubBroker)
        seen = cast(dramatiq.Broker, _ConsumingBroker(broker, self)) if isinstance(broker, StubBroker) else broker
        super().__init__(seen, queues=queues, worker_threads=worker_threads,
                         worker_timeout=int(IDLE_WAKE_S * 1000) if quiet else REDIS_PICKUP_MS)
        self.work_queue: ClosableQueue = ClosableQueue()
        self._quiet: list[QuietStubConsumer] = []
        self._quiet_lock = threading.Lock()
        self._stopping = False

    def _add_worker(self) -> None:
        super()._add_worker()
        self.workers[-1].timeout = IDLE_WAKE_S  # a put or ``stop`` wakes it (Redis consumers keep the short poll)

    def quiet_consumer(self, broker: StubBroker, queue_name: str, prefetch: int) -> QuietStubConsumer:
        """A consumer for the calling ConsumerThread (``broker.consume`` runs on it), closed if already stopping."""
        try:
            queue, dead_letters = broker.queues[queue_name], broker.dead_letters_by_queue[queue_name]
        except KeyError:
            raise dramatiq.errors.QueueNotFound(queue_name) from None
        consumer = QuietStubConsumer(queue, dead_letters, prefetch, delayed=self.consumers[queue_name].delay_queue)
        with self._quiet_lock:
            self._quiet.append(consumer)
            if self._stopping:
                consumer.wake()
        return consumer

    def stop(self, timeout: int = 600000) -> None:
        """Tell every thread to stop, wake those waiting, then dramatiq's own shutdown (join, requeue, close)."""
        for thread in self.workers:
            thread.stop()
        self.work_queue.close()
        for consumer_thread in self.consumers.values():
            consumer_thread.stop()
        with self._quiet_lock:
            self._stopping = True
            for consumer in self._quiet:
                consumer.wake()
        super().stop(timeout)
