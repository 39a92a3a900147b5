"""The batching policy on its own: pure decisions over a queue and a running batch (no torch, no server)."""

import pytest

from server.scheduling import BatchingPolicy, Plan, QueuedJob, RunningBatch
from server.step_costs import StepCostGate, StepTimes


def jobs(*keys, solo=()):
    return [QueuedJob(f"j{i}", key, created_at=float(i), solo=f"j{i}" in solo) for i, key in enumerate(keys)]


@pytest.mark.parametrize("mode", ["static", "continuous"])
def test_an_idle_engine_starts_the_oldest_jobs_key(mode):
    policy = BatchingPolicy(mode, max_batch=2, batch_wait_s=0.0)
    assert policy.plan(jobs("b", "a", "b", "b"), None, now=10.0) == Plan(("j0", "j2"))


@pytest.mark.parametrize("mode", ["static", "continuous"])
def test_an_idle_engine_waits_for_the_batch_to_fill_from_the_oldest_jobs_arrival(mode):
    policy = BatchingPolicy(mode, max_batch=3, batch_wait_s=0.5)
    assert policy.plan(jobs("a"), None, now=0.2) == Plan(wait_s=pytest.approx(0.3))
    assert policy.plan(jobs("a"), None, now=0.6) == Plan(("j0",))
    assert policy.plan(jobs("a", "a", "a"), None, now=0.1) == Plan(("j0", "j1", "j2"))


def test_static_never_joins_a_running_batch():
    policy = BatchingPolicy("static", max_batch=4)
    assert policy.plan(jobs("a"), RunningBatch("a", 1, joinable=True), now=9.0) == Plan()


def test_continuous_joins_compatible_jobs_up_to_the_free_slots():
    policy = BatchingPolicy("continuous", max_batch=4)
    running = RunningBatch("a", 2, joinable=True)
    assert policy.plan(jobs("a", "a", "a"), running, now=0.0) == Plan(("j0", "j1"))
    assert policy.plan(jobs("a"), RunningBatch("a", 4, joinable=True), now=0.0) == Plan()


def test_continuous_never_lets_a_newer_job_overtake_an_older_one_of_another_key():
    """j0 (key b) waits for the running batch (key a) to drain; the a jobs behind it wait too."""
    policy = BatchingPolicy("continuous", max_batch=4)
    assert policy.plan(jobs("b", "a", "a"), RunningBatch("a", 1, joinable=True), now=0.0) == Plan()
    assert policy.plan(jobs("a", "b", "a"), RunningBatch("a", 1, joinable=True), now=0.0) == Plan(("j0",))
    assert policy.plan(jobs("b", "a", "a"), None, now=1.0) == Plan(("j0",))


def test_unjoinable_batches_and_solo_retries_run_alone():
    policy = BatchingPolicy("continuous", max_batch=4)
    assert policy.plan(jobs("a"), RunningBatch("a", 1, joinable=False), now=0.0) == Plan()
    assert policy.plan(jobs("a", "a", solo={"j0"}), None, now=0.0) == Plan(("j0",))
    assert policy.plan(jobs("a", "a", solo={"j1"}), None, now=1.0) == Plan(("j0",))
    assert policy.plan(jobs("a", "a", solo={"j0"}), RunningBatch("a", 1, joinable=True), now=0.0) == Plan()


@pytest.mark.parametrize(("args", "message"), [
    (("sometimes", 4, 0.0), "batching must be one of static, continuous"),
    (("static", 0, 0.0), "max_batch must be >= 1"),
    (("static", 2, -1.0), "batch_wait must be >= 0"),
])
def test_bad_settings_are_clear_errors(args, message):
    with pytest.raises(ValueError, match=message):
        BatchingPolicy(*args)


def test_capacity_counts_rows_so_a_search_job_of_8_particles_takes_8():
    policy = BatchingPolicy("continuous", max_batch=8, batch_wait_s=0.0)
    queue = [QueuedJob("s1", "a", 0.0, rows=8), QueuedJob("s2", "a", 1.0, rows=8), QueuedJob("p", "a", 2.0)]
    assert policy.plan(queue, None, now=5.0) == Plan(("s1",))  # not 16 rows, and p may not overtake s2
    assert policy.plan(queue[1:], RunningBatch("a", 1, joinable=True), now=5.0) == Plan()
    assert policy.plan(queue[2:], RunningBatch("a", 7, joinable=True), now=5.0) == Plan(("p",))


def test_the_memory_capacity_of_a_key_lowers_its_batches():
    policy = BatchingPolicy("continuous", max_batch=4, batch_wait_s=10.0)
    queue = jobs("a", "a", "a", "b")
    # Two rows fit in memory: the batch is full at two, so nobody waits for more.
    assert policy.plan(queue, None, now=0.0, capacity={"a": 2}) == Plan(("j0", "j1"))
    assert policy.plan(queue[2:], RunningBatch("a", 2, joinable=True), now=0.0, capacity={"a": 2}) == Plan()
    # A job that alone exceeds what the estimate allows still runs, alone, on an idle engine.
    assert policy.plan([QueuedJob("big", "b", 0.0, rows=4)], None, now=0.0, capacity={"b": 1}) == Plan(("big",))


def test_a_step_cost_gate_holds_back_joiners_that_would_slow_the_batch_past_its_bound():
    """Steps learnt at 1 row 0.05 s and 2 rows 0.08 s (the line predicts 3 rows 0.11 s, 4 rows 0.14 s); a bound of
    2.5x one row alone (0.125 s) lets the batch grow to 3 rows, not 4; the job held back stops the jobs behind it."""
    times = StepTimes()
    for rows, seconds in ((1, 0.05), (2, 0.08)):
        times.observe("a", rows, seconds)
    policy = BatchingPolicy("continuous", max_batch=8, step_cost=StepCostGate(times, max_slowdown=2.5))
    running = RunningBatch("a", 1, joinable=True)
    assert policy.plan(jobs("a", "a", "a"), running, now=0.0) == Plan(("j0", "j1"), held_by_cost=True)
    assert policy.plan(jobs("a"), RunningBatch("a", 3, joinable=True), now=0.0) == Plan(held_by_cost=True)
    # Another key has nothing learnt: it is bounded by rows alone, and an idle engine starts full batches.
    assert policy.plan(jobs("b", "b"), RunningBatch("b", 3, joinable=True), now=0.0) == Plan(("j0", "j1"))
    assert policy.plan(jobs("a", "a", "a", "a", "a"), None, now=1.0) == Plan(("j0", "j1", "j2", "j3", "j4"))
