"""The one adapter over Incus: the class Incus, put together from one part per job, and
`connect`. It is the only code that imports pylxd (rest.py, images.py).

rest.py holds the connection and its raw requests; the verbs the rest of coi speaks (the
Protocol IncusAPI in api.py) are in instances.py, inside.py, images.py and resources.py.
Callers never see pylxd objects and the one fake (tests/fakes.py) stands in for unit tests.
"""

from __future__ import annotations

import time

from coi.core.errors import IncusError
from coi.incus.images import Images
from coi.incus.inside import ExecResult, Inside
from coi.incus.instances import Instances
from coi.incus.resources import Resources
from coi.incus.rest import Endpoint, Json, socket_path

__all__ = ["Endpoint", "ExecResult", "Incus", "Json", "connect", "socket_path"]


class Incus(Instances, Inside, Images, Resources):
    """A connection to one Incus daemon, scoped to one project."""


def connect(
    project: str = "default",
    group: str = "incus-admin",
    endpoint: Endpoint | None = None,
    retries: int = 0,
) -> Incus:
    """Connect, retrying a few times while a freshly started daemon comes up."""
    for attempt in range(retries + 1):
        try:
            return Incus(endpoint, project=project, group=group)
        except IncusError:
            if attempt == retries:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")
