"""The admitter: one at a time, it turns the pure cycle's decisions into allocations and launches.

One concept per module:

- ``loop``         the thread: wake / timer, one cycle under the admission lock (``Admitter``)
- ``read``         rows -> domain values: the free cluster (``build_cluster``) and the ``Snapshot``
- ``hardware``     what real GPUs cannot change by themselves (MIG mode is the driver's)
- ``persist``      one cycle's decisions -> the lifecycle (admit, preempt) and wait reasons
- ``launch``       the launch spec an agent gets for one replica of one attempt
- ``feasibility``  "can this request *ever* fit?", cached between submissions
- ``reconcile``    lost nodes, and re-sending what the database says is outstanding
"""

from queue_service.admitter.feasibility import Feasibility
from queue_service.admitter.loop import ADVISORY_LOCK_KEY, Admitter, CycleReport
from queue_service.admitter.read import build_cluster

__all__ = ["ADVISORY_LOCK_KEY", "Admitter", "CycleReport", "Feasibility", "build_cluster"]
