"""Encodes finished videos (mp4 + webp thumbnail) on a thread of their own, then records the outcome.

Encoding a clip takes as long as several denoising steps of the demo model; on the device thread it
would leave the device idle while the batch's other samples wait. The executor hands each finished
sample here (frames already on the host) and goes on stepping.

A storage fault while writing is not the job's fault: the writer hands the exception to ``on_fault``
(the engine, which re-queues interrupted work and backs off) and drops the files, so the job reruns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from guidance.video_io import HostFrames, frames_to_uint8, write_video
from server.store import ACTIVE, COMPLETED, FAILED, Job, Store, is_storage_fault

log = logging.getLogger("nrg.writer")

Finish = Callable[[Job, str, "dict[str, Any] | None", "tuple[str, str] | None"], bool]


@dataclass
class Output:
    """A finished sample to encode: its frames ([F, H, W, 3] uint8, on their way to the host) and the
    result fields known before encoding."""

    job: Job
    frames: HostFrames
    result: dict[str, Any]


def write_thumbnail(frame: np.ndarray, path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(frame).save(tmp, format="WEBP", quality=85)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a partial file after a full disk


class OutputWriter:
    def __init__(self, store: Store, finish: Finish, on_fault: Callable[[BaseException], None]) -> None:
        self.store = store
        self.finish = finish
        self.on_fault = on_fault
        self._queue: queue.Queue[Output | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="nrg-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, output: Output) -> None:
        with self._lock:
            self._pending.add(output.job.id)
        self._queue.put(output)

    @property
    def pending(self) -> set[str]:
        """Jobs handed over and not yet recorded (they are in progress, held by the writer)."""
        with self._lock:
            return set(self._pending)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted is recorded; True if it was within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Write what was submitted, then end the thread; True if it ended within ``timeout``."""
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while (output := self._queue.get()) is not None:
            try:
                self._write(output)
            except Exception as exc:  # noqa: BLE001 - a storage fault goes to the engine; nothing kills the writer
                log.warning("recording %s failed: %s", output.job.id, exc)
                self.on_fault(exc)
            finally:
                with self._lock:
                    self._pending.discard(output.job.id)

    def _write(self, output: Output) -> None:
        job = output.job
        started = time.perf_counter()
        try:
            frames = frames_to_uint8(output.frames.wait())
            write_video(frames, self.store.video_path(job.id), fps=job.spec.fps)
            write_thumbnail(frames[0], self.store.thumbnail_path(job.id))
        except Exception as exc:  # noqa: BLE001 - one job's encode failure is that job's alone
            self.store.remove_outputs(job.id)
            if is_storage_fault(exc):
                raise
            log.exception("job %s: writing its video failed", job.id)
            self.finish(job, FAILED, None, ("encode_error", f"{type(exc).__name__}: {exc}"))
            return
        result = {**output.result, "encode_time_s": round(time.perf_counter() - started, 4)}
        try:
            completed = self.finish(job, COMPLETED, result, None)
        except Exception:
            self.store.remove_outputs(job.id)
            raise
        if not completed:
            self._drop_outputs(job.id)

    def _drop_outputs(self, job_id: str) -> None:
        """The outcome was not recorded: remove the files of a job cancelled or deleted meanwhile, but not
        of one another worker holds or completed (its lease here ran out): the files are that run's."""
        current = self.store.get(job_id)
        if current is None or current.status not in (*ACTIVE, COMPLETED):
            self.store.remove_outputs(job_id)
