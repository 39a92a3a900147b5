"""What one ``nrg serve`` process does (``--role``): ``all`` (HTTP and the engine: the single-process
server), ``api`` (HTTP only, over a shared store) or ``worker`` (the engine, with the ops routes and
``/v1/models``; its jobs are submitted to and read from the API processes).

An API process hosts no engine, but it still loads the models it serves: their metadata (defaults,
shape rules, reward objectives, checkpoints) validate requests, and the demo model is tiny. A job
it accepts waits in the shared store for a worker that hosts its model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from server.config import ServerConfig

if TYPE_CHECKING:  # torch-free at run time: the command line lists ROLES without loading models
    from server.hosted_model import HostedModel

#: The values of ``--role``.
ROLES: tuple[str, ...] = ("all", "api", "worker")


def serves_jobs(role: str) -> bool:
    """Whether a ``role`` process takes and shows jobs over HTTP (``/v1/videos``, its events): a worker
    does not, its jobs are submitted to and read from the API processes."""
    return role != "worker"


def runs_engine(role: str) -> bool:
    """Whether a ``role`` process runs the engine: an API process does not (:class:`FrontEndOnly`)."""
    return role != "api"


class FrontEndOnly:
    """Stands in for the engine in an ``api`` process: nothing runs here, so nothing to wake or stop;
    a DELETE reaches the running job through the store (the worker's heartbeat sees it cancelled)."""

    failure: str | None = None
    alive = True
    finished = True
    busy = False

    def __init__(self, models: Mapping[str, HostedModel]) -> None:
        self.models = dict(models)

    def start(self) -> None:
        pass

    def stop(self, timeout: float = ServerConfig.shutdown_grace_s) -> bool:
        return True

    def wake(self) -> None:
        pass

    def cancel(self, job_id: str) -> None:
        pass
