"""The one checker every fault test ends with.

1. every job is final, or live (admitted / running) on nodes whose lease is valid by the database's clock;
2. no slice is held twice (whole GPU or MIG placement once; blocks of one GPU at most 100; a whole GPU alone);
3. finished and queued jobs hold nothing, and no allocation of a non-current attempt is live;
4. ``docker ps`` by label (a process-runtime cluster: the live shims) matches the database: what runs
   on the cluster's nodes is exactly the current attempts of running jobs (polled briefly: an exit
   report may be in flight);
5. (``check_stamps``) from the processes themselves: the start/end stamps each attempt wrote show
   no two attempts of one job alive at once; for containers (``ContainerSpans``) the engine's own
   start and finish times of each attempt's container, polled while the job runs.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text

from tests.faults.cluster import FINAL, Cluster


def _db_state(cluster: Cluster) -> tuple[list[str], set[tuple[str, int, int]]]:
    problems: list[str] = []
    with cluster.engine.connect() as conn:
        now = conn.execute(text("SELECT clock_timestamp() AT TIME ZONE 'UTC'")).scalar()
        jobs = {r.id: r for r in conn.execute(text("SELECT id, state, attempt FROM jobs"))}
        allocs = conn.execute(text(
            "SELECT a.job_id, a.attempt, a.replica, a.kind, a.gpu_uuid, a.slot, a.blocks, n.name, n.status, "
            "n.lease_expires_at FROM allocations a JOIN nodes n ON n.id = a.node_id WHERE a.released_at IS NULL"
        )).all()
    running: set[tuple[str, int, int]] = set()
    slots: dict[tuple[str, str], list[str]] = defaultdict(list)
    blocks: dict[str, int] = defaultdict(int)
    whole: dict[str, set[str]] = defaultdict(set)
    for a in allocs:
        job = jobs[a.job_id]
        if job.state in FINAL or job.state == "queued":
            problems.append(f"{job.state} job {a.job_id} still holds {a.kind} on {a.name}")
        if a.attempt != job.attempt:
            problems.append(f"job {a.job_id}: live allocation of old attempt {a.attempt} (current {job.attempt})")
        if job.state in ("admitted", "running") and (a.status != "ready" or a.lease_expires_at < now):
            problems.append(f"live job {a.job_id} on node {a.name} ({a.status}, lease until {a.lease_expires_at})")
        if job.state == "running":
            running.add((a.job_id, a.attempt, a.replica))
        if a.gpu_uuid is None:
            continue
        whole[a.gpu_uuid].add(a.kind)
        if a.kind == "blocks":
            blocks[a.gpu_uuid] += a.blocks
        else:
            slots[(a.gpu_uuid, a.slot)].append(a.job_id)
    problems += [f"slot {k} held by {v}" for k, v in slots.items() if len(v) > 1]
    problems += [f"GPU {g} has {b} blocks held" for g, b in blocks.items() if b > 100]
    problems += [f"GPU {g} held whole and shared ({kinds})" for g, kinds in whole.items()
                 if "gpu" in kinds and len(kinds) > 1]
    return problems, running


def _docker_running(cluster: Cluster) -> set[tuple[str, int, int]]:
    return {
        (c["Labels"]["gpuq.job"], int(c["Labels"]["gpuq.attempt"]), int(c["Labels"].get("gpuq.replica", "0")))
        for c in cluster.containers(all=False)
    }


def _shims_running(cluster: Cluster) -> set[tuple[str, int, int]]:
    return {key for key, held in cluster.shims().items() if held["alive"] and not held["exit"]}


def check_invariants(cluster: Cluster, *, settle_s: float = 8.0) -> None:
    """Assert the four invariants (see the module docstring); raise with every problem found."""
    deadline = time.monotonic() + settle_s
    while True:
        problems, running = _db_state(cluster)
        in_docker = _docker_running(cluster) if cluster.docker is not None else _shims_running(cluster)
        if in_docker != running:
            problems.append(f"docker runs {sorted(in_docker - running)} the database does not; "
                            f"the database runs {sorted(running - in_docker)} docker does not")
        if not problems:
            return
        if time.monotonic() > deadline:
            raise AssertionError("invariants violated:\n  " + "\n  ".join(problems))
        time.sleep(0.25)


def assert_no_leftovers(cluster: Cluster) -> None:
    """Once every job is final, no container of the cluster is left (exited ones included)."""
    deadline = time.monotonic() + 8
    while cluster.containers(all=True):
        if time.monotonic() > deadline:
            left = [(c["Names"], c["State"]) for c in cluster.containers(all=True)]
            raise AssertionError(f"containers left behind: {left}")
        time.sleep(0.25)


def stamps(cluster: Cluster, job_id: str) -> dict[int, tuple[float, float, bool]]:
    """attempt -> (first stamp, last stamp, ended normally), from the files the job's processes wrote."""
    out = {}
    for path in cluster.stamps.glob(f"{job_id}.*"):
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        times = [float(t) for _kind, t in rows]
        out[int(path.suffix[1:])] = (min(times), max(times), rows[-1][0] == "end")
    return out


def check_stamps(cluster: Cluster, job_ids: list[str]) -> None:
    """No two attempts of one job were alive at once, by their own stamps (not the database's word)."""
    problems = []
    for job_id in job_ids:
        spans = sorted(stamps(cluster, job_id).items(), key=lambda kv: kv[1][0])
        for (a, (_s1, e1, _end1)), (b, (s2, _e2, _end2)) in itertools.pairwise(spans):
            if s2 <= e1:
                problems.append(f"job {job_id}: attempt {b} started at {s2:.2f} while attempt {a} ran until {e1:.2f}")
    assert not problems, "jobs ran twice at once:\n  " + "\n  ".join(problems)


def _docker_time(value: str) -> datetime | None:
    """Docker's RFC 3339 nanosecond stamp (``0001-01-01T00:00:00Z``: never) as a naive UTC datetime."""
    if not value or value.startswith("0001-"):
        return None
    return datetime.fromisoformat(value[:26].rstrip("Z"))


@dataclass
class ContainerSpans:
    """Each attempt's container as the engine saw it, polled (``poll``) while a job runs; ``overlaps`` at any poll."""

    cluster: Cluster
    job_id: str
    spans: dict[int, tuple[datetime | None, datetime | None]] = field(default_factory=dict)  # attempt -> start, end
    overlaps: list[str] = field(default_factory=list)  # polls that saw two containers of the job running

    def poll(self) -> None:
        import docker.errors

        running = []
        for container in self.cluster.containers(job_id=self.job_id, all=True):
            try:
                state = self.cluster.inspect(container)["State"]
            except docker.errors.NotFound:  # removed between the list and the inspect
                continue
            attempt = int(container["Labels"]["gpuq.attempt"])
            start, end = _docker_time(state.get("StartedAt", "")), _docker_time(state.get("FinishedAt", ""))
            if state.get("Running"):
                running.append(attempt)
                end = None
            old = self.spans.get(attempt, (None, None))
            self.spans[attempt] = (start or old[0], end or old[1])
        if len(running) > 1:
            self.overlaps.append(f"attempts {sorted(running)} of job {self.job_id} ran at once")

    def until_final(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            job = self.cluster.job(self.job_id)
            if job["state"] in FINAL:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {self.job_id} not final after {timeout_s} s: {job['state']}")
            time.sleep(0.1)

    def check(self) -> None:
        """No two attempts' containers alive at once: each one finished before the next one started."""
        problems = list(self.overlaps)
        ordered = sorted(self.spans.items())
        for (a, (_s1, e1)), (b, (s2, _e2)) in itertools.pairwise(ordered):
            if e1 is None or s2 is None or s2 < e1:
                problems.append(f"job {self.job_id}: attempt {b}'s container started at {s2} "
                                f"while attempt {a}'s ran until {e1}")
        assert not problems, "jobs ran twice at once:\n  " + "\n  ".join(problems)
