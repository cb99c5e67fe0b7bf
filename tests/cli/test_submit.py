"""``gpuq submit``: the working directory, job scripts and their ``#GPUQ`` directives, durations, id prefixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from queue_service.cli.script import parse_duration_s


def _job(gpuq, *args: str) -> dict:
    out = gpuq("submit", "--json", *args)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_workdir_defaults_to_where_submit_ran(gpuq, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _job(gpuq, "--", "python", "train.py")["workdir"] == str(tmp_path)
    other = tmp_path / "other"
    assert _job(gpuq, "--chdir", str(other), "--", "true")["workdir"] == str(other)
    assert _job(gpuq, "--chdir", "rel", "--", "true")["workdir"] == str(tmp_path / "rel")  # made absolute
    # An image job keeps the image's WORKDIR unless --chdir says otherwise.
    assert _job(gpuq, "--image", "busybox", "--", "true")["workdir"] is None


def test_workdir_must_be_absolute_over_rest(gpuq) -> None:
    body = {"command": ["true"], "resources": {"gpus": 0}, "workdir": "data/run1"}
    answer = gpuq.api.post("/v1/jobs", json=body)
    assert answer.status_code == 422 and "workdir" in answer.text and "absolute" in answer.text
    assert gpuq.api.get("/v1/jobs").json()["count"] == 0


SCRIPT = """#!/bin/bash
# a comment before the directives is fine
#GPUQ --gpus 0 --cpus 2
#GPUQ --time-limit 2h --name from-script
#GPUQ --env A=1 --env B=2   # trailing comment
echo hello
#GPUQ --cpus 64
"""


def test_job_script_directives_and_command_line_wins(gpuq, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT)  # not executable: it runs through its #! interpreter
    job = _job(gpuq, "job.sh", "x", "--y")
    assert job["command"] == ["/bin/bash", str(script), "x", "--y"]
    assert job["time_limit_s"] == 7200 and job["name"] == "from-script"
    assert job["resources"]["cpus"] == 2  # the #GPUQ after the first command line is not a directive
    assert job["env"] == {"A": "1", "B": "2"}
    job = _job(gpuq, "--time-limit", "30m", "--cpus", "1", "job.sh")
    assert job["time_limit_s"] == 1800 and job["resources"]["cpus"] == 1 and job["name"] == "from-script"


@pytest.mark.parametrize(("line", "named"), [
    ("#GPUQ --gpus two", "--gpus"),
    ("#GPUQ --gpu 1", "--gpu"),
    ("#GPUQ --time-limit soon", "soon"),
    ("#GPUQ 'unclosed", "closing quotation"),
    ("#GPUQ train.py", "train.py"),
])
def test_bad_directive_names_line_and_flag(gpuq, tmp_path: Path, line: str, named: str) -> None:
    script = tmp_path / "bad.sh"
    script.write_text(f"#!/bin/sh\n#GPUQ --cpus 1\n{line}\ntrue\n")
    out = gpuq("submit", str(script))
    assert out.exit_code != 0 and "Traceback" not in out.output
    assert f"{script}:3:" in out.output, out.output
    assert named in out.output, out.output
    assert gpuq.api.get("/v1/jobs").json()["count"] == 0


def test_plain_command_is_not_a_script(gpuq, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("not a script\n")
    assert _job(gpuq, "--", "cat", "data.txt")["command"] == ["cat", "data.txt"]
    assert _job(gpuq, "--", "data.txt")["command"] == ["data.txt"]  # no #! and no #GPUQ: argv as given


def test_gang_and_requeue_flags(gpuq) -> None:
    job = _job(gpuq, "--gpus", "0", "--replicas", "3", "--no-requeue", "--", "true")
    assert job["resources"]["replicas"] == 3 and job["requeue"] is False


@pytest.mark.parametrize(("text", "seconds"), [
    ("3600", 3600), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5h", 5400), ("1d", 86400),
    ("1:30", 90), ("1:30:00", 5400), ("2-00:00:00", 172800),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "1:2:3:4", "-5", "1x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|at least"):
        parse_duration_s(text)


def test_id_prefixes_everywhere_and_cancel_many(gpuq) -> None:
    a = _job(gpuq, "--", "sleep", "60")["id"]
    b = _job(gpuq, "--", "sleep", "60")["id"]
    shown = gpuq("show", a[:6])
    assert shown.exit_code == 0 and f"id: {a}" in shown.output
    assert gpuq("logs", a[:6]).exit_code == 0
    assert gpuq("hold", a[:6]).exit_code == 0 and gpuq.api.get(f"/v1/jobs/{a}").json()["held"] is True
    common = ""
    for x, y in zip(a, b, strict=True):
        if x != y:
            break
        common += x
    ambiguous = gpuq("show", common) if common else None
    if ambiguous is not None:
        assert ambiguous.exit_code != 0 and "give more of it" in ambiguous.output
    missing = gpuq("show", "ffffffffff" if not a.startswith("f") and not b.startswith("f") else "0000000000")
    assert missing.exit_code != 0 and "no job id starts with" in missing.output
    out = gpuq("cancel", a[:8], b)
    assert out.exit_code == 0, out.output
    assert {gpuq.api.get(f"/v1/jobs/{j}").json()["state"] for j in (a, b)} == {"cancelled"}


def test_member_prefix_sees_only_own_projects(gpuq) -> None:
    theirs = _job(gpuq, "--project", "default", "--", "true")["id"]
    out = gpuq("show", theirs[:8], as_="member")
    assert out.exit_code != 0 and "no job id starts with" in out.output


def test_jobs_in_queue_order_with_positions_limit_and_wide(gpuq) -> None:
    low = _job(gpuq, "--priority-class", "experiment", "--", "true")["id"]
    first = _job(gpuq, "--", "true")["id"]
    second = _job(gpuq, "--", "true")["id"]
    top = _job(gpuq, "--priority-class", "production", "--", "true")["id"]
    out = gpuq("jobs", "--wide")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()[1:]
    assert [line.split()[1] for line in lines] == [top, first, second, low]  # priority, then submit time
    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4"]
    assert "production" in lines[0] and "1000" in lines[0]
    limited = gpuq("jobs", "--limit", "2")
    assert "showing 2 of 4" in limited.output
    data = json.loads(gpuq("jobs", "--json", "--limit", "1").output)
    assert data["count"] == 1 and data["total"] == 4


def test_history_lists_finished_jobs(gpuq) -> None:
    job = _job(gpuq, "--", "true")["id"]
    assert gpuq("cancel", job).exit_code == 0
    out = gpuq("history")
    assert out.exit_code == 0, out.output
    assert job in out.output and "cancelled" in out.output
    assert job not in gpuq("jobs").output and job in gpuq("jobs", "--all").output


def test_output_and_error_patterns_from_flags_and_directives(gpuq, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    job = _job(gpuq, "-o", "logs/%x-%j.out", "--error", "/tmp/%j.err", "--", "true")
    assert (job["output"], job["error"]) == ("logs/%x-%j.out", "/tmp/%j.err")
    (tmp_path / "o.sh").write_text("#!/bin/sh\n#GPUQ -o out-%A_%a.log\ntrue\n")
    assert _job(gpuq, "o.sh")["output"] == "out-%A_%a.log"
    out = gpuq("submit", "-o", "/x/%q", "--", "true")
    assert out.exit_code != 0 and "output" in out.output and "%q" in out.output, out.output
