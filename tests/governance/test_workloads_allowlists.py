"""Who may use what beyond GPUs: a project's image patterns and host volumes, set by admins (audited), checked
at submit (4xx naming the field, nothing stored), carried to the node and mounted by the Docker runtime only."""

from __future__ import annotations

import pytest

from tests.api.helpers import auth, job_count, submit
from workers.messages import LaunchSpec
from workers.runtime.base import LaunchError
from workers.runtime.docker import container_config, job_volumes

VISION = {"images": ["registry.internal/vision/*"],
          "volumes": [{"host_path": "/data/vision", "read_only": True}, {"host_path": "/scratch", "read_only": False}],
          "reason": "vision team"}


def _vol(host: str, inside: str = "/data", read_only: bool = True) -> dict:
    return {"host_path": host, "container_path": inside, "read_only": read_only}


def test_allow_lists_are_set_audited_and_checked_at_submit(api, ctx, actors) -> None:
    assert api.put("/v1/projects/alpha/allowlists", json=VISION, headers=auth(actors.operator)).status_code == 403
    made = api.put("/v1/projects/alpha/allowlists", json=VISION, headers=auth(actors.admin))
    assert made.status_code == 200, made.text
    seen = api.get("/v1/projects/alpha/allowlists", headers=auth(actors.member_a)).json()
    assert seen["images"] == ["registry.internal/vision/*"] and seen["volumes"][0]["read_only"] is True
    assert api.get("/v1/projects/alpha/allowlists", headers=auth(actors.member_b)).status_code == 404
    [row] = api.get("/v1/audit", params={"action": "project.allowlists"}, headers=auth(actors.admin)).json()["data"]
    assert row["target"] == "alpha" and row["before"]["images"] is None and row["reason"] == "vision team"

    ok = submit(api, actors.member_a, project="alpha", image="registry.internal/vision/train:1.2",
                volumes=[_vol("/data/vision/imagenet"), _vol("/scratch/me", "/out", read_only=False)])
    assert ok["volumes"] == [_vol("/data/vision/imagenet"), _vol("/scratch/me", "/out", read_only=False)]
    before = job_count(ctx)
    refused = [
        ({"image": "docker.io/library/python:3.12"}, 403, "image"),
        ({"image": None}, 403, "image"),  # a host process would step around the image list
        ({"image": "registry.internal/vision/a", "volumes": [_vol("/etc")]}, 403, "volumes.0.host_path"),
        ({"image": "registry.internal/vision/a", "volumes": [_vol("/data/visionary")]}, 403, "volumes.0.host_path"),
        ({"image": "registry.internal/vision/a", "volumes": [_vol("/data/vision", read_only=False)]}, 403,
         "volumes.0.read_only"),
        ({"image": "registry.internal/vision/a", "volumes": [_vol("/data/vision/../../etc")]}, 422, "volumes"),
        ({"image": "registry.internal/vision/a", "volumes": [_vol("data")]}, 422, "volumes"),
    ]
    for overrides, status, field in refused:
        response = api.post("/v1/jobs", json={"command": ["true"], "resources": {"gpus": 1}, "project": "alpha"}
                            | overrides, headers=auth(actors.member_a))
        answer = response.json()
        assert response.status_code == status, (overrides, response.text)
        assert field in (answer.get("field") or "") or field in str(answer.get("detail")), (overrides, answer)
    assert job_count(ctx) == before, "nothing stored"
    # Another project keeps today's rules: any image, no host volumes; a host job may not ask for volumes.
    assert submit(api, actors.member_b, project="beta", image="docker.io/library/python:3.12")["image"]
    for body, field in (({"image": "busybox", "volumes": [_vol("/data")]}, "volumes.0.host_path"),
                        ({"volumes": [_vol("/data")]}, "volumes")):
        response = api.post("/v1/jobs", json={"command": ["true"], "resources": {"gpus": 1}, "project": "beta"} | body,
                            headers=auth(actors.member_b))
        assert response.status_code in (403, 422) and response.json()["field"] == field, response.text
    bad = api.put("/v1/projects/alpha/allowlists", json={"volumes": [{"host_path": "/"}]}, headers=auth(actors.admin))
    assert bad.status_code == 422 and "volumes.0.host_path" in str(bad.json()), bad.text


def test_the_docker_runtime_mounts_exactly_the_job_volumes() -> None:
    spec = LaunchSpec(job_id="j", attempt=1, node_name="n1", command=["true"], image="busybox",
                      volumes=[_vol("/data/vision", "/data"), _vol("/scratch/me", "/out", read_only=False)])
    config = container_config(spec)
    assert config["volumes"] == {"/data/vision": {"bind": "/data", "mode": "ro"},
                                 "/scratch/me": {"bind": "/out", "mode": "rw"}}
    assert container_config(LaunchSpec(job_id="j", attempt=1, node_name="n1", command=["true"],
                                       image="busybox"))["volumes"] == {}, "no volumes asked: no mounts"
    for bad in (_vol("/var/run/docker.sock"), _vol("/data/../etc"), _vol("/", "/host")):
        with pytest.raises(LaunchError):
            job_volumes(LaunchSpec(job_id="j", attempt=1, node_name="n1", command=["true"], image="b", volumes=[bad]))
