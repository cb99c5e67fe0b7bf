"""One lock order for the agent's reports: the node's row before its jobs' (``services.nodes``).

A heartbeat updates its node's lease and may then lose (lock) a vanished
job; an exit that blames the node (``node_fault``) used to lock its job and
then the node. Run together, each waited for the other. Now the exit takes
the node first: while another transaction holds the node, the exit waits
without holding its job (PostgreSQL, where rows are locked one by one).
"""

from __future__ import annotations

import threading

from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from queue_service.db.models import Job, Node
from tests.support.builders import job_body, register


def test_an_exit_that_blames_the_node_locks_the_node_before_its_job(ctx, api, actors) -> None:
    if ctx.engine.dialect.name != "postgresql":
        return  # SQLite: one writer at a time, no row locks to order
    register(api, actors.agent_for("n1"), "n1", "h100-80gb:1")
    job_id = api.post("/v1/jobs", json=job_body(), headers=actors.headers(actors.admin)).json()["id"]
    ctx.admitter.run_once()
    ref = {"node_name": "n1", "job_id": job_id, "attempt": 1, "replica": 0}
    headers = actors.headers(actors.agent_for("n1"))
    assert api.post("/v1/agent/started", json=ref, headers=headers).status_code == 200
    body = {**ref, "exit_code": None, "reason": "lost", "node_fault": True, "message": "node failure: no log dir"}
    answers: list[int] = []
    with ctx.sessions() as holder, holder.begin():
        holder.scalar(select(Node).where(Node.name == "n1").with_for_update())  # as a heartbeat holds it
        reporter = threading.Thread(
            target=lambda: answers.append(api.post("/v1/agent/exited", json=body, headers=headers).status_code))
        reporter.start()
        reporter.join(1.0)
        assert reporter.is_alive() and not answers, "the exit waits for the node's row"
        with ctx.sessions() as probe, probe.begin():
            try:  # the job's row is free: nobody holds it while waiting for the node
                probe.execute(text("SET LOCAL lock_timeout = '500ms'"))
                assert probe.get(Job, job_id, with_for_update=True) is not None
            except OperationalError as exc:
                raise AssertionError("the exit held its job's row while waiting for the node's") from exc
    reporter.join(10)
    assert answers == [200]
