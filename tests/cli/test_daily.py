"""The CLI for dependencies, arrays, class time limits and webhooks (``--after``, ``--array``, folded rows)."""

from __future__ import annotations

import json
from pathlib import Path

from queue_service import cli


def _ok(out) -> str:
    assert out.exit_code == 0, out.output
    return str(out.output)


def _job(gpuq, *args: str) -> dict:
    return dict(json.loads(_ok(gpuq("submit", "--json", *args))))


def _all(gpuq) -> list[dict]:
    return list(gpuq.api.get("/v1/jobs", params={"limit": 500}).json()["data"])


def test_after_resolves_prefixes_and_conditions(gpuq) -> None:
    first = _job(gpuq, "--", "true")
    second = _job(gpuq, "--", "true")
    job = _job(gpuq, "--after", first["id"][:8], "--after", f"{second['id'][:8]}:notok", "--", "true")
    assert job["depends_on"] == [{"job_id": first["id"], "condition": "ok"},
                                 {"job_id": second["id"], "condition": "notok"}]
    assert _job(gpuq, "--after", f"{first['id']}:any", "--", "true")["depends_on"] == [
        {"job_id": first["id"], "condition": "any"}]


def test_after_bad_condition_or_unknown_job_queues_nothing(gpuq) -> None:
    first = _job(gpuq, "--", "true")
    out = gpuq("submit", "--after", f"{first['id']}:later", "--", "true")
    assert out.exit_code != 0 and "--after wants JOB[:ok|notok|any]" in out.output
    out = gpuq("submit", "--after", "abcdef", "--", "true")
    assert out.exit_code != 0 and "no job id starts with 'abcdef'" in out.output
    assert len(_all(gpuq)) == 1


def test_after_in_a_job_script(gpuq, tmp_path: Path) -> None:
    first = _job(gpuq, "--", "true")
    script = tmp_path / "next.sh"
    script.write_text(f"#!/bin/sh\n#GPUQ --after {first['id'][:6]}:any --array 0-3%2\necho $GPUQ_ARRAY_INDEX\n")
    job = _job(gpuq, str(script))
    assert job["depends_on"] == [{"job_id": first["id"], "condition": "any"}]
    assert job["array_id"] == job["id"] and job["array_limit"] == 2


def test_array_submits_tasks_and_folds_into_one_row(gpuq) -> None:
    out = _ok(gpuq("submit", "--array", "0-9%2", "--name", "sweep", "--", "true"))
    tasks = sorted((j for j in _all(gpuq) if j["array_id"]), key=lambda j: j["array_index"])
    array_id = tasks[0]["id"]
    assert f"submitted array {array_id} (10 tasks, 0-9%2)" in out
    assert [t["array_index"] for t in tasks] == list(range(10))
    _job(gpuq, "--name", "single", "--", "true")
    _ok(gpuq("cancel", f"{array_id[:8]}_3"))  # one task alone
    listing = _ok(gpuq("jobs"))
    rows = [line for line in listing.splitlines()[1:] if line.strip()]
    assert len(rows) == 2, listing  # the array is one row, the single job another
    folded = next(line for line in rows if f"{array_id}[" in line)
    assert f"{array_id}[0-9%2]" in folded and "9 queued, 1 cancelled" in folded, listing  # finished count too
    single = next(line for line in rows if "single" in line)
    assert single.split()[0] == "10", listing  # nine array tasks are queued ahead of it
    everything = _ok(gpuq("jobs", "--all"))
    assert f"{array_id}[0-9%2]" in everything and "9 queued, 1 cancelled" in everything, everything
    per_task = _ok(gpuq("jobs", "--tasks"))
    assert sum(1 for t in tasks if t["id"] in per_task) == 9


def test_folded_counts_include_finished_tasks_without_all(gpuq) -> None:
    _ok(gpuq("submit", "--array", "0-4", "--", "true"))
    tasks = sorted((j for j in _all(gpuq) if j["array_id"]), key=lambda j: j["array_index"])
    _ok(gpuq("cancel", f"{tasks[0]['id']}_0"))
    listing = _ok(gpuq("jobs"))
    assert "4 queued, 1 cancelled" in listing, listing


def test_cancel_of_an_array_id_cancels_every_task(gpuq) -> None:
    _ok(gpuq("submit", "--array", "0-5%2", "--", "true"))
    other = _job(gpuq, "--", "true")
    array_id = next(j["id"] for j in _all(gpuq) if j["array_index"] == 0)
    out = _ok(gpuq("cancel", array_id[:8]))
    assert out.count(": cancelled") == 6, out
    states = {j["id"]: j["state"] for j in _all(gpuq)}
    assert states.pop(other["id"]) == "queued"
    assert set(states.values()) == {"cancelled"}


def test_cancel_task_syntax_needs_an_array(gpuq) -> None:
    job = _job(gpuq, "--", "true")
    out = gpuq("cancel", f"{job['id']}_1")
    assert out.exit_code != 0 and "not an array" in out.output
    assert _all(gpuq)[0]["state"] == "queued"


def test_bad_array_spec_names_the_flag_and_queues_nothing(gpuq, tmp_path: Path) -> None:
    out = gpuq("submit", "--array", "0-9%0", "--", "true")
    assert out.exit_code != 0 and "array" in out.output and "Traceback" not in out.output
    script = tmp_path / "bad.sh"
    script.write_text("#!/bin/sh\n#GPUQ --array 5-1\ntrue\n")
    out = gpuq("submit", str(script))
    assert out.exit_code != 0 and f"{script}:2:" in out.output and "--array" in out.output, out.output
    assert _all(gpuq) == []


def test_after_an_array_waits_for_every_task(gpuq) -> None:
    _ok(gpuq("submit", "--array", "0-2", "--", "true"))
    tasks = sorted((j for j in _all(gpuq) if j["array_id"]), key=lambda j: j["array_index"])
    job = _job(gpuq, "--after", tasks[0]["id"][:10], "--", "true")
    assert [d["job_id"] for d in job["depends_on"]] == [t["id"] for t in tasks]


def test_class_time_limits_listed_and_set_with_durations(gpuq) -> None:
    _ok(gpuq("class", "set", "normal", "--default-time-limit", "2h", "--max-time-limit", "1d"))
    listing = _ok(gpuq("class", "list"))
    normal = next(line for line in listing.splitlines() if line.startswith("normal"))
    assert "2:00:00" in normal and "24:00:00" in normal, listing
    assert "DEFAULT TIME" in listing and "MAX TIME" in listing
    classes = {c["name"]: c for c in gpuq.api.get("/v1/priority-classes").json()}
    before = classes["normal"]
    assert before["default_time_limit_s"] == 7200 and before["max_time_limit_s"] == 86400
    _ok(gpuq("class", "set", "normal", "--default-time-limit", "none"))  # the rest is kept
    after = {c["name"]: c for c in gpuq.api.get("/v1/priority-classes").json()}["normal"]
    assert after["default_time_limit_s"] is None and after["max_time_limit_s"] == 86400
    assert (after["value"], after["preemptible"], after["grace_s"]) == (
        before["value"], before["preemptible"], before["grace_s"])
    out = gpuq("class", "set", "normal", "--max-time-limit", "soon")
    assert out.exit_code != 0 and "--max-time-limit" in out.output
    out = gpuq("class", "set", "brand-new", "--max-time-limit", "1h")
    assert out.exit_code != 0 and "--value" in out.output
    _ok(gpuq("class", "set", "brand-new", "--value", "5", "--max-time-limit", "1h"))


def test_webhook_add_list_deliveries_rm(gpuq) -> None:
    out = _ok(gpuq("webhook", "add", "alpha", "http://127.0.0.1:9/hook", "--event", "succeeded",
                   "--event", "failed"))
    assert "secret (shown once" in out
    hooks = gpuq.api.get("/v1/projects/alpha/webhooks").json()
    assert [(h["url"], sorted(h["events"])) for h in hooks] == [("http://127.0.0.1:9/hook", ["failed", "succeeded"])]
    hook_id = hooks[0]["id"]
    listing = _ok(gpuq("webhook", "list", "alpha"))
    assert hook_id in listing and "failed,succeeded" in listing and "secret" not in listing.lower()
    assert "EVENT" in _ok(gpuq("webhook", "deliveries", "alpha", hook_id))
    _ok(gpuq("webhook", "rm", "alpha", hook_id))
    assert gpuq.api.get("/v1/projects/alpha/webhooks").json() == []
    out = gpuq("webhook", "add", "alpha", "ftp://example.org/x")
    assert out.exit_code != 0 and "url" in out.output.lower()
    out = gpuq("webhook", "rm", "alpha", hook_id)
    assert out.exit_code != 0


def test_spec_text_and_counts() -> None:
    assert cli._spec_text([0, 1, 2, 5, 7, 8], 3) == "0-2,5,7-8%3"
    rows = [{"state": "running"}] * 2 + [{"state": "queued", "held": True}] + [{"state": "succeeded"}] * 3
    assert cli._counts_text(rows) == "2 running, 1 held, 3 succeeded"
