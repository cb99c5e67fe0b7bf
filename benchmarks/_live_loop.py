"""The live packing loop of ``partitioner_bench.py --live``: place + commit every arrival through a ``Packer``.

Imports nothing of the partitioner: the caller passes the ``Packer`` class, so the same loop measures this
tree and a baseline commit's (run in a child process with that commit's checkout first on the path; the
inputs arrive pickled, so both sides place the very same requests on the very same cluster).
"""

from __future__ import annotations

import pickle
import sys
import time
from typing import Any

import numpy as np


def run(packer_cls: Any, cluster: Any, demand: list, arrivals: list, policy: str, **options: Any) -> dict:
    """Allocation ratio (GPU blocks held / all non-MIG GPU blocks) at the end and at 100 % arrived, place() ms."""
    capacity = 100 * sum(len(node.gpus) for node in cluster.nodes)
    packer = packer_cls(cluster, policy=policy, demand=demand, **options)
    packer.place(arrivals[0])  # loads the kernels; not timed
    times = np.empty(len(arrivals))
    arrived = allocated = placed = 0
    at_full = None
    started = time.perf_counter()
    for i, req in enumerate(arrivals):
        t = time.perf_counter()
        got = packer.place(req)
        times[i] = time.perf_counter() - t
        share = 100 * req.gpus if req.gpus else req.blocks
        arrived += share
        if hasattr(got, "replicas"):
            packer.commit(got)
            allocated += share
            placed += 1
        if at_full is None and arrived >= capacity:
            at_full = allocated / capacity
    ms = times * 1e3
    return {"ratio_end": allocated / capacity, "ratio_at_100": at_full, "placed": placed, "arrivals": len(arrivals),
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "seconds": time.perf_counter() - started}


def child(path: str) -> None:
    """Child-process entry: the pickled (cluster, demand, arrivals, runs) at ``path`` in, the results pickled out."""
    from partitioner.place import Packer, warmup

    warmup()
    with open(path, "rb") as fh:
        cluster, demand, arrivals, runs = pickle.load(fh)
    out = [run(Packer, cluster, demand, arrivals, policy, **options) for policy, options in runs]
    sys.stdout.buffer.write(pickle.dumps(out))
