"""Placement policies by name.

* ``random`` — a uniformly random feasible node (baseline);
* ``best-fit`` — the node left fullest in CPU and GPU (openb README formula);
* ``fgd`` — Fragmentation Gradient Descent (Weng et al., ATC'23): the node
  whose fragmentation, measured against the target workload, drops most;
* ``first-fit`` — the first node (and GPU) that fits, in node order: what a
  team with no scheduler does (a baseline for the queued replay);
* ``gpuq`` — FGD with a CPU-aware, multi-task fragment measure, the rule
  chosen per workload by :mod:`partitioner.policies.gpuq_rule` (replay and
  live service alike; docs/partitioner.md); the default because it measured best.
"""

from __future__ import annotations

POLICIES: tuple[str, ...] = ("random", "best-fit", "fgd", "gpuq", "first-fit")
POLICY_IDS: dict[str, int] = {name: i for i, name in enumerate(POLICIES)}
DEFAULT_POLICY = "gpuq"

__all__ = ["DEFAULT_POLICY", "POLICIES", "POLICY_IDS"]
