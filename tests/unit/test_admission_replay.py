"""The queued replay (admission/replay.py) on a tiny trace: waits, backfill, FIFO baseline."""

from __future__ import annotations

from partitioner.place import Packer
from partitioner.types import Request
from queue_service.admission.replay import TraceJob, replay_queue
from tests.support.builders import cluster, gpu, node
from tests.support.first_fit import FirstFitPacker

TWO = cluster(node("n", gpu("g0"), gpu("g1", index=1)))
# A holds one GPU 10 s; the 2-GPU head must wait for it; the 1-GPU short job fits the gap before A ends.
TINY = [TraceJob("a", Request(gpus=1), 0, 10), TraceJob("head", Request(gpus=2), 1, 5),
        TraceJob("short", Request(gpus=1), 2, 3), TraceJob("long", Request(gpus=1), 3, 100)]


def test_the_real_cycle_backfills_the_gap_and_keeps_the_heads_start() -> None:
    result = replay_queue(TWO, TINY, Packer)
    waits = dict(zip(["a", "short", "head", "long"], result.waits_s, strict=True))
    assert waits == {"a": 0, "short": 0, "head": 9, "long": 12}, waits  # head at 10, when a ends; long after it
    assert result.never_started == 0 and result.makespan_s == 115
    assert 0 < result.allocation_ratio <= 1


def test_strict_fifo_does_not_backfill() -> None:
    result = replay_queue(TWO, TINY, FirstFitPacker, strict_fifo=True)
    assert sorted(result.waits_s) == [0, 9, 12, 13], result.waits_s  # short waits behind the head
    assert result.percentile(0.5) == 9 and result.mean_wait_s == 8.5


def test_a_job_that_never_fits_is_counted() -> None:
    jobs = [TraceJob("big", Request(gpus=3), 0, 1), TraceJob("ok", Request(gpus=1), 1, 1)]
    result = replay_queue(TWO, jobs, Packer)
    assert result.never_started == 1 and result.waits_s == [0]
