"""The lifetime limits' decisions (coi/sessions/lifespan.py): idleness from samples of
a container's CPU time, which limit ends a session and when, how long the limiter sleeps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coi.sessions import lifespan
from coi.sessions.lifespan import Plan, Sample

limits = st.none() | st.integers(min_value=1, max_value=10**6)
plans = st.builds(Plan, st.floats(0, 1e9), limits, limits)
spans = st.floats(min_value=0.01, max_value=3600)
shares = st.floats(min_value=0, max_value=4)  # of one CPU (a container may use several)


def step(before: Sample, span: float, share: float, attached: bool = False) -> Sample:
    return Sample(before.at + span, before.cpu_ns + int(share * span * 1e9), attached)


@given(st.lists(st.tuples(spans, shares, st.booleans()), min_size=1, max_size=30))
def test_idle_since_is_the_start_of_the_quiet_stretch_that_ends_now(
    moves: list[tuple[float, float, bool]],
) -> None:
    first = Sample(1000.0, 5 * 10**9, False)
    samples: list[Sample] = [first]
    since = lifespan.idle_since(None, None, first)  # one sample alone judges nothing
    assert since is None
    for span, share, attached in moves:
        after = step(samples[-1], span, share, attached)
        since = lifespan.idle_since(since, samples[-1], after)
        samples.append(after)
    # replay, written apart: walk back from the last sample while the steps are quiet
    quiet_from = None
    for a, b in zip(reversed(samples[:-1]), reversed(samples[1:]), strict=True):
        used = (b.cpu_ns - a.cpu_ns) / ((b.at - a.at) * 1e9)
        if a.attached or b.attached or used >= lifespan.IDLE_CPU:
            break
        quiet_from = a.at
    assert since == quiet_from


@given(spans, shares, st.booleans(), st.booleans())
def test_an_attached_client_or_work_above_the_threshold_is_busy(
    span: float, share: float, was: bool, now: bool
) -> None:
    before = Sample(10.0, 10**9, was)
    after = step(before, span, share, now)
    quiet = not (was or now) and (after.cpu_ns - before.cpu_ns) < lifespan.IDLE_CPU * span * 1e9
    assert lifespan.busy(before, after) is not quiet


@given(spans, st.integers(min_value=1, max_value=10**12))
def test_a_counter_that_went_back_or_is_unknown_is_never_idle(span: float, drop: int) -> None:
    before = Sample(10.0, drop, False)
    assert lifespan.busy(before, Sample(10.0 + span, 0, False))  # restarted: went back
    assert lifespan.busy(Sample(10.0, -1, False), Sample(10.0 + span, -1, False))
    assert lifespan.busy(before, Sample(10.0, drop, False))  # no time passed


@given(plans, st.floats(0, 2e9), st.none() | st.floats(0, 2e9))
def test_due_and_left_agree(plan: Plan, now: float, since: float | None) -> None:
    if since is not None and since > now:
        since = now
    reason = lifespan.due(plan, now, since)
    left = lifespan.left(plan, now, since)
    if not plan.any:
        assert reason is None and left is None
        return
    assert left is not None
    assert (reason is not None) == (left[0] == 0)  # due exactly when nothing is left
    if plan.max_duration:
        assert left[0] <= max(0.0, plan.started + plan.max_duration - now)


@given(plans, st.floats(0, 2e9), st.none() | st.floats(0, 2e9))
def test_the_limiter_sleeps_a_bounded_time_and_never_past_a_deadline(
    plan: Plan, now: float, since: float | None
) -> None:
    wait = lifespan.next_wake(plan, now, since)
    assert lifespan.TICK_MIN <= wait <= lifespan.TICK_MAX
    left = lifespan.left(plan, now, since)
    if left is not None and left[0] >= lifespan.TICK_MIN:
        assert wait <= left[0]  # wakes by the time a limit could fall due


@given(st.integers(min_value=1, max_value=10**6))
def test_an_idle_session_is_judged_at_most_an_eighth_of_its_window_late(idle: int) -> None:
    tick = lifespan.tick(Plan(0.0, None, idle))
    assert tick <= max(lifespan.TICK_MIN, idle / 8)
