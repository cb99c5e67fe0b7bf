"""One writer of lifecycle state: no module outside ``queue_service/lifecycle/`` assigns job, attempt or
allocation state.

Every ``.py`` under ``queue_service/`` is parsed with :mod:`ast` and these
are flagged:

- an assignment (plain, augmented, annotated, inside a tuple) to an
  attribute named like a lifecycle column (``x.state = …`` on anything),
  and ``setattr(x, "state", …)``;
- ``update(Job | Attempt | Allocation)….values(…)`` / ``insert(…)….values(…)``
  naming such a column (keyword or dict key) or passing a ``**`` it cannot read
  (``**{c: … for c in COLUMNS}`` over a module-level tuple of names is read);
  ``session.execute(update(Job) | insert(Job), rows)`` (the rows' keys are
  not checkable either);
- ``Job(…)`` / ``Attempt(…)`` / ``Allocation(…)`` passing such a keyword (or such a ``**``);
- raw SQL text that updates or inserts into ``jobs``, ``attempts`` or ``allocations``.

Node status is ``nodes.status``, not a lifecycle column, so it is not caught;
``ALLOWED`` lists any other exception with its reason (none today).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "queue_service"
LIFECYCLE = PACKAGE / "lifecycle"

FIELDS = frozenset({
    "state", "released_at", "ended_at", "finished_at", "exit_code", "stop_cause", "stop_action",
    "cancel_requested", "started_at", "admitted_at", "exits",
})
MODELS = frozenset({"Job", "Attempt", "Allocation"})
RAW_SQL = re.compile(r"\b(update|insert\s+into)\s+\"?(jobs|attempts|allocations)\b", re.IGNORECASE)

ALLOWED: dict[tuple[str, str], str] = {
    # (path relative to queue_service/, what) -> why it is legitimate. Empty: nothing outside the lifecycle writes.
}


@dataclass(frozen=True, order=True)
class Write:
    """One place that writes lifecycle state."""

    path: str
    line: int
    what: str


def _targets(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, (ast.Tuple, ast.List)):
        return [t for e in node.elts for t in _targets(e)]
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return [node]


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _statement_model(expr: ast.expr) -> tuple[str, str] | None:
    """``("update", "Job")`` if ``expr`` is ``update(Job)`` or a chain built on it (``.where(…)``, ``.values(…)``)."""
    while True:
        if isinstance(expr, ast.Call):
            verb = _name(expr.func)
            if verb in ("update", "insert") and expr.args and _name(expr.args[0]) in MODELS:
                return verb, _name(expr.args[0]) or ""
            expr = expr.func
        elif isinstance(expr, ast.Attribute):
            expr = expr.value
        else:
            return None


def _constants(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level ``NAME = ("a", "b", …)`` tuples, lists and sets of strings (column lists a ``**`` may spread)."""
    out: dict[str, list[str]] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, (ast.Tuple, ast.List, ast.Set))
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts)):
            out[node.targets[0].id] = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    return out


def _spread(value: ast.expr, constants: dict[str, list[str]]) -> list[str]:
    """What a ``**value`` names: the columns of ``{c: … for c in NAME}`` over a known list, else unknown (``**``)."""
    if (isinstance(value, ast.DictComp) and len(value.generators) == 1 and isinstance(value.key, ast.Name)
            and isinstance(value.generators[0].target, ast.Name) and value.key.id == value.generators[0].target.id
            and isinstance(value.generators[0].iter, ast.Name) and value.generators[0].iter.id in constants):
        return [c for c in constants[value.generators[0].iter.id] if c in FIELDS]
    return ["**"]


def _keys(call: ast.Call, constants: dict[str, list[str]]) -> list[str]:
    """The lifecycle columns a call names by keyword or literal dict key; an unknown ``**`` counts as ``**``."""
    keys = [k.arg for k in call.keywords if k.arg in FIELDS]
    keys += [c for k in call.keywords if k.arg is None for c in _spread(k.value, constants)]
    for arg in call.args:
        if isinstance(arg, ast.Dict):
            keys += [k.value for k in arg.keys if isinstance(k, ast.Constant) and k.value in FIELDS]
            keys += [c for k, v in zip(arg.keys, arg.values, strict=True) if k is None for c in _spread(v, constants)]
    return keys


def writes(source: str, path: str) -> list[Write]:
    """Every place in ``source`` that writes a job's, an attempt's or an allocation's lifecycle state."""
    found: list[Write] = []
    tree = ast.parse(source)
    constants = _constants(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in _targets(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = _targets(node.target)
        else:
            targets = []
        for target in targets:
            if isinstance(target, ast.Attribute) and target.attr in FIELDS:
                found.append(Write(path, node.lineno, f"{ast.unparse(target)} ="))
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if (name == "setattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in FIELDS):
                found.append(Write(path, node.lineno, f"setattr(…, {node.args[1].value!r})"))
            if name in MODELS and not isinstance(node.func, ast.Attribute) and _keys(node, constants):
                found.append(Write(path, node.lineno, f"{name}({', '.join(_keys(node, constants))})"))
            if isinstance(node.func, ast.Attribute) and name == "values":
                statement = _statement_model(node.func.value)
                if statement is not None and _keys(node, constants):
                    verb, model = statement
                    found.append(Write(path, node.lineno,
                                       f"{verb}({model}).values({', '.join(_keys(node, constants))})"))
            if name == "execute" and len(node.args) >= 2:
                statement = _statement_model(node.args[0])
                if statement is not None:
                    verb, model = statement
                    found.append(Write(path, node.lineno, f"execute({verb}({model}), rows)"))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_SQL.search(node.value):
            found.append(Write(path, node.lineno, f"SQL {RAW_SQL.search(node.value).group(0)!r}"))
    return sorted(set(found))


def _all_writes() -> list[Write]:
    out: list[Write] = []
    for file in sorted(PACKAGE.rglob("*.py")):
        out += writes(file.read_text(encoding="utf-8"), file.relative_to(PACKAGE).as_posix())
    return out


def test_no_module_outside_the_lifecycle_writes_lifecycle_state() -> None:
    outside = [w for w in _all_writes() if not w.path.startswith("lifecycle/") and (w.path, w.what) not in ALLOWED]
    assert outside == [], "lifecycle state written outside queue_service/lifecycle/ (call a transition instead):\n" + \
        "\n".join(f"  queue_service/{w.path}:{w.line}: {w.what}" for w in outside)


def test_the_allow_list_names_only_writes_that_exist() -> None:
    present = {(w.path, w.what) for w in _all_writes()}
    assert [key for key in ALLOWED if key not in present] == [], "remove allow-list entries that no longer match"


READERS = ("__init__.py", "states.py", "table.py", "events.py", "effects.py", "grace.py", "stops.py",
           "transitions.py")  # the table, events, effects, grace, stop fan-out and the front door: they only read


def test_inside_the_lifecycle_the_readers_write_nothing() -> None:
    readers = {f"lifecycle/{name}" for name in READERS}
    assert readers <= {f.relative_to(PACKAGE).as_posix() for f in LIFECYCLE.glob("*.py")}, "a reader was renamed"
    assert [w for w in _all_writes() if w.path in readers] == []
    states = [w for w in _all_writes() if w.what.endswith(".state =") or "(state" in w.what]
    assert states and all(w.path.startswith("lifecycle/") for w in states), states
    released = [w for w in _all_writes() if "released_at" in w.what]
    assert {w.path for w in released} == {"lifecycle/allocations.py"}, released


# -- the checker itself bites ------------------------------------------------------------------------------------

VIOLATIONS = '''
from sqlalchemy import insert, update, text
import sqlalchemy as sa

def bad(session, job, attempt, rows, fields):
    job.state = "running"                                                    # 6
    attempt.ended_at, attempt.exit_code = now, 1                             # 7
    job.exit_code += 1                                                       # 8
    for a in rows:
        a.released_at = now                                                  # 10
    session.execute(update(Job).where(Job.id == job.id).values(state="failed"))          # 11
    session.execute(sa.update(Attempt).values({"ended_at": now, "reason": "x"}))         # 12
    session.execute(update(Allocation).values(**fields))                     # 13
    session.add(Attempt(job_id=job.id, number=2, state="running"))           # 14
    Allocation(job_id=job.id, **fields)                                      # 15
    setattr(job, "cancel_requested", True)                                   # 16
    session.execute(text("UPDATE jobs SET state = 'failed'"))                # 17
    session.execute(insert(Attempt), rows)                                   # 18
    job.stop_cause: str = "preempt"                                          # 19
    (job.started_at, *rest) = (now, 1)                                       # 20
    Job(name="x", **{c: getattr(job, c) for c in COPIED})                    # 21
    Job(name="x", **{c: 1 for c in names})                                   # 22

COPIED = ("name", "exit_code")
'''

NEAR_MISSES = '''
from sqlalchemy import update

def fine(session, job, node, rows):
    node.status = "down"                                     # nodes.status is not lifecycle state
    job.reason = "waiting"                                   # words a person reads, not state
    job.priority_override = 5
    if job.state == "queued" and job.exit_code is None:      # reading is fine
        pass
    state = job.state
    KeptAttempt(job_id=job.id, state=job.state)              # a wire value, not a row
    session.execute(update(UsageInterval).values(ended_at=now))   # the ledger's own table
    session.execute(update(Job).values(priority_override=1))      # not a lifecycle column
    Job(name="n", project_id="p")
    Job(id="x", **{c: getattr(job, c) for c in COPIED})         # copies only submission fields
    session.execute(select(Job), rows)
    text("SELECT * FROM jobs WHERE state = 'queued'")

COPIED = ("name", "image", "command")
'''


def test_the_checker_reports_every_kind_of_violation() -> None:
    found = writes(VIOLATIONS, "bad.py")
    assert [(w.line, w.what) for w in found] == [
        (6, "job.state ="),
        (7, "attempt.ended_at ="),
        (7, "attempt.exit_code ="),
        (8, "job.exit_code ="),
        (10, "a.released_at ="),
        (11, "update(Job).values(state)"),
        (12, "update(Attempt).values(ended_at)"),
        (13, "update(Allocation).values(**)"),
        (14, "Attempt(state)"),
        (15, "Allocation(**)"),
        (16, "setattr(…, 'cancel_requested')"),
        (17, "SQL 'UPDATE jobs'"),
        (18, "execute(insert(Attempt), rows)"),
        (19, "job.stop_cause ="),
        (20, "job.started_at ="),
        (21, "Job(exit_code)"),
        (22, "Job(**)"),
    ]


def test_the_checker_leaves_reads_and_other_tables_alone() -> None:
    assert writes(NEAR_MISSES, "fine.py") == []


def test_a_violation_in_a_service_module_fails_the_rule(tmp_path: Path) -> None:
    # The same walk over a package with one offending service module (and the same line in lifecycle/) finds it.
    (tmp_path / "services").mkdir()
    (tmp_path / "lifecycle").mkdir()
    (tmp_path / "services" / "jobs.py").write_text("def f(job):\n    job.state = 'cancelled'\n")
    (tmp_path / "lifecycle" / "transitions.py").write_text("def f(job):\n    job.state = 'cancelled'\n")
    found = [w for f in sorted(tmp_path.rglob("*.py"))
             for w in writes(f.read_text(), f.relative_to(tmp_path).as_posix())]
    outside = [w for w in found if not w.path.startswith("lifecycle/")]
    assert outside == [Write("services/jobs.py", 2, "job.state =")]
