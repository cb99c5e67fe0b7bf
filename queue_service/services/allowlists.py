"""Who may use what beyond GPUs: per project, the container images its jobs may run and the host volumes
they may mount. Checked at submit (403 naming the field, nothing stored); set by admins (audited).

- ``Project.allowed_images``: fnmatch patterns over the whole reference (``registry.internal/vision/*``);
  ``None``, any image. A project with a list runs only images that match: a host-process job (no image)
  is refused too, since it would step around the list.
- ``Project.allowed_volumes``: ``[{"host_path": "/data/vision", "read_only": true}]``: a job may mount that
  directory or anything below it, read-only (``read_only`` false: read-write too). Empty: no host volumes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any, Protocol

from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.db.models import Project
from queue_service.errors import Forbidden, InvalidRequest
from queue_service.services import audit


class VolumeSpec(Protocol):
    """One volume a job asks for (``api.schemas.jobs.VolumeCreate`` has this shape)."""

    @property
    def host_path(self) -> str: ...

    @property
    def container_path(self) -> str: ...

    @property
    def read_only(self) -> bool: ...


def within(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute and normalised)."""
    root = posixpath.normpath(root)
    path = posixpath.normpath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_image(project: Project, image: str | None) -> None:
    """Forbidden (field ``image``) when the project's image list does not allow ``image``."""
    patterns = project.allowed_images
    if patterns is None:
        return
    if image is None:
        raise Forbidden(f"project {project.name!r} runs only container images ({', '.join(patterns) or 'none'}); "
                        "a host-process job is not allowed", field="image")
    if not any(fnmatchcase(image, p) for p in patterns):
        raise Forbidden(f"image {image!r} is not allowed for project {project.name!r} (allowed: "
                        f"{', '.join(patterns) or 'none'})", field="image")


def check_volumes(project: Project, volumes: Sequence[VolumeSpec], *, image: str | None) -> list[dict[str, Any]]:
    """The volumes as stored on the job; Forbidden (field ``volumes.N.host_path``) for one the project may not
    mount, or mount read-write; 422 (``volumes``) for a host-process job (only containers mount volumes)."""
    if volumes and image is None:
        raise InvalidRequest("volumes are mounted into a container: give an image (a host-process job sees the "
                             "host's files as its user does)", field="volumes")
    allowed = project.allowed_volumes or []
    out = []
    for index, vol in enumerate(volumes):
        fits = [a for a in allowed if within(vol.host_path, a["host_path"])]
        if not fits:
            roots = ", ".join(a["host_path"] for a in allowed) or "none"
            raise Forbidden(f"volumes[{index}]: {vol.host_path} is not a host path project {project.name!r} may "
                            f"mount (allowed: {roots})", field=f"volumes.{index}.host_path")
        if not vol.read_only and all(a.get("read_only", True) for a in fits):
            raise Forbidden(f"volumes[{index}]: {vol.host_path} may be mounted read-only only",
                            field=f"volumes.{index}.read_only")
        out.append({"host_path": posixpath.normpath(vol.host_path),
                    "container_path": posixpath.normpath(vol.container_path), "read_only": bool(vol.read_only)})
    return out


def put(session: Session, *, project: Project, images: list[str] | None, volumes: list[dict[str, Any]],
        actor: Principal, reason: str = "") -> Project:
    """Set a project's allow-lists (both, as given); audited with before and after."""
    for index, vol in enumerate(volumes):
        path = vol["host_path"]
        if not path.startswith("/") or posixpath.normpath(path) != path.rstrip("/") or path == "/":
            raise InvalidRequest(f"volumes[{index}].host_path: an absolute, normalised directory other than /, "
                                 f"got {path!r}", field=f"volumes.{index}.host_path")
    before = {"images": project.allowed_images, "volumes": project.allowed_volumes or []}
    project.allowed_images = None if images is None else sorted(set(images))
    project.allowed_volumes = [{"host_path": posixpath.normpath(v["host_path"]), "read_only": bool(v["read_only"])}
                               for v in volumes]
    audit.record(session, actor=actor, action="project.allowlists", target=project.name, reason=reason,
                 before=before, after={"images": project.allowed_images, "volumes": project.allowed_volumes})
    return project
