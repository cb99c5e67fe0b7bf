"""GET /v1/jobs (filters, pagination, visibility) and GET /v1/jobs/{id}."""

from __future__ import annotations

from tests.api.helpers import auth, submit


def _list(api, token: str, **params) -> dict:
    response = api.get("/v1/jobs", params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def _ids(page: dict) -> list[str]:
    return [j["id"] for j in page["data"]]


def test_list_filters_by_project_and_state(api, actors) -> None:
    alpha = [submit(api, actors.admin, project="alpha")["id"] for _ in range(2)]
    beta = submit(api, actors.admin, project="beta")["id"]
    cancelled = submit(api, actors.admin, project="alpha")["id"]
    assert api.post(f"/v1/jobs/{cancelled}/cancel", headers=auth(actors.admin)).status_code == 200

    everything = _list(api, actors.viewer)
    assert set(_ids(everything)) == {*alpha, beta, cancelled} and everything["count"] == 4
    assert set(_ids(_list(api, actors.admin, project="alpha"))) == {*alpha, cancelled}
    assert _ids(_list(api, actors.admin, project="beta")) == [beta]
    assert _ids(_list(api, actors.admin, state="cancelled")) == [cancelled]
    assert set(_ids(_list(api, actors.admin, state="queued"))) == {*alpha, beta}
    assert set(_ids(_list(api, actors.admin, project="alpha", state="queued"))) == set(alpha)
    assert _list(api, actors.admin, state="running")["data"] == []
    assert _list(api, actors.admin, project="no-such-project")["data"] == []

    for params, field in (({"state": "sleeping"}, "state"), ({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
                          ({"cursor": "%%%not-base64"}, "cursor")):
        response = api.get("/v1/jobs", params=params, headers=auth(actors.admin))
        assert response.status_code == 422, (params, response.text)
        assert field in response.json()["detail"], (params, response.json())


def test_pagination_walks_every_job_exactly_once_newest_first(api, actors) -> None:
    made = [submit(api, actors.admin, project="alpha" if i % 2 else "beta", name=f"j{i}")["id"] for i in range(7)]
    for limit in (1, 2, 3, 7, 50):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
            page = _list(api, actors.admin, **params)
            assert page["count"] == len(page["data"]) <= limit
            seen += _ids(page)
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages <= 10, "pagination does not terminate"
        assert seen == list(reversed(made)), f"limit={limit}"
        assert pages == -(-7 // limit), f"limit={limit}: {pages} pages (an empty last page is not needed)"
    # Pagination composes with filters.
    alpha = [made[i] for i in range(7) if i % 2]
    first = _list(api, actors.admin, project="alpha", limit=2)
    rest = _list(api, actors.admin, project="alpha", limit=2, cursor=first["next_cursor"])
    assert _ids(first) + _ids(rest) == list(reversed(alpha))[:4]


def test_members_see_only_their_projects_jobs(api, actors) -> None:
    mine = submit(api, actors.member_a, project="alpha")
    theirs = submit(api, actors.member_b, project="beta")
    default = submit(api, actors.admin, project="default")

    assert _ids(_list(api, actors.member_a)) == [mine["id"]]
    assert _ids(_list(api, actors.member_b)) == [theirs["id"]]
    assert _list(api, actors.member_a, project="beta")["data"] == []
    assert set(_ids(_list(api, actors.operator))) == {mine["id"], theirs["id"], default["id"]}

    # Another project's job is indistinguishable from a missing one.
    for job_id in (theirs["id"], default["id"], "0" * 20):
        for method, path in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                             ("GET", f"/v1/jobs/{job_id}/logs")):
            response = api.request(method, path, headers=auth(actors.member_a))
            assert response.status_code == 404, (method, path, response.text)
            assert "not found" in response.json()["detail"]
    # ... and the refused cancel changed nothing.
    assert api.get(f"/v1/jobs/{theirs['id']}", headers=auth(actors.member_b)).json()["state"] == "queued"
    # Viewers read everything.
    assert api.get(f"/v1/jobs/{theirs['id']}", headers=auth(actors.viewer)).status_code == 200


def test_reading_needs_a_token(api, actors) -> None:
    job = submit(api, actors.admin)
    for path in ("/v1/jobs", f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/logs", "/v1/nodes", "/v1/projects"):
        assert api.get(path).status_code == 401, path
        assert api.get(path, headers=auth("gpuq_wrong")).status_code == 401, path
    assert api.post(f"/v1/jobs/{job['id']}/cancel").status_code == 401
    assert api.get(f"/v1/jobs/{job['id']}", headers=auth(actors.admin)).json()["state"] == "queued"
