"""``gpuq simulate --mode queue`` on a tiny openb-format trace: every scheduler, JSON figures, the plot."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from queue_service.cli import app

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,32000,65536,3,T4\n"  # GPUs exclusive, shared, exclusive
# a holds one GPU for 10 s; head (3 GPUs) arrives at 1 s and must wait for it; short (3 s) and share (1 s)
# fit the gap before a ends (the cycle backfills them), FIFO keeps them behind the head
TASKS = ("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
         "scheduled_time\n"
         "a,1000,1024,1,1000,,LS,Running,0,10,0\n"
         "head,1000,1024,3,1000,,LS,Running,1,6,1\n"
         "short,1000,1024,1,1000,,LS,Running,2,5,2\n"
         "share,1000,1024,1,500,,LS,Running,3,4,3\n")


def test_queue_mode_compares_the_schedulers(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text(NODES)
    (tmp_path / "t.csv").write_text(TASKS)
    png = tmp_path / "alloc.png"
    out = CliRunner().invoke(app, ["simulate", "--mode", "queue", "--nodes", str(tmp_path / "n.csv"),
                                   "--tasks", str(tmp_path / "t.csv"), "--json", "--plot", str(png)])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["schedulers"]
    assert set(rows) == {"fifo+first-fit", "fifo+best-fit", "cycle+fgd", "cycle+gpuq"}
    for name in ("cycle+fgd", "cycle+gpuq"):  # waits: a 0, head 9 (starts as a ends), short 0, share 0
        assert rows[name]["never_started"] == 0 and rows[name]["p95_wait_s"] == 9, rows[name]
        assert rows[name]["mean_wait_s"] == 9 / 4 and rows[name]["makespan_s"] == 15
    for name in ("fifo+first-fit", "fifo+best-fit"):  # short and share wait for the head to end at 15
        assert rows[name]["mean_wait_s"] == (0 + 9 + 13 + 12) / 4 and rows[name]["makespan_s"] == 18, rows[name]
    assert all(0 < r["allocation_ratio"] <= 1 for r in rows.values())
    assert png.stat().st_size > 1000


def test_queue_mode_refuses_an_unknown_scheduler() -> None:
    out = CliRunner().invoke(app, ["simulate", "--mode", "queue", "--schedulers", "nope"])
    assert out.exit_code == 2
