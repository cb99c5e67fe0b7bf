"""POST /v1/jobs: the happy path, every bad input (4xx naming the field, nothing stored), auth and roles."""

from __future__ import annotations

import pytest

from tests import builders
from tests.api.helpers import auth, get_job, job_count, submit


def test_submit_then_admit(api, ctx, actors) -> None:
    first = submit(api, actors.admin)
    second = submit(api, actors.member_a, project="alpha", name="second")
    assert first["state"] == "queued" and first["allocation"] == []
    assert first["project"] == "default" and second["project"] == "alpha"
    # Ids are random, not a counter.
    ids = [first["id"], second["id"]]
    assert ids[0] != ids[1]
    for job_id in ids:
        assert not job_id.isdigit(), job_id
        assert len(job_id) >= 16, job_id
    assert get_job(api, actors.admin, first["id"])["id"] == first["id"]
    assert get_job(api, actors.member_a, second["id"])["name"] == "second"

    builders.register(api, actors.agent, "n1", "h100-80gb:2")
    report = ctx.admitter.run_once()
    assert report.admitted == 2
    for job_id in ids:
        job = get_job(api, actors.admin, job_id)
        assert job["state"] == "admitted", job
        assert job["attempt"] == 1 and job["admitted_at"] is not None
        [alloc] = job["allocation"]
        assert alloc["node"] == "n1" and alloc["kind"] == "gpu" and alloc["gpu_uuid"].startswith("GPU-")
    uuids = {get_job(api, actors.admin, i)["allocation"][0]["gpu_uuid"] for i in ids}
    assert len(uuids) == 2, "two jobs got the same whole GPU"


def test_submit_echoes_the_request(api, actors) -> None:
    job = submit(
        api, actors.operator, name="train.v2", image="ghcr.io/org/train:1.2", command=["python", "-c", "print(1)"],
        env={"SEED": "1", "OMP_NUM_THREADS": "4"}, priority_class="production", time_limit_s=600,
        resources={"blocks": 25, "gpu_memory_mib": 8000, "cpus": 2, "memory_mib": 4096, "gpu_models": ["H100-80GB"]},
    )
    assert job["command"] == ["python", "-c", "print(1)"]
    assert job["env"] == {"SEED": "***", "OMP_NUM_THREADS": "***"}, "an operator sees env names, not values"
    assert get_job(api, actors.admin, job["id"])["env"] == {"SEED": "1", "OMP_NUM_THREADS": "4"}
    assert (job["priority_class"], job["priority"], job["time_limit_s"]) == ("production", 1000, 600)
    res = job["resources"]
    shape = (res["blocks"], res["gpu_memory_mib"], res["gpus"], res["cpus"], res["memory_mib"])
    assert shape == (25, 8000, None, 2, 4096)
    assert res["gpu_models"] == ["h100-80gb"], "model names are normalised to catalogue keys"


def _resources(**kw) -> dict:
    return {"resources": kw}


# (case id, body overrides, the field the answer must name)
BAD_BODIES: list[tuple[str, dict, str]] = [
    ("blocks 0", _resources(blocks=0, gpu_memory_mib=100), "resources.blocks"),
    ("blocks 101", _resources(blocks=101, gpu_memory_mib=100), "resources.blocks"),
    ("blocks as string", _resources(blocks="10", gpu_memory_mib=100), "resources.blocks"),
    ("gpus -1", _resources(gpus=-1), "resources.gpus"),
    ("gpus 1.5", _resources(gpus=1.5), "resources.gpus"),
    ("gpus 17", _resources(gpus=17), "resources.gpus"),
    ("gpus and blocks", _resources(gpus=1, blocks=10, gpu_memory_mib=100), "resources"),
    ("mig and gpus", _resources(mig="3g.40gb", gpus=1), "resources"),
    ("no resource kind", _resources(cpus=1), "resources"),
    ("blocks without gpu_memory_mib", _resources(blocks=10), "gpu_memory_mib"),
    ("gpu_memory_mib with gpus", _resources(gpus=1, gpu_memory_mib=10), "gpu_memory_mib"),
    ("unknown MIG profile", _resources(mig="9g.999gb"), "resources.mig"),
    ("replicas 0", _resources(gpus=1, replicas=0), "resources.replicas"),
    ("unknown resources field", _resources(gpus=1, tpus=1), "resources.tpus"),
    ("command as a shell string", {"command": "python train.py && rm -rf /"}, "command"),
    ("empty command", {"command": []}, "command"),
    ("command not strings", {"command": [["nested"]]}, "command"),
    ("env NVIDIA_VISIBLE_DEVICES", {"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "env"),
    ("env CUDA_VISIBLE_DEVICES", {"env": {"CUDA_VISIBLE_DEVICES": "0,1"}}, "env"),
    ("env CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", {"env": {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "100"}}, "env"),
    ("env LD_PRELOAD", {"env": {"LD_PRELOAD": "/tmp/x.so"}}, "env"),
    ("env invalid name", {"env": {"1-BAD NAME": "x"}}, "env"),
    ("env NUL in value", {"env": {"OK": "a\x00b"}}, "env"),
    ("unknown project", {"project": "nope"}, "project"),
    ("unknown priority_class", {"priority_class": "urgent"}, "priority_class"),
    ("invalid image", {"image": "Not A/Valid::Image"}, "image"),
    ("image with shell", {"image": "busybox; rm -rf /"}, "image"),
    ("bad job name", {"name": "../etc"}, "name"),
    ("time_limit_s 0", {"time_limit_s": 0}, "time_limit_s"),
    ("time_limit_s too long", {"time_limit_s": 10**9}, "time_limit_s"),
    ("unknown top-level field", {"privileged": True}, "privileged"),
    ("missing command", {"command": None}, "command"),
]


def test_bad_bodies_are_refused_naming_the_field_and_store_nothing(api, ctx, actors) -> None:
    submit(api, actors.admin)  # one good job, so "nothing stored" compares against a non-empty table
    before = job_count(ctx)
    failures = []
    for case, overrides, field in BAD_BODIES:
        body = builders.job_body(**overrides)
        if overrides.get("command", "") is None:
            del body["command"]
        response = api.post("/v1/jobs", json=body, headers=auth(actors.admin))
        answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        detail = str(answer.get("detail", ""))
        if response.status_code != 422:
            failures.append(f"{case}: expected 422, got {response.status_code} {response.text}")
        elif field not in detail and answer.get("field") != field:
            failures.append(f"{case}: answer does not name {field!r}: {answer}")
        elif not detail:
            failures.append(f"{case}: empty detail")
    assert not failures, "\n".join(failures)
    assert job_count(ctx) == before, "a refused submission stored a job"


def test_field_names_appear_in_the_detail_text(api, actors) -> None:
    """The message a user reads names the field (not only the machine-readable ``field``)."""
    cases = [
        (_resources(blocks=0, gpu_memory_mib=1), "resources.blocks"),
        (_resources(gpus=1.5), "resources.gpus"),
        ({"env": {"LD_PRELOAD": "x"}}, "LD_PRELOAD"),
        ({"command": "ls -l"}, "command"),
        ({"project": "nope"}, "project"),
        ({"priority_class": "urgent"}, "priority_class"),
        (_resources(mig="9g.999gb"), "MIG profile"),
    ]
    for overrides, text in cases:
        response = api.post("/v1/jobs", json=builders.job_body(**overrides), headers=auth(actors.admin))
        assert response.status_code == 422, (overrides, response.text)
        assert text in response.json()["detail"], (overrides, response.json())


def test_requests_that_can_never_run_are_refused_once_a_node_is_registered(api, ctx, actors) -> None:
    builders.register(api, actors.agent, "n1", "a100-40gb:2")
    before = job_count(ctx)
    cases = [
        ("memory larger than any GPU", _resources(blocks=10, gpu_memory_mib=80000), ("80000", "40960")),
        ("more GPUs on one node than any node has", _resources(gpus=3), ("3", "one node")),
        ("a model that is not there", _resources(gpus=1, gpu_models=["h100-80gb"]), ("h100-80gb",)),
        ("more CPUs than any node", _resources(gpus=1, cpus=1000), ("on one node",)),
    ]
    for case, overrides, words in cases:
        response = api.post("/v1/jobs", json=builders.job_body(**overrides), headers=auth(actors.admin))
        assert response.status_code == 422, (case, response.text)
        answer = response.json()
        assert "can never run" in answer["detail"], (case, answer)
        assert all(w in answer["detail"] for w in words), (case, words, answer)
        assert answer["field"] == "resources", (case, answer)
    assert job_count(ctx) == before
    # What fits the empty cluster is accepted even when it has to wait.
    submit(api, actors.admin, resources={"gpus": 2})
    submit(api, actors.admin, resources={"gpus": 2})
    assert job_count(ctx) == before + 2


def test_with_no_node_registered_a_job_is_accepted_and_says_why_it_waits(api, ctx, actors) -> None:
    job = submit(api, actors.admin, resources={"gpus": 16})
    assert job["reason"], "a queued job carries a reason from the start"
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert job["state"] == "queued"
    assert "no node" in job["reason"], job["reason"]
    # Once a node that can never hold it registers, the next cycle says so instead.
    builders.register(api, actors.agent, "n1", "h100-80gb:1")
    ctx.admitter.run_once()
    job = get_job(api, actors.admin, job["id"])
    assert job["state"] == "queued"
    assert "cannot run on the current cluster" in job["reason"] and "16" in job["reason"], job["reason"]


def test_body_over_the_limit_is_413_and_stores_nothing(api, ctx, actors) -> None:
    limit = ctx.settings.max_body_bytes
    body = builders.job_body(command=["echo"] + ["x" * 8000] * (limit // 8000 + 2))
    response = api.post("/v1/jobs", json=body, headers=auth(actors.admin))
    assert response.status_code == 413, response.text
    assert "too large" in response.json()["detail"]
    # Also when the client sends no Content-Length (a streamed body).
    import json

    def chunks():
        data = json.dumps(body).encode()
        for i in range(0, len(data), 16384):
            yield data[i : i + 16384]

    response = api.post("/v1/jobs", content=chunks(),
                        headers=auth(actors.admin) | {"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert job_count(ctx) == 0


@pytest.mark.parametrize(
    ("who", "project", "status"),
    [
        ("viewer", "default", 403),
        ("agent", "default", 403),
        ("member_a", "beta", 403),
        ("member_b", "alpha", 403),
        ("member_a", "default", 403),
        ("member_a", "alpha", 201),
        ("operator", "beta", 201),
    ],
)
def test_who_may_submit_where(who, project, status, api, ctx, actors) -> None:
    response = api.post("/v1/jobs", json=builders.job_body(project=project), headers=auth(getattr(actors, who)))
    assert response.status_code == status, response.text
    assert job_count(ctx) == (1 if status == 201 else 0)


def test_submit_needs_a_valid_token(api, ctx, actors) -> None:
    body = builders.job_body()
    for headers in ({}, auth("gpuq_not-a-real-token"), {"Authorization": actors.admin},
                    {"Authorization": f"Basic {actors.admin}"}, auth("")):
        response = api.post("/v1/jobs", json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers.get("www-authenticate") == "Bearer"
    assert job_count(ctx) == 0


def test_batch_submission_is_all_or_nothing(ctx, api, actors) -> None:
    from tests.api.helpers import auth, job_count

    good = {"command": ["true"], "resources": {"gpus": 0}}
    bad = {"command": ["true"], "resources": {"blocks": 0, "gpu_memory_mib": 1}}
    before = job_count(ctx)
    refused = api.post("/v1/jobs/batch", json={"jobs": [good, good, bad]}, headers=auth(actors.admin))
    assert refused.status_code == 422 and "jobs.2.resources.blocks" in refused.json()["detail"]
    other_project = api.post("/v1/jobs/batch", json={"jobs": [good, {**good, "project": "beta"}]},
                             headers=auth(actors.member_a))
    assert other_project.status_code == 422 or other_project.status_code == 403
    assert job_count(ctx) == before, "a refused batch creates nothing"
    made = api.post("/v1/jobs/batch", json={"jobs": [good] * 5}, headers=auth(actors.admin))
    assert made.status_code == 201 and made.json()["count"] == 5 and len(set(made.json()["ids"])) == 5
    assert job_count(ctx) == before + 5
    assert api.post("/v1/jobs/batch", json={"jobs": []}, headers=auth(actors.admin)).status_code == 422
    assert api.post("/v1/jobs/batch", json={"jobs": [good]}, headers=auth(actors.viewer)).status_code == 403
