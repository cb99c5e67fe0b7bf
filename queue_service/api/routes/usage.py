"""/v1/projects/{project}/usage and /v1/usage: allocated and measured usage, priced; JSON or CSV."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from queue_service.api.deps import CurrentPrincipal, SessionDep
from queue_service.api.schemas.usage import UsagePublic, UsageRowPublic
from queue_service.billing import reports
from queue_service.billing.ledger import db_now
from queue_service.db.models import Project
from queue_service.errors import InvalidRequest, NotFound
from queue_service.services import projects as project_service

router = APIRouter(tags=["usage"])

# day, job, user, gpu_model, project, workload, or label:<key> (a short identifier; jobs without it: "(none)")
GroupBy = Annotated[str, Query(pattern=r"^(day|job|user|gpu_model|project|workload|label:[a-z][a-z0-9_.-]{0,62})$",
                               description="day, job, user, gpu_model, project, workload or label:<key>")]
Format = Literal["json", "csv"]
# Dates are bounded (years 1970-2999): a month or instant near year 9999 overflows the window's end.
Month = Annotated[str | None, Query(pattern=r"^(19[7-9]\d|2\d{3})-(0[1-9]|1[0-2])$", description="e.g. 2026-11")]
MIN_YEAR, MAX_YEAR = 1970, 2999


def _naive_utc(value: datetime | None, field: str = "effective_from") -> datetime | None:
    if value is None:
        return value
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise InvalidRequest(f"{field}: the year must be within {MIN_YEAR}-{MAX_YEAR}", field=field)
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _window(session, start: datetime | None, end: datetime | None, month: str | None) -> tuple[datetime, datetime]:
    """``month`` wins; else ``start``/``end``, defaulting to this month so far."""
    if month is not None:
        if start is not None or end is not None:
            raise InvalidRequest("give month, or start and end, not both", field="month")
        return reports.parse_month(month)
    lo, hi = _naive_utc(start, "start"), _naive_utc(end, "end")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidRequest("start is after end", field="start")
    now = db_now(session)
    start, end = _naive_utc(start, "start"), _naive_utc(end, "end")
    return start or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), end or now


def _answer(session, projects: list[Project], start: datetime | None, end: datetime | None, month: str | None,
            group_by: str, format: str) -> Response | UsagePublic:
    lo, hi = _window(session, start, end, month)
    report = reports.usage(session, project_ids=[p.id for p in projects], start=lo, end=hi, group_by=group_by)
    if format == "csv":
        name = f"gpuq-usage-{lo.date()}-{hi.date()}.csv"
        return PlainTextResponse(reports.to_csv(report), media_type="text/csv",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return UsagePublic(
        start=report.start, end=report.end, group_by=report.group_by, projects=sorted(p.name for p in projects),
        rows=[UsageRowPublic(**r.public()) for r in report.rows], total=UsageRowPublic(**report.total.public()),
    )


@router.get("/projects/{project}/usage", response_model=UsagePublic)
def project_usage(
    project: str, principal: CurrentPrincipal, session: SessionDep,
    start: datetime | None = None, end: datetime | None = None,
    month: Month = None,
    group_by: GroupBy = "day", format: Format = "json",
) -> Response | UsagePublic:
    """One project's usage; members see only their own projects (others are 404, like jobs).

    Grouped by workload, user or label:<key>, the groups add up to the project's total.
    """
    row = project_service.get_by_name(session, name=project)
    if row is None or not principal.can_see_project(row.name):
        raise NotFound(f"project {project} not found")
    return _answer(session, [row], start, end, month, group_by, format)


@router.get("/usage", response_model=UsagePublic)
def all_usage(
    principal: CurrentPrincipal, session: SessionDep,
    start: datetime | None = None, end: datetime | None = None,
    month: Month = None,
    group_by: GroupBy = "project", format: Format = "json",
    project: Annotated[list[str] | None, Query(description="limit to these projects")] = None,
) -> Response | UsagePublic:
    """Usage across projects: every project for admins, operators and viewers; a member's own otherwise."""
    visible = project_service.visible(session, principal=principal)
    if project:
        visible = [p for p in visible if p.name in set(project)]
    return _answer(session, visible, start, end, month, group_by, format)
