"""The written transition table: ``check`` accepts exactly its rows, and the docstring lists the same rows.

Every (event, source, target, actor) combination is tried, legal and
illegal, so a row added to, dropped from or widened in ``TABLE`` without a
matching change here and in the docstring fails a test.
"""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from queue_service.errors import Conflict
from queue_service.lifecycle import table
from queue_service.lifecycle.states import FINAL_STATES, Actor, Event, JobState
from queue_service.lifecycle.table import TABLE, IllegalTransition, Transition, allowed, check

SOURCES: list[JobState | None] = [None, *JobState]

Row = tuple[Event, JobState | None, frozenset[JobState], frozenset[Actor]]


def _key(t: Transition) -> Row:
    return (t.event, t.source, t.targets, t.actors)


def _legal(event: Event, source: JobState | None, target: JobState, actor: Actor) -> bool:
    """What the table says, read independently of ``check``'s index."""
    return any(t.event is event and t.source == source and target in t.targets and actor in t.actors for t in TABLE)


def test_one_row_per_event_and_source() -> None:
    # ``check`` looks rows up by (event, source): a second row for the same pair would be silently dropped.
    pairs = Counter((t.event, t.source) for t in TABLE)
    assert [p for p, n in pairs.items() if n > 1] == []


@pytest.mark.parametrize("event", list(Event), ids=lambda e: e.value)
def test_check_accepts_exactly_the_rows_of_the_table(event: Event) -> None:
    accepted = 0
    for source, target, actor in itertools.product(SOURCES, JobState, Actor):
        case = (event.value, source, target.value, actor.value)
        if _legal(event, source, target, actor):
            check(event, source, target, actor, job_id="j1")  # must not raise
            accepted += 1
            continue
        with pytest.raises(IllegalTransition) as raised:
            check(event, source, target, actor, job_id="j1")
        assert raised.value.source == source, case  # the job's state when the move was refused
        assert raised.value.job_state == (source.value if source else None), case  # what the 409 body says
        assert raised.value.event is event, case
        assert isinstance(raised.value, Conflict) and raised.value.field == "state", case
        assert "j1" in raised.value.message, case
    rows = [t for t in TABLE if t.event is event]
    assert rows, f"{event.value} has no row: no writer could ever record it"
    assert accepted == sum(len(t.targets) * len(t.actors) for t in rows)


def test_allowed_returns_the_row_or_none() -> None:
    for event, source in itertools.product(Event, SOURCES):
        rows = [t for t in TABLE if t.event is event and t.source == source]
        assert allowed(event, source) == (rows[0] if rows else None), (event, source)


def test_final_states_are_absorbing_and_only_submit_creates() -> None:
    assert [t for t in TABLE if t.source in FINAL_STATES] == []
    assert {t.event for t in TABLE if t.source is None} == {Event.SUBMIT}
    # Every state a job can be in is reachable from submit through the table.
    reached: set[JobState | None] = {None}
    while True:
        more = {target for t in TABLE if t.source in reached for target in t.targets} - reached
        if not more:
            break
        reached |= more
    assert reached == set(SOURCES)


def test_the_refusal_names_the_state_and_the_move() -> None:
    with pytest.raises(IllegalTransition, match="job j1 is cancelled; only running jobs can finish"):
        check(Event.FINISH, JobState.CANCELLED, JobState.SUCCEEDED, Actor.AGENT, job_id="j1")
    with pytest.raises(IllegalTransition, match="not queued"):
        check(Event.FINISH, JobState.RUNNING, JobState.QUEUED, Actor.AGENT)
    with pytest.raises(IllegalTransition, match="the user may not start it"):
        check(Event.START, JobState.ADMITTED, JobState.RUNNING, Actor.USER)
    with pytest.raises(IllegalTransition, match="is new; only queued jobs can admit") as raised:
        check(Event.ADMIT, None, JobState.ADMITTED, Actor.ADMITTER)
    assert raised.value.source is None and raised.value.job_state is None


# -- the docstring's table is the code's table -------------------------------------------------------------------


def _docstring_rows(doc: str) -> list[Row]:
    """Parse the reStructuredText "simple table" in ``doc`` by the column spans of its rule lines."""
    lines = doc.splitlines()
    rules = [i for i, line in enumerate(lines) if line.strip() and set(line.strip()) <= {"=", " "}]
    assert len(rules) == 3, "the docstring's table has a header rule, a header and a closing rule"
    start, header_end, end = rules
    rule = lines[start]
    spans, col = [], 0
    for width in (len(w) for w in rule.split(" ")):
        if width:
            spans.append((col, col + width))
        col += width + 1
    assert [lines[start + 1][a:b].strip() for a, b in spans] == ["event", "from", "to", "who"]

    def states(cell: str) -> frozenset[JobState]:
        # "running (stopping)", "queued (held)": the words in brackets are a note, not a state.
        return frozenset(JobState(part.split("(")[0].strip()) for part in cell.split(","))

    out: list[Row] = []
    for line in lines[header_end + 1:end]:
        event, source, targets, who = (line[a:b if i < len(spans) - 1 else None].strip()
                                       for i, (a, b) in enumerate(spans))
        out.append((
            Event(event),
            None if source == "(new)" else JobState(source),
            states(targets),
            frozenset(Actor(a.strip()) for a in who.split(",")),
        ))
    return out


def test_the_docstring_table_lists_the_same_rows_as_the_code() -> None:
    written = _docstring_rows(table.__doc__ or "")
    assert len(written) == len(TABLE)
    assert Counter(written) == Counter(_key(t) for t in TABLE)


def test_the_docstring_comparison_would_see_a_drift() -> None:
    doc = table.__doc__ or ""
    widened = doc.replace("start    admitted         running                        agent",
                          "start    admitted         running                        agent, user")
    dropped = "\n".join(line for line in doc.splitlines() if not line.startswith("hold "))
    assert widened != doc and dropped != doc
    code = Counter(_key(t) for t in TABLE)
    assert Counter(_docstring_rows(widened)) != code
    assert Counter(_docstring_rows(dropped)) != code
