"""A damaged, truncated, empty or missing job store is refused at start with one line naming the file
and what to do; a store that cannot serve while running makes /ready (and, if corrupt, /health) fail."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from server.cli import main
from server.store import StoreCorrupt, StoreError
from server.store.sqlite import JobStore
from tests.server.conftest import running_server, until
from tests.server.faults import READ, inject
from tests.server.job_specs import spec

PAGE = 4096


def _filled_store(data_dir):
    """A store with enough jobs to span many pages, closed (WAL checkpointed), and one video on disk."""
    store = JobStore(data_dir)
    for i in range(40):
        store.create(spec(prompt=f"{i} " + "x" * 1500))
    store.close()
    (data_dir / "videos" / "video_0.mp4").write_bytes(b"an earlier job's video")
    return data_dir / "jobs.sqlite3"


def _serve_error(data_dir, capsys, *extra) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--data-dir", str(data_dir), *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nrg: error: "), err
    return err


def test_an_overwritten_page_is_refused(tmp_path, capsys):
    db = _filled_store(tmp_path)
    with open(db, "r+b") as f:
        f.seek(10 * PAGE)  # a leaf page of the jobs table: the file still opens, listing fails
        f.write(b"\xa5" * PAGE)
    with pytest.raises(StoreCorrupt, match="integrity check"):
        JobStore(tmp_path)
    err = _serve_error(tmp_path, capsys)
    assert str(db) in err and "(move it aside or restore a backup)" in err


def test_a_truncated_file_is_refused(tmp_path, capsys):
    db = _filled_store(tmp_path)
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    with pytest.raises(StoreCorrupt):
        JobStore(tmp_path)
    err = _serve_error(tmp_path, capsys)
    assert str(db) in err and "(move it aside or restore a backup)" in err


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_missing_or_empty_store_beside_videos_is_refused(tmp_path, capsys, damage):
    db = _filled_store(tmp_path)
    db.unlink()
    if damage == "empty":
        db.write_bytes(b"")
    with pytest.raises(StoreError, match="--allow-empty-store"):
        JobStore(tmp_path)
    err = _serve_error(tmp_path, capsys)
    assert str(db) in err and "1 .mp4 file(s)" in err
    JobStore(tmp_path, allow_empty=True).close()  # the documented way out


def test_a_fresh_data_dir_starts(tmp_path):
    JobStore(tmp_path / "new").close()
    JobStore(tmp_path / "new").close()  # and reopens: no jobs, no videos, nothing to protect


def test_ready_and_health_fail_when_the_store_cannot_serve(hosted_wan, tmp_path):
    with running_server(tmp_path, {"tiny-wan": hosted_wan}) as (url, app):
        with httpx.Client(base_url=url, timeout=60) as client:
            assert client.get("/ready").status_code == 200
            inject(app.state.runtime.store, READ, error=sqlite3.DatabaseError("database disk image is malformed"))
            listed = client.get("/v1/videos")
            assert listed.status_code == 503 and listed.json()["error"]["code"] == "store_unavailable"
            assert "malformed" in listed.json()["error"]["message"]
            ready = client.get("/ready")
            assert ready.status_code == 503 and "malformed" in ready.json()["reason"]
            health = client.get("/health")
            assert health.status_code == 503 and "malformed" in health.json()["reason"]
            until(lambda: app.state.runtime.engine.failure is not None, "the worker stopped")
            assert "malformed" in app.state.runtime.engine.failure  # the worker stopped too, and says why
