"""The job store's contract, run against both backends: SQLite (embedded) and a real PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from server.store import Store, StoreUnavailable, WebhookState
from server.store.sqlite import JobStore
from tests.server.conftest import HANG_S, until
from tests.server.job_specs import SPEC, spec
from tests.server.postgres import pg_server, pg_url  # noqa: F401 - fixtures


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """``open()`` -> a new store object over the same database (another process's connection)."""
    opened: list[Store] = []
    if request.param == "sqlite":
        def open_store() -> Store:
            opened.append(JobStore(tmp_path / "data"))
            return opened[-1]
    else:
        from server.store.postgres import PostgresJobStore

        url = request.getfixturevalue("pg_url")

        def open_store() -> Store:
            opened.append(PostgresJobStore(url, tmp_path / "data"))
            return opened[-1]
    open_store.kind = request.param
    yield open_store
    for store in opened:
        store.close()


def test_create_claim_heartbeat_finish_requeue(backend):
    store = backend()
    a, b, c = (store.create(spec(prompt=f"p{i}")) for i in range(3))
    other = store.create(spec(model="other"))
    assert [j.id for j in store.queued(["m"])] == [a.id, b.id, c.id]
    assert store.count_queued(["other"]) == 1 and store.count_queued() == 4
    got = store.claim([b.id, a.id], "w1", 30)
    assert [j.id for j in got] == [a.id, b.id]  # oldest first
    assert all(j.status == "in_progress" and j.worker == "w1" and j.attempts == 1 for j in got)
    assert store.claim([a.id], "w2", 30) == []  # taken
    assert store.heartbeat("w1", [a.id, b.id], 30) == set()
    assert store.finish(a.id, "completed", {"rewards": {"vq": 1.0}})
    assert not store.finish(a.id, "failed", error=("x", "y"))  # already finished
    done = store.get(a.id)
    assert done.status == "completed" and done.progress == 100 and done.result == {"rewards": {"vq": 1.0}}
    store.finish(c.id, "cancelled", error=("cancelled", "by the client"))  # queued -> cancelled: never claimable
    assert store.claim([c.id], "w1", 30) == []
    store.requeue(b.id)
    assert store.get(b.id).status == "queued" and store.get(b.id).worker is None
    # The worker must stop what was cancelled or finished elsewhere; a re-queued job is not lost.
    assert store.heartbeat("w1", [a.id, b.id], 30) == {a.id}
    again = store.claim([b.id], "w1", 30)
    assert again[0].attempts == 2 and store.queued(["m"]) == [] and store.get(other.id).status == "queued"


def test_a_job_with_an_unguided_twin_keeps_its_request_and_its_comparison(backend):
    from guidance.nrg import GuidanceSpec

    twin_spec = spec(guidance=GuidanceSpec({"vq": 1.0}, 2.0, (0.2, 0.8), "relative"), compare_unguided=True)
    change = {"objective": "vq", "judge": "truth", "weight": 1.0, "reward_change": 0.25, "judge_change": -0.01,
              "hacked": True}
    result = {"rewards": {"vq": 1.25}, "cost_vs_unguided": 1.8, "denoiser_passes": 4,
              "unguided": {"rewards": {"vq": 1.0}, "judge_scores": {"truth": {"vq": 0.5}}, "changes": [change],
                           "error": None},
              "reward_hacking": [change]}
    store = backend()
    job = store.create(twin_spec)
    store.claim([job.id], "w1", 30)
    assert store.finish(job.id, "completed", result, worker="w1")
    again = backend().get(job.id)  # another connection: what the database holds
    assert again.spec == twin_spec and again.spec.rows == 2 and again.result == result


def test_lease_expiry_requeues_and_heartbeats_keep_leases(backend):
    store = backend()
    kept, dropped = store.create(SPEC), store.create(SPEC)
    # Claimed one after the other, so kept's first lease ends no later than dropped's: whenever
    # dropped's has run out, so has kept's, unless the heartbeat renewed it. The renewal is long, and
    # the test waits for the expiry itself, never for a time: however slow the machine between two
    # statements, the outcome is the same.
    store.claim([kept.id], "w1", 0.2)
    store.claim([dropped.id], "w1", 0.2)
    assert store.heartbeat("w1", [kept.id], HANG_S) == set()
    assert until(store.requeue_expired, "dropped's lease expired", poll_s=0.02) == [dropped.id]
    assert store.get(dropped.id).status == "queued" and store.get(kept.id).status == "in_progress"
    retaken = store.claim([dropped.id], "w2", 30)[0]
    assert retaken.worker == "w2" and retaken.attempts == 2
    # w1 comes back and heartbeats the job w2 took over: it must stop running it, and cannot record it.
    assert store.heartbeat("w1", [kept.id, dropped.id], 30) == {dropped.id}
    assert not store.finish(dropped.id, "completed", {"by": "w1"}, worker="w1")
    assert store.finish(dropped.id, "completed", {"by": "w2"}, worker="w2")
    assert store.get(dropped.id).result == {"by": "w2"} and not store.finish(dropped.id, "completed", worker="w2")


def test_recover_takes_own_and_expired_rows_never_a_live_workers(backend):
    store = backend()
    mine, live, expired = store.create(SPEC), store.create(SPEC), store.create(SPEC)
    store.claim([mine.id], "w1", HANG_S)
    store.claim([live.id], "w2", HANG_S)  # live however long the statements below take
    store.claim([expired.id], "w3", 0.01)
    time.sleep(0.05)  # a sleep never ends early: the 0.01 s lease has run out after it
    recovered = set(backend().recover("w1"))  # a restarted w1
    if backend.kind == "sqlite":  # one process serves a SQLite file: whatever ran before is gone
        assert recovered == {mine.id, live.id, expired.id}
    else:
        assert recovered == {mine.id, expired.id} and store.get(live.id).status == "in_progress"


def test_release_hands_back_only_the_workers_own_jobs(backend):
    store = backend()
    mine, theirs, done = store.create(SPEC), store.create(SPEC), store.create(SPEC)
    store.claim([mine.id, done.id], "w1", 30)
    store.claim([theirs.id], "w2", 30)
    store.finish(done.id, "completed", worker="w1")
    assert store.release("w1") == [mine.id]
    assert (store.get(mine.id).status, store.get(mine.id).worker) == ("queued", None)
    assert store.get(theirs.id).worker == "w2" and store.get(done.id).status == "completed"
    # A queued job is nobody's: a run that finished it after the hand-back may still record it.
    assert store.finish(mine.id, "completed", worker="w1") and store.release("w1") == []


def _race(stores: list[Store], claim_some) -> dict[str, list[str]]:
    """Two workers, each on its own store connection, calling ``claim_some(worker, store)`` (the ids it
    got, empty when nothing is left) at the same moment, until both get nothing; the ids each got."""
    got: dict[str, list[str]] = {"w0": [], "w1": []}
    start = threading.Barrier(2)

    def worker_loop(worker: str, store: Store) -> None:
        start.wait()
        while claimed := claim_some(worker, store):
            got[worker] += claimed

    threads = [threading.Thread(target=worker_loop, args=(f"w{i}", s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_S)
    return got


def test_two_claimers_never_get_the_same_job(backend):
    stores = [backend(), backend()]
    ids = [stores[0].create(SPEC).id for _ in range(40)]

    def claim_queued(worker: str, store: Store) -> list[str]:
        queued = store.queued(["m"])
        return [j.id for j in store.claim([j.id for j in queued[:4]], worker, 30)] if queued else []

    got = _race(stores, claim_queued)
    assert not set(got["w0"]) & set(got["w1"])
    assert sorted(got["w0"] + got["w1"]) == sorted(ids)
    assert {stores[0].get(i).attempts for i in ids} == {1}


def test_a_finished_job_owes_its_webhook_until_an_attempt_delivers_it(backend):
    store = backend()
    hooked, plain = store.create(spec(webhook_url="https://hooks.example.com/a")), store.create(SPEC)
    assert (store.get(hooked.id).webhook.status, store.get(plain.id).webhook) == ("waiting", None)
    assert store.claim_webhooks("w1", 10, 30) == []  # nothing is owed while the job runs
    assert store.finish(hooked.id, "failed", error=("x", "y")) and store.finish(plain.id, "completed")
    (claimed,) = store.claim_webhooks("w1", 10, HANG_S)
    assert claimed.id == hooked.id and claimed.status == "failed"
    assert (claimed.webhook.status, claimed.webhook.attempts) == ("pending", 1)
    assert store.claim_webhooks("w2", 10, 30) == []  # claimed: nobody else attempts it meanwhile
    assert store.record_webhook(hooked.id, "w1", 1, "pending", "HTTP 503", retry_in_s=0.0)
    assert store.get(hooked.id).webhook == WebhookState("pending", 1, "HTTP 503")
    again = until(lambda: store.claim_webhooks("w2", 10, HANG_S), "the retry is due", poll_s=0.01)
    assert [j.webhook.attempts for j in again] == [2]
    assert not store.record_webhook(hooked.id, "w1", 1, "delivered")  # w1's claim is over
    assert store.record_webhook(hooked.id, "w2", 2, "delivered")
    assert store.get(hooked.id).webhook == WebhookState("delivered", 2, None)
    assert store.claim_webhooks("w1", 10, 30) == [] and store.get(plain.id).webhook is None


def test_a_lapsed_webhook_claim_is_taken_over_and_recovery_takes_back_its_own(backend):
    store = backend()
    lapsing, kept = store.create(spec(webhook_url="https://a.example/")), store.create(spec(webhook_url="https://b.example/"))
    store.finish(lapsing.id, "completed")
    store.claim_webhooks("w1", 1, 0.01)  # the process that claimed it dies mid-attempt
    taken = until(lambda: store.claim_webhooks("w2", 1, HANG_S), "the lapsed claim is taken over", poll_s=0.01)
    assert [(j.id, j.webhook.attempts) for j in taken] == [(lapsing.id, 2)]
    assert not store.record_webhook(lapsing.id, "w1", 1, "failed", "too late")
    store.finish(kept.id, "completed")
    assert [j.id for j in store.claim_webhooks("w3", 1, HANG_S)] == [kept.id]
    recovered = backend().recover_webhooks("w3")  # w3 restarted: its claim is due again at once
    due = {j.id for j in store.claim_webhooks("w4", 5, HANG_S)}
    if backend.kind == "sqlite":  # one process serves a SQLite file: whatever claimed before is gone
        assert recovered == 2 and due == {kept.id, lapsing.id}
    else:  # w2 is alive, and its claim still runs
        assert recovered == 1 and due == {kept.id}


def test_two_deliverers_never_claim_the_same_webhook(backend):
    stores = [backend(), backend()]
    ids = [stores[0].create(spec(webhook_url="https://hooks.example.com/")).id for _ in range(40)]
    for job_id in ids:
        stores[0].finish(job_id, "completed")
    got = _race(stores, lambda worker, store: [j.id for j in store.claim_webhooks(worker, 4, HANG_S)])
    assert not set(got["w0"]) & set(got["w1"])
    assert sorted(got["w0"] + got["w1"]) == sorted(ids)


def test_jobs_keep_their_owner_and_a_listing_can_be_one_owners(backend):
    store = backend()
    mine = [store.create(spec(prompt=f"p{i}"), owner="a" * 64) for i in range(3)]
    theirs = store.create(SPEC, owner="b" * 64)
    unowned = store.create(SPEC)
    assert store.get(mine[0].id).owner == "a" * 64 and store.get(unowned.id).owner is None
    page, more = store.list(None, 2, "asc", owner="a" * 64)
    assert [j.id for j in page] == [mine[0].id, mine[1].id] and more
    page, more = store.list(mine[1].id, 2, "asc", owner="a" * 64)
    assert [j.id for j in page] == [mine[2].id] and not more
    with pytest.raises(KeyError):  # another owner's id is no anchor
        store.list(theirs.id, 2, "asc", owner="a" * 64)
    assert [j.id for j in store.list(None, 10, "desc")[0]] == [unowned.id, theirs.id, *[j.id for j in mine[::-1]]]


def test_migrations_are_versioned_and_idempotent(backend):
    first = backend()
    job = first.create(SPEC)
    assert first.applied_migrations  # a new database: every migration
    second = backend()
    assert second.applied_migrations == [] and second.get(job.id).spec == SPEC


def test_sqlite_store_of_the_original_schema_is_migrated(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "jobs.sqlite3") as db:  # as the server before schema_version wrote it
        db.executescript("""CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
            status TEXT NOT NULL, params TEXT NOT NULL, progress INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
            started_at REAL, completed_at REAL, error_code TEXT, error_message TEXT, result TEXT,
            attempts INTEGER NOT NULL DEFAULT 0);""")
        # No kinds, no webhooks stored then.
        old_record = {k: v for k, v in SPEC.to_json().items() if k not in ("checkpoint_kind", "webhook_url")}
        db.execute("INSERT INTO jobs (id, status, params, created_at) VALUES ('video_old', 'queued', ?, 1.0)",
                   (json.dumps(old_record),))
    store = JobStore(data)
    assert store.applied_migrations == [1, 2, 3, 4, 5]
    assert [j.id for j in store.queued(["m"])] == ["video_old"] and store.get("video_old").owner is None
    assert store.get("video_old").spec == SPEC
    assert store.claim(["video_old"], "local", 30)[0].status == "in_progress"
    assert store.finish("video_old", "completed") and store.get("video_old").webhook is None
    assert store.claim_webhooks("local", 10, 30) == []
    store.close()
    assert JobStore(data).applied_migrations == []


def test_postgres_store_before_owners_is_migrated(pg_url, tmp_path):  # noqa: F811
    from server.store.postgres import PostgresJobStore

    store = PostgresJobStore(pg_url, tmp_path / "data")
    job = store.create(SPEC, owner="a" * 64)
    with store.connect() as conn:  # as the server before owners: schema version 1
        conn.execute("DROP INDEX jobs_owner")
        conn.execute("ALTER TABLE jobs DROP COLUMN owner")
        conn.execute("DELETE FROM schema_version WHERE version > 1")
    store.close()
    store = PostgresJobStore(pg_url, tmp_path / "data")
    assert store.applied_migrations == [2, 3, 4] and store.get(job.id).owner is None
    store.close()


def test_postgres_store_before_webhooks_is_migrated(pg_url, tmp_path):  # noqa: F811
    from server.store.postgres import PostgresJobStore

    store = PostgresJobStore(pg_url, tmp_path / "data")
    job = store.create(SPEC)
    with store.connect() as conn:  # as the server before webhooks: schema version 2
        conn.execute("DROP INDEX jobs_webhook_due")
        conn.execute("ALTER TABLE jobs DROP COLUMN webhook_status, DROP COLUMN webhook_attempts, "
                     "DROP COLUMN webhook_due_at, DROP COLUMN webhook_worker, DROP COLUMN webhook_error")
        conn.execute("DELETE FROM schema_version WHERE version > 2")
    store.close()
    store = PostgresJobStore(pg_url, tmp_path / "data")
    assert store.applied_migrations == [3, 4] and store.get(job.id).webhook is None
    assert store.finish(job.id, "completed") and store.claim_webhooks("w1", 10, 30) == []
    store.close()


def test_postgres_outage_is_store_unavailable_then_reconnects(pg_server, pg_url, tmp_path):  # noqa: F811
    from server.store.postgres import PostgresJobStore

    store = PostgresJobStore(pg_url, tmp_path / "data")
    store.retry_delays_s = (0.0,)
    job = store.create(SPEC)
    pg_server.stop()
    try:
        with pytest.raises(StoreUnavailable, match="job store postgresql://"):
            store.create(SPEC)
        assert "store writes are failing" in store.problem and not store.corrupt
    finally:
        pg_server.start()
    assert store.get(job.id).status == "queued"  # a new connection, no restart of the process
    store.create(SPEC)
    assert store.problem is None
    store.close()


@pytest.mark.parametrize("url, message", [
    ("mysql://localhost/db", "--store must be a postgresql://"),
    ("postgresql://host:notaport/db", "--store: not a valid PostgreSQL URL"),
])
def test_bad_store_url_names_the_flag(url, message):
    from server.store import open_store

    with pytest.raises(ValueError, match=message):
        open_store(url, "unused")


def test_a_jobs_input_image_is_stored_with_it_read_by_another_process_and_deleted_with_it(backend):
    from server.job_spec import INPUT_REFERENCE_KEY, InputReference

    image = bytes(range(256)) * 64  # binary, with NUL bytes
    ref = InputReference(INPUT_REFERENCE_KEY, "ab" * 32, "image/png", 64, 48, len(image))
    store = backend()
    job = store.create(spec(input_reference=ref), inputs={INPUT_REFERENCE_KEY: image})
    plain = store.create(SPEC)
    other = backend()  # another worker's connection, or the server after a restart
    assert other.get(job.id).spec.input_reference == ref
    assert other.read_input(job.id, INPUT_REFERENCE_KEY) == image
    assert other.read_input(plain.id, INPUT_REFERENCE_KEY) is None and other.get(plain.id).spec.input_reference is None
    other.delete(job.id)
    assert store.get(job.id) is None and store.read_input(job.id, INPUT_REFERENCE_KEY) is None
    assert store.get(plain.id) is not None


def test_a_jobs_input_video_is_stored_with_it_read_by_another_process_and_deleted_with_it(backend):
    from server.job_spec import INPUT_REFERENCE_KEY, InputReference

    video = b"\0\0\0\x20ftypisom" + bytes(range(256)) * 64  # binary, with NUL bytes
    ref = InputReference(INPUT_REFERENCE_KEY, "cd" * 32, "video/mp4", 64, 64, len(video), frames=33, fps=24.0)
    store = backend()
    job = store.create(spec(input_reference=ref, denoise_strength=0.6), inputs={INPUT_REFERENCE_KEY: video})
    other = backend()  # another worker's connection, or the server after a restart
    got = other.get(job.id).spec
    assert got.input_reference == ref and got.denoise_strength == 0.6 and got.start_step == 2
    assert other.read_input(job.id, INPUT_REFERENCE_KEY) == video
    other.delete(job.id)
    assert store.get(job.id) is None and store.read_input(job.id, INPUT_REFERENCE_KEY) is None
