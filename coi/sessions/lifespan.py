"""When a session's lifetime limits end it ([limits] max_duration and idle_stop): pure
decisions over samples of the container's CPU use; coi/sessions/limiter.py carries
them out. No clock is read here: every function is given the time.
"""

from __future__ import annotations

from dataclasses import dataclass

# Below this share of one CPU between two samples, nothing in the container is working.
# Measured here (Incus state, 5 s windows): a session container of the coi image at rest
# (systemd, tmux, bash) used 0 ns/s, with an occasional 0.06 ms/s; a `while sleep 1` shell
# loop 1.4-1.6 ms/s; a loop hashing 300 kB twice a second 12 ms/s.
IDLE_CPU = 0.001
TICK_MAX = 30.0  # the longest sleep between samples: a stopped container's limiter goes
TICK_MIN = 1.0  # the shortest: at most one state request a second per session


@dataclass(frozen=True)
class Plan:
    """One session's limits: started (epoch seconds), then each limit in seconds or None."""

    started: float
    max_duration: int | None = None
    idle_stop: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.max_duration or self.idle_stop)


@dataclass(frozen=True)
class Sample:
    """One look at the container: when, its cgroup's cumulative CPU time (nanoseconds, as
    Incus reports it) and whether a coi client holds its watch (someone is attached)."""

    at: float
    cpu_ns: int
    attached: bool


def busy(before: Sample, after: Sample, threshold: float = IDLE_CPU) -> bool:
    """Whether the session did anything between two samples: a client attached at either
    end, CPU above threshold of one CPU, or a counter that went back (a restart) or a
    clock that did not move forward, or a CPU time Incus did not know (negative): no
    judgement, so busy."""
    span = after.at - before.at
    used = after.cpu_ns - before.cpu_ns
    unknown = before.cpu_ns < 0 or after.cpu_ns < 0
    if before.attached or after.attached or unknown or span <= 0 or used < 0:
        return True
    return used >= threshold * span * 1e9


def idle_since(
    since: float | None, before: Sample | None, after: Sample, threshold: float = IDLE_CPU
) -> float | None:
    """After one more sample, the time since which the session has been idle (None: it
    is busy now, or there is no earlier sample to compare with)."""
    if before is None or busy(before, after, threshold):
        return None
    return before.at if since is None else since


def due(plan: Plan, now: float, since: float | None) -> str | None:
    """The limit that ends the session now ("max_duration" or "idle_stop"), or None."""
    if plan.max_duration and now >= plan.started + plan.max_duration:
        return "max_duration"
    if plan.idle_stop and since is not None and now - since >= plan.idle_stop:
        return "idle_stop"
    return None


def left(plan: Plan, now: float, since: float | None) -> tuple[float, str] | None:
    """Seconds until a limit ends the session (at the soonest: an active session's idle
    clock has not started) and which limit; None when it has none."""
    ends = []
    if plan.max_duration:
        ends.append((plan.started + plan.max_duration - now, "max_duration"))
    if plan.idle_stop:
        ends.append(((now if since is None else since) + plan.idle_stop - now, "idle_stop"))
    if not ends:
        return None
    seconds, which = min(ends)
    return max(0.0, seconds), which


def tick(plan: Plan) -> float:
    """The usual time between two samples: an eighth of the idle window (an idle session
    stops at most that late), else TICK_MAX; within [TICK_MIN, TICK_MAX]."""
    if not plan.idle_stop:
        return TICK_MAX
    return min(TICK_MAX, max(TICK_MIN, plan.idle_stop / 8))


def next_wake(plan: Plan, now: float, since: float | None) -> float:
    """How long to sleep before the next sample: a tick, or less when a limit falls due
    sooner (never below TICK_MIN, never above TICK_MAX)."""
    until = left(plan, now, since)
    soonest = tick(plan) if until is None else min(tick(plan), until[0])
    return min(TICK_MAX, max(TICK_MIN, soonest))
