"""nrg-serve in a thread of the calling process, for tools that drive it over HTTP from the same process
(``benchmarks.bench_vs_diffusers``, ``benchmarks.batching_bench``, ``tools.playground_screenshot``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guidance.demo import DEFAULT_MODEL_DIR


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving_app(app, port: int, *, grace_s: float = 5.0, start_timeout_s: float = 60.0,
                http=None) -> Iterator[str]:
    """``app`` under uvicorn on ``port`` of the loopback in a thread of this process; yields its base URL.
    ``http``: the uvicorn protocol class (default: the bounded reads ``nrg serve`` runs with)."""
    import uvicorn

    from server.read_timeouts import bounded_protocol

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=grace_s, http=http or bounded_protocol()))
    thread = threading.Thread(target=server.run, name="nrg-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(grace_s + 55)


@contextmanager
def serve_in_process(model_dir: Path, *, max_batch: int, batch_wait_ms: float, max_queue: int,
                     device: str | None, dtype: str, data_dir: Path,
                     batching: str = "continuous", judges: dict[str, str] | None = None,
                     max_step_slowdown: float | None = None) -> Iterator[tuple[str, str]]:
    """nrg-serve on a free loopback port in a thread of this process; yields (base URL, model name).
    ``judges``: name -> spec of the held-out judges (default: none)."""
    from server.app import create_app
    from server.config import DEMO_MODEL_NAME, ServerConfig, load_models
    from server.schema import Limits

    embedded = Path(model_dir).resolve() == Path(DEFAULT_MODEL_DIR).resolve()
    name = DEMO_MODEL_NAME if embedded else Path(model_dir).name
    config = ServerConfig(models={} if embedded else {name: Path(model_dir)}, port=free_port(), data_dir=data_dir,
                          max_batch=max_batch, batch_wait_ms=batch_wait_ms, max_queue=max_queue, device=device,
                          dtype=dtype, batching=batching, judges=dict(judges or {}), limits=Limits(),
                          max_step_slowdown=max_step_slowdown)
    with serving_app(create_app(config, load_models(config)), config.port) as url:
        yield url, name
