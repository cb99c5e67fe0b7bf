"""A transaction's commands go to real Redis in one pipeline (``Dispatcher.send``), and dramatiq's own
consumer reads them as it reads a single send: every message, in order per node queue, each with its own
Redis message id, acknowledged like any other."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dramatiq import Message

from queue_service.dispatch import Dispatcher, make_broker
from tests.services import require_redis
from workers.messages import LAUNCH_ACTOR, STOP_ACTOR, LaunchSpec, StopRequest, node_queue_name


@pytest.fixture
def dispatcher() -> Iterator[Dispatcher]:
    broker = make_broker(require_redis())
    broker.client.flushdb()  # this xdist worker's own database (tests/services.py)
    yield Dispatcher(broker)
    broker.client.flushdb()
    broker.close()


def _drain(dispatcher: Dispatcher, node_name: str) -> list[Message]:
    """Every message waiting in the node's queue, through dramatiq's consumer, each acknowledged."""
    consumer = dispatcher.broker.consume(node_queue_name(node_name), prefetch=100, timeout=100)
    out = []
    try:
        while (message := next(consumer)) is not None:
            out.append(message)
            consumer.ack(message)
    finally:
        consumer.close()
    return out


def _launch(job_id: str, node_name: str) -> LaunchSpec:
    return LaunchSpec(job_id=job_id, attempt=1, node_name=node_name, command=["true"])


def test_one_pipeline_delivers_every_command_in_order(dispatcher: Dispatcher) -> None:
    launches = [_launch(f"j{i}", "n1" if i % 3 else "n2") for i in range(30)]
    stops = [StopRequest(job_id="j0", attempt=1, node_name="n2", grace_s=5.0, reason="preempted", replica=0)]
    calls = []
    pipeline = dispatcher.broker.client.pipeline

    def counted(*args, **kwargs):
        calls.append(1)
        return pipeline(*args, **kwargs)

    dispatcher.broker.client.pipeline = counted
    assert dispatcher.send(launches, stops)
    assert len(calls) == 1, "one pipeline for the whole transaction"

    got_n1, got_n2 = _drain(dispatcher, "n1"), _drain(dispatcher, "n2")
    assert [m.args[0]["job_id"] for m in got_n1] == [s.job_id for s in launches if s.node_name == "n1"]
    assert [(m.actor_name, m.args[0]["job_id"]) for m in got_n2] == [
        *((LAUNCH_ACTOR, s.job_id) for s in launches if s.node_name == "n2"), (STOP_ACTOR, "j0")]
    assert got_n2[-1].args[0] == stops[0].to_dict()
    ids = [m.options["redis_message_id"] for m in got_n1 + got_n2]
    assert len(set(ids)) == len(launches) + len(stops), "each message has its own Redis id"
    assert _drain(dispatcher, "n1") == [], "acknowledged: nothing comes back"


def test_a_single_command_and_nothing_at_all(dispatcher: Dispatcher) -> None:
    assert dispatcher.send([_launch("solo", "n1")], [])
    assert [m.args[0]["job_id"] for m in _drain(dispatcher, "n1")] == ["solo"]
    assert dispatcher.send([], [])
    assert _drain(dispatcher, "n1") == []


def test_a_broker_that_is_down_fails_the_send_not_the_caller() -> None:
    dispatcher = Dispatcher(make_broker("redis://127.0.0.1:1/0"))  # nothing listens there
    assert dispatcher.send([_launch("a", "n1"), _launch("b", "n1")], []) is False
