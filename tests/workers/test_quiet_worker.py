"""The agent's dramatiq worker sleeps while idle, yet picks a message up at once, retries on time and stops promptly."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from queue import Empty

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from workers.quiet import IDLE_WAKE_S, REDIS_PICKUP_MS, ClosableQueue, QuietWorker


@pytest.fixture
def broker() -> StubBroker:
    broker = StubBroker()
    broker.emit_after("process_boot")
    return broker


def _worker(broker: StubBroker, calls: list[float], *, fail_first: int = 0) -> QuietWorker:
    failures = [fail_first]

    @dramatiq.actor(actor_name="ping", queue_name="q", broker=broker, max_retries=3, min_backoff=200,
                    max_backoff=200)
    def ping() -> None:
        calls.append(time.monotonic())
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("once more")

    broker.declare_queue("q")
    worker = QuietWorker(broker, queues={"q"}, worker_threads=4)
    worker.start()
    return worker


def _switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)


def _quiet_threads(worker: QuietWorker) -> list[threading.Thread]:
    threads: list[threading.Thread] = [*worker.workers, *worker.consumers.values()]
    deadline = time.monotonic() + 5
    while not all(t.native_id for t in threads) or len(worker._quiet) < len(worker.consumers):
        assert time.monotonic() < deadline, "the worker's threads did not start"
        time.sleep(0.01)
    time.sleep(0.2)  # into their waits
    return threads


def test_idle_threads_do_not_wake(broker: StubBroker) -> None:
    worker = _worker(broker, [])
    try:
        threads = _quiet_threads(worker)
        assert len(threads) == 6  # 4 worker threads, the queue's consumer and its delay queue's
        before = {t.native_id: _switches(t.native_id) for t in threads if t.native_id}
        time.sleep(1.0)  # dramatiq's own 100 ms timeout: 10 wakeups per thread in this second
        woke = {tid: _switches(tid) - count for tid, count in before.items()}
        assert max(woke.values()) <= 1, woke
    finally:
        worker.stop()


def test_a_message_to_an_idle_worker_runs_at_once(broker: StubBroker) -> None:
    calls: list[float] = []
    worker = _worker(broker, calls)
    try:
        _quiet_threads(worker)
        time.sleep(0.5)
        sent = time.monotonic()
        broker.actors["ping"].send()
        deadline = sent + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.002)
        assert calls and calls[0] - sent < 0.1, "the put did not wake the sleeping consumer and worker"
    finally:
        worker.stop()


def test_a_retry_runs_at_its_backoff_not_at_the_idle_wake(broker: StubBroker) -> None:
    calls: list[float] = []
    worker = _worker(broker, calls, fail_first=1)
    try:
        _quiet_threads(worker)
        broker.actors["ping"].send()
        deadline = time.monotonic() + 10
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) == 2, "the retry never ran"
        # backoff capped at 200 ms (dramatiq jitters it to 100-200 ms): due long before the consumers' idle wake
        assert 0.09 < calls[1] - calls[0] < 1.0, calls[1] - calls[0]
    finally:
        worker.stop()


def test_stop_is_prompt_though_the_threads_sleep_long(broker: StubBroker) -> None:
    worker = _worker(broker, [])
    threads = _quiet_threads(worker)
    started = time.monotonic()
    worker.stop(timeout=int(IDLE_WAKE_S * 1000))
    assert time.monotonic() - started < 1.0
    assert not any(t.is_alive() for t in threads)


def test_a_message_sent_after_stop_waits_in_the_queue_for_the_next_worker(broker: StubBroker) -> None:
    calls: list[float] = []
    worker = _worker(broker, calls)
    _quiet_threads(worker)
    worker.stop()
    broker.actors["ping"].send()
    time.sleep(0.2)
    assert not calls  # the stopped worker's threads took nothing
    assert broker.queues["q"].qsize() == 1
    nxt = QuietWorker(broker, queues={"q"}, worker_threads=1)
    nxt.start()
    try:
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert calls
    finally:
        nxt.stop()


def test_closable_queue_wakes_a_blocked_get_and_keeps_its_items() -> None:
    queue = ClosableQueue()
    got: list[object] = []

    def getter() -> None:
        try:
            got.append(queue.get(timeout=IDLE_WAKE_S))
        except Empty:
            got.append("empty")

    thread = threading.Thread(target=getter)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    queue.close()
    thread.join(timeout=2)
    assert got == ["empty"] and time.monotonic() - started < 0.5
    queue.put(1)
    assert queue.get(timeout=1) == 1  # an item left in a closed queue is still there (dramatiq requeues them)
    with pytest.raises(Empty):
        queue.get(timeout=IDLE_WAKE_S)  # closed and empty: at once


def test_a_redis_worker_keeps_its_short_poll() -> None:
    from dramatiq.brokers.redis import RedisBroker

    worker = QuietWorker(RedisBroker(url="redis://127.0.0.1:1/0"), queues={"q"}, worker_threads=1)
    assert worker.worker_timeout == REDIS_PICKUP_MS  # a Redis consumer polls: this is its pickup latency
