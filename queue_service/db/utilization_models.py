"""Measured use per job, summed as samples arrive (revision 0014): the figures efficiency reads.

One row per job, updated by ``billing.samples.record`` in the transaction
that stores the samples, never recomputed from ``gpu_samples``: a sample
adds its window to the sums here. A replica's samples of one batch count
as one observation of that replica (its devices together):

- busy: ``busy_equiv_s`` (GPU-equivalent seconds of SM work: SM % / 100 per
  device) over ``allocated_equiv_s`` (GPU-equivalent seconds held on the
  devices that reported an SM figure), so 12 % SM on a 50-block share is
  0.24 of what was allocated; MIG devices report no SM % and add nothing;
- ``share_seconds``: a histogram of that busy share per observation, 101
  bins (``ceil(share × 100)``: bin 0 is fully idle, bin 100 fully busy),
  weighted by the observation's seconds — the run's distribution, from
  which the right-size hint reads a percentile;
- memory: the replica's GPU memory in use (summed over its devices), time
  weighted for the mean, and its peak, against ``allocated_memory_mib``
  (a whole GPU's memory, a block job's ``gpu_memory_mib``, a MIG instance's).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from queue_service.db.base import Base, utcnow

SHARE_BINS = 101  # ceil(share × 100): 0 … 100


class JobUtilization(Base):
    """What the agents measured of one job over its run (all attempts), kept up to date per sample batch."""

    __tablename__ = "job_utilization"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(32), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # the attempt of the latest observation
    observations: Mapped[int] = mapped_column(Integer, default=0)  # replica sample batches counted
    sampled_s: Mapped[float] = mapped_column(Float, default=0.0)  # replica-seconds with an SM figure
    allocated_equiv_s: Mapped[float] = mapped_column(Float, default=0.0)
    busy_equiv_s: Mapped[float] = mapped_column(Float, default=0.0)
    share_seconds: Mapped[list[float]] = mapped_column(JSON, default=list)  # SHARE_BINS bins, seconds each
    memory_s: Mapped[float] = mapped_column(Float, default=0.0)  # replica-seconds with a memory figure
    memory_mib_s: Mapped[float] = mapped_column(Float, default=0.0)  # Σ memory in use × seconds
    peak_memory_mib: Mapped[int] = mapped_column(Integer, default=0)  # one replica's, at its busiest
    allocated_memory_mib: Mapped[int] = mapped_column(Integer, default=0)  # one replica's GPU memory held
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
