"""API tokens: made random, shown once, stored as a SHA-256 hash; roles decide what a caller may do.

Tokens carry 256 bits of randomness, so a fast hash is enough: there is
nothing to brute-force that a slow password hash would protect.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime

from queue_service.db.models import Role
from queue_service.errors import Forbidden

TOKEN_PREFIX = "gpuq_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's id, role and (for members) projects."""

    token_id: str
    name: str
    role: Role
    projects: frozenset[str] = frozenset()
    node_name: str | None = None
    last_used_at: datetime | None = field(default=None, compare=False)  # as read when authenticating
    approver: bool = False  # a member token that may approve or deny its projects' pending jobs (revision 0013)

    @property
    def label(self) -> str:
        """How audit rows and logs name the caller."""
        return f"{self.role}:{self.name or self.token_id}"

    @property
    def sees_all_projects(self) -> bool:
        return self.role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER)

    def can_see_project(self, project: str) -> bool:
        return self.sees_all_projects or project in self.projects

    def can_submit_to(self, project: str) -> bool:
        if self.role in (Role.ADMIN, Role.OPERATOR):
            return True
        return self.role is Role.MEMBER and project in self.projects

    def may_use_class(self, allowed_projects: list[str] | None, project: str) -> bool:
        """A priority class open to ``allowed_projects`` (None: all): operators and admins may use any."""
        if self.role in (Role.ADMIN, Role.OPERATOR):
            return True
        return allowed_projects is None or project in allowed_projects

    def may_decide_for(self, project: str) -> bool:
        """Approve or deny ``project``'s pending jobs: admins, and approver member tokens of that project."""
        return self.role is Role.ADMIN or (self.role is Role.MEMBER and self.approver and project in self.projects)

    def require(self, *roles: Role) -> None:
        """Raise Forbidden unless the caller has one of ``roles``."""
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"role {self.role.value} may not do this (needs {allowed})")
