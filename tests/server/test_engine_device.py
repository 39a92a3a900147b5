"""The engine's worker thread owns its device: it makes it the thread's current CUDA device (Triton
launches there), and after an out-of-memory failure it empties the cache once the failure is let go."""

import threading
import weakref
from types import SimpleNamespace

import torch

from server.engine import Engine
from server.metrics import Metrics


def _engine(device: str) -> Engine:
    model = SimpleNamespace(family=SimpleNamespace(device=torch.device(device)))
    return Engine({"m": model}, store=None, bus=None, metrics=Metrics())


def test_the_worker_thread_sets_its_cuda_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append((torch.device(d), threading.current_thread())))
    engine = _engine("cuda:1")
    monkeypatch.setattr(engine, "_serve", lambda: None)
    worker = threading.Thread(target=engine._loop)
    worker.start()
    worker.join()
    assert calls == [(torch.device("cuda:1"), worker)]
    assert engine.failure is None


def test_a_cpu_worker_sets_no_cuda_device(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    engine = _engine("cpu")
    monkeypatch.setattr(engine, "_serve", lambda: None)
    engine._loop()
    assert calls == []


def test_the_cache_is_emptied_after_the_failed_batch_is_released(monkeypatch):
    """The exception of an OOM holds the failed step's frames, and through them its tensors: emptying
    the cache while handling it would free nothing."""
    store = SimpleNamespace(requeue=lambda job_id: None, count_queued=lambda *args: 0)
    engine = Engine({}, store=store, bus=None, metrics=Metrics())
    graph = []

    class Activations:
        pass

    def step():
        activations = Activations()  # a local of the failing frame, as the step's tensors are
        graph.append(weakref.ref(activations))
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    alive_when_emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive_when_emptied.append(graph[0]() is not None))
    monkeypatch.setattr(engine.executor, "step", step)
    monkeypatch.setattr(engine.executor, "abandon", lambda: [SimpleNamespace(id="a"), SimpleNamespace(id="b")])
    engine.executor.batch = SimpleNamespace(objectives=())
    engine._step()  # the batch of two fails: both re-queued to run alone
    assert alive_when_emptied == []
    engine._stopping = True
    engine._tick()
    assert alive_when_emptied == [False]
