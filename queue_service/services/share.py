"""Fair-share standing per project, as Slurm's ``sshare`` shows it (``gpuq share``, ``GET /v1/share``).

Per project: its weight (``RawShares``) and normalised share of all weights
(``NormShares``); its decayed usage in GPU-equivalent hours twice, as held
(``allocated``) and × each job's measured busy share (``used``) — the same
half-life and window the admitter uses (``snapshots.decayed_project_usage``);
the usage the configured mode charges (``GPUQ_FAIR_SHARE_CHARGE``) and its
share of every project's charged usage (``EffectvUsage``); the fair-share
factor ``2^(-effective_usage / norm_share)`` (Slurm's classic formula: 1.0
unused, 0.5 at exactly its share, towards 0 above it); and the standing the
admitter orders equal priorities by (charged usage per unit of weight, lower
first), with its rank.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from queue_service.auth import Principal
from queue_service.billing.ledger import db_now
from queue_service.db.models import Project
from queue_service.settings import Settings
from queue_service.snapshots import decayed_project_usage

HOUR_S = 3600.0


@dataclass(frozen=True, slots=True)
class ShareRow:
    project: str
    weight: float
    norm_share: float
    allocated_gpu_h: float  # decayed
    used_gpu_h: float  # decayed, × measured busy share
    charged_gpu_h: float  # what the mode charges
    effective_usage: float  # charged / every project's charged
    fair_share: float  # 2^(-effective_usage / norm_share)
    standing: float  # charged GPU-equivalent seconds per unit of weight: what admission sorts by
    rank: int  # 1: first among equal priorities


@dataclass(frozen=True, slots=True)
class ShareReport:
    charge: str
    half_life_s: float
    rows: list[ShareRow]


def standing(session: Session, *, settings: Settings, principal: Principal | None = None,
             both: bool = True) -> ShareReport:
    """Every project's fair-share standing (a member sees only their own projects' rows; ranks stay global).

    ``both`` False reads only the charged mode's usage (one query, for /metrics); the other column is
    then what the mode charges too.
    """
    now = db_now(session)
    half_life_s = settings.fair_share_half_life_s
    mode = settings.fair_share_charge
    charged = decayed_project_usage(session, now=now, half_life_s=half_life_s, charge=mode)
    other = "allocated" if mode == "used" else "used"
    second = decayed_project_usage(session, now=now, half_life_s=half_life_s, charge=other) if both else charged
    allocated, used = (second, charged) if mode == "used" else (charged, second)
    weights = {name: float(w) for name, w in session.execute(select(Project.name, Project.weight))}
    total_weight = sum(max(w, 0.0) for w in weights.values()) or 1.0
    total_charged = sum(charged.get(p, 0.0) for p in weights) or 0.0
    stand = {p: charged.get(p, 0.0) / max(w, 1e-9) for p, w in weights.items()}
    ranks = {p: i + 1 for i, p in enumerate(sorted(weights, key=lambda p: (stand[p], p)))}
    rows = []
    for project, weight in sorted(weights.items()):
        if principal is not None and not principal.can_see_project(project):
            continue
        norm = max(weight, 0.0) / total_weight
        effective = charged.get(project, 0.0) / total_charged if total_charged > 0 else 0.0
        factor = 2 ** (-effective / norm) if norm > 0 else 0.0
        rows.append(ShareRow(
            project=project, weight=weight, norm_share=round(norm, 6),
            allocated_gpu_h=round(allocated.get(project, 0.0) / HOUR_S, 6),
            used_gpu_h=round(used.get(project, 0.0) / HOUR_S, 6),
            charged_gpu_h=round(charged.get(project, 0.0) / HOUR_S, 6),
            effective_usage=round(effective, 6), fair_share=round(factor, 6),
            standing=round(stand[project], 6), rank=ranks[project],
        ))
    return ShareReport(charge=mode, half_life_s=half_life_s, rows=rows)
