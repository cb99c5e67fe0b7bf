"""Priority classes per project: production is not open to every member; operators say who may use a class."""

from __future__ import annotations

from sqlalchemy import select

from queue_service.db.models import AuditEntry
from tests.api.helpers import auth, job_count, submit
from tests.builders import job_body


def _submit(api, token: str, project: str, klass: str):
    return api.post("/v1/jobs", json=job_body(project=project, priority_class=klass), headers=auth(token))


def _put(api, token: str, name: str, **body):
    return api.put(f"/v1/priority-classes/{name}", json={"value": 1000, "grace_s": 60.0} | body, headers=auth(token))


def test_production_is_for_operators_until_a_project_is_named(api, ctx, actors) -> None:
    before = job_count(ctx)
    refused = _submit(api, actors.member_a, "alpha", "production")
    assert refused.status_code == 403, refused.text
    assert "'production'" in refused.json()["detail"] and "alpha" in refused.json()["detail"]
    assert job_count(ctx) == before
    for klass in ("normal", "experiment"):
        assert _submit(api, actors.member_a, "alpha", klass).status_code == 201, klass
    assert submit(api, actors.operator, project="alpha", priority_class="production")["priority"] == 1000
    classes = {c["name"]: c for c in api.get("/v1/priority-classes", headers=auth(actors.viewer)).json()}
    assert classes["production"]["allowed_projects"] == [] and classes["normal"]["allowed_projects"] is None

    # An operator opens it to alpha: alpha's members may, beta's still may not.
    assert _put(api, actors.member_a, "production", allowed_projects=["alpha"]).status_code == 403
    response = _put(api, actors.operator, "production", allowed_projects=["alpha"], reason="alpha's launch")
    assert response.status_code == 200 and response.json()["allowed_projects"] == ["alpha"], response.text
    assert _submit(api, actors.member_a, "alpha", "production").status_code == 201
    assert _submit(api, actors.member_b, "beta", "production").status_code == 403
    # Changing the class without naming projects keeps who may use it.
    assert _put(api, actors.operator, "production", grace_s=90.0).json()["allowed_projects"] == ["alpha"]
    assert _submit(api, actors.member_b, "beta", "production").status_code == 403
    # A class closed to one project's members; unknown projects are refused.
    assert _put(api, actors.admin, "experiment", value=100, allowed_projects=["beta"]).status_code == 200
    assert _submit(api, actors.member_a, "alpha", "experiment").status_code == 403
    unknown = _put(api, actors.admin, "normal", value=500, allowed_projects=["nope"])
    assert unknown.status_code == 422 and unknown.json()["field"] == "allowed_projects", unknown.text
    # Back open to all with null.
    assert _put(api, actors.admin, "production", allowed_projects=None).json()["allowed_projects"] is None
    assert _submit(api, actors.member_b, "beta", "production").status_code == 201

    with ctx.sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "priority_class.set",
                                                        AuditEntry.target == "production")
                               .order_by(AuditEntry.id)).all()
    assert [r.after["allowed_projects"] for r in rows] == [["alpha"], ["alpha"], None]
    assert rows[0].before["allowed_projects"] == [] and rows[0].reason == "alpha's launch"
