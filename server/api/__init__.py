"""The HTTP routes, one router per resource: ``videos`` (the jobs), ``models``, ``ops`` (health,
readiness, metrics). Each handler reaches the process's :class:`server.runtime.ServerRuntime` through
the ``Runtime`` dependency (``server.api.dependencies``).

A process mounts only the routers its role serves (:func:`routers_for`), so a worker has no
``/v1/videos`` route at all rather than routes removed after the fact.
"""

from __future__ import annotations

from fastapi import APIRouter

from server.api import models, ops, videos
from server.roles import serves_jobs


def routers_for(role: str) -> tuple[APIRouter, ...]:
    """The routers a ``role`` process serves, in the order ``/openapi.json`` lists their paths."""
    jobs = (videos.router,) if serves_jobs(role) else ()
    return (*jobs, models.router, ops.router)
