"""First-start set-up of a data directory: schema, the ``default`` project, admin and agent tokens.

The admin token expires like any other (``admin_lifetime_s``; made anew at
the next start once expired, or replaced by ``gpuq admin token rotate``);
the local agent's token is bound to the node it runs (an agent speaks only
for its own node), and made anew when the node name changes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from queue_service.db.migrate import upgrade
from queue_service.db.models import Role
from queue_service.services import projects, tokens

ADMIN_TOKEN_FILE = "admin.token"
AGENT_TOKEN_FILE = "agent.token"


def write_secret(path: Path, value: str) -> None:
    """Write a file only its owner can read (mode 0600 from the start, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.chmod(path, 0o600)


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def prepare(database_url: str, data_dir: Path, sessions: sessionmaker[Session], *, node_name: str | None = None,
            admin_lifetime_s: float = 0.0) -> tuple[Path, str]:
    """Migrate, create ``default`` and the tokens if missing; returns (admin token path, agent token)."""
    node_name = node_name or socket.gethostname()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    upgrade(database_url)
    admin_path = data_dir / ADMIN_TOKEN_FILE
    agent_path = data_dir / AGENT_TOKEN_FILE
    with sessions() as session, session.begin():
        projects.ensure(session, name="default")
        admin = read_secret(admin_path)
        if admin is None or _invalid(session, admin):
            _row, admin = tokens.create(session, role=Role.ADMIN, name="bootstrap-admin", actor="system",
                                        lifetime_s=admin_lifetime_s)
            write_secret(admin_path, admin)
        agent = read_secret(agent_path)
        if agent is None or _invalid(session, agent, node_name=node_name):
            _row, agent = tokens.create(session, role=Role.AGENT, name="local-agent", actor="system",
                                        node_name=node_name)
            write_secret(agent_path, agent)
    return admin_path, agent


def _invalid(session: Session, token: str, *, node_name: str | None = None) -> bool:
    """True if the token is unknown, revoked, expired or (for the agent's) bound to another node."""
    try:
        principal = tokens.authenticate(session, token=token)
    except Exception:  # noqa: BLE001 - any failure: make a new one
        return True
    return node_name is not None and principal.node_name != node_name
