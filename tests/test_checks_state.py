"""A check's states and transitions (bus/checks/state.py), as plain functions of time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hookbus.bus.checks.state import Run, State, Status, Why, advance, next_change, on_run, pause, resume


@dataclass
class Spec:
    name: str = "nightly"
    grace: float = 60.0
    max_runtime: float | None = None
    down_after_failures: int = 1
    repeat: float | None = None


def every(period: float) -> Callable[[float], float]:
    return lambda after: after + period


def finish(seq: int, at: float, outcome: str = "success", error: str | None = None) -> Run:
    return Run(seq, at, False, f"job-{seq}", outcome, error)


def start(seq: int, at: float) -> Run:
    return Run(seq, at, True, f"job-{seq}")


def test_a_new_check_never_goes_down_before_its_first_run() -> None:
    state = State()
    assert advance(Spec(), state, 10**9) == [] and state.status is Status.NEW


def test_late_then_missed_once_then_back_up_once() -> None:
    spec, state, due = Spec(), State(), every(3600)
    assert on_run(spec, state, finish(1, 1000), due) == []
    assert state.status is Status.UP and state.expected_at == 4600
    assert advance(spec, state, 4600) == [] and state.status is Status.LATE
    (down,) = advance(spec, state, 4660)
    assert (down.up, down.key, down.at) == (False, "down/missed/19700101T011640Z", 4660)
    assert state.status is Status.DOWN and state.reason is Why.MISSED
    assert advance(spec, state, 10**6) == []  # once: no repeat configured
    (up,) = on_run(spec, state, finish(7, 5000), due)
    assert up.up and up.key == "up/7" and up.fields["down_since"] == 4660
    assert state.status is Status.UP


def test_a_run_started_within_grace_is_not_missed() -> None:
    spec, state, due = Spec(), State(), every(3600)
    on_run(spec, state, finish(1, 0), due)
    advance(spec, state, 3610)
    assert state.status is Status.LATE
    assert on_run(spec, state, start(2, 3620), due) == [] and state.status is Status.STARTED
    assert advance(spec, state, 3700) == []  # the old deadline passed: the run under way answered it


def test_running_too_long() -> None:
    spec, state, due = Spec(max_runtime=600), State(), every(86400)
    on_run(spec, state, start(1, 0), due)
    assert advance(spec, state, 599) == []
    (down,) = advance(spec, state, 601)
    assert state.reason is Why.RUNNING_TOO_LONG and down.key == "down/running_too_long/job-1"


def test_down_after_three_failures_and_the_error_kept() -> None:
    spec, state, due = Spec(down_after_failures=3), State(), every(86400)
    assert on_run(spec, state, finish(1, 0, "failed", "disk full"), due) == []
    assert on_run(spec, state, finish(2, 10, "failed"), due) == []
    (down,) = on_run(spec, state, finish(3, 20, "failed", "repository does not exist"), due)
    assert down.key == "down/failed/3" and state.failures == 3 and state.last_error == "repository does not exist"
    assert on_run(spec, state, finish(4, 30, "failed"), due) == []  # still down: no second announcement


def test_reminders_every_repeat_while_down() -> None:
    spec, state, due = Spec(grace=0, repeat=100), State(), every(10)
    on_run(spec, state, finish(1, 0), due)
    alerts = advance(spec, state, 10 + 350)
    assert [a.key for a in alerts] == ["down/missed/19700101T000010Z"] + [
        f"down/missed/19700101T000010Z/reminder/{n}" for n in (1, 2, 3)]


def test_paused_checks_wait_and_resume_from_now() -> None:
    spec, state, due = Spec(), State(), every(100)
    on_run(spec, state, finish(1, 0), due)
    assert pause(state) and not pause(state)
    assert next_change(spec, state) is None and advance(spec, state, 10**6) == []
    assert resume(state, 5000, due) and state.status is Status.UP and state.expected_at == 5100


def test_state_survives_json() -> None:
    spec, state, due = Spec(), State(), every(100)
    on_run(spec, state, finish(1, 0, "failed", "boom"), due)
    again = State.from_json(state.to_json())
    assert again == state
