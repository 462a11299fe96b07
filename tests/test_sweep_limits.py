"""Sweeps on the server's queue are bounded and stoppable: a trial's healing yields to waiting jobs and sees Stop and
Cancel, sessions and the server have a most of live sweeps and each a time limit (refused in one line), and only the
browser that started a sweep (its key) or `sweep --stop NAME` can stop it."""
import threading
import traceback

import pytest

import compress as C
from compress.serve import cancel, jobs
from compress.sweep import space as S, studies, run as sweep
from compress.__main__ import main


@pytest.fixture
def q(monkeypatch, tmp_path):
    """The server's queue and results store, this test's own."""
    monkeypatch.setenv("COMPRESS_STORAGE", f"sqlite:///{tmp_path / 's.sqlite'}")
    queue = jobs.Queue(1)
    monkeypatch.setattr(jobs, "_QUEUE", queue)
    monkeypatch.setattr(studies, "_JOBS", {})
    for k in studies.SWEEP_LIMITS:
        monkeypatch.delenv(k, raising=False)
    yield queue
    cancel.HOOK = None


def _healing_plan(bundle, steps=400):
    return studies.plan(bundle, {"layers": "1:2:1"}, "", ["size_mb"], heal_steps=steps)


def _pause_in_healing(at=3, where="heal"):
    """A hook that pauses the job just after its at-th checkpoint inside heal() (where=None: anywhere): (paused, go)."""
    paused, go, n = threading.Event(), threading.Event(), [0]

    def hook(job):
        if where is None or any(f.name == where for f in traceback.extract_stack()):
            n[0] += 1
            if n[0] == at:
                paused.set()
                go.wait(60)  # a guard: released by the test
    cancel.HOOK = hook
    return paused, go


def _stop_paused(q, job, name, key, paused, go) -> list:
    """Stop the paused sweep as its browser would, let it go on: [(state, skipped)] of its study's trials."""
    assert paused.wait(300)
    before = job.checks
    assert studies.stop(name, key)
    go.set()
    assert q.wait(job, 120) and job.state == "cancelled" and job.checks - before <= 1  # at its next checkpoint
    return [(t.state.name, t.user_attrs.get("skipped")) for t in sweep.open_study(None, name).get_trials()]


def test_an_apply_waits_for_one_healing_step_of_a_trial_and_a_cancel_ends_the_trial(q, tiny_gpt, one_thread):
    yields = []
    real = q.yield_
    q.yield_ = lambda job: yields.append(job.kind) or real(job)  # counts the sweep's turns
    paused, go = _pause_in_healing()
    job = studies.start(tiny_gpt, _healing_plan(tiny_gpt), "heals", owner="tab-1", key="k1")
    assert paused.wait(300)
    cancel.HOOK = None
    at_submit = len(yields)
    apply = q.submit("apply", lambda j: len(yields), owner="tab-2")
    go.set()
    assert q.wait(apply, 120) and apply.result - at_submit == 1  # one healing step, not the trial's 400
    assert not job.ended.is_set()
    paused, go = _pause_in_healing(at=1)  # still healing: paused there again, and stopped by its browser
    assert _stop_paused(q, job, "heals", "k1", paused, go) == [("PRUNED", "stopped")]
    assert sweep.open_study(None, "heals").user_attrs["stop"]  # its other workers stop too


@pytest.mark.parametrize("at, where, trials", [(1, None, []), (3, "objective", [("PRUNED", "stopped")])])  # before
def test_a_stop_in_an_unhealed_trial_ends_it_at_the_next_checkpoint(q, tiny_gpt, one_thread, at, where, trials):
    paused, go = _pause_in_healing(at, where=where)  # any trial; in the first (its own checkpoints, not sizing's)
    job = studies.start(tiny_gpt, studies.plan(tiny_gpt, {"layers": "1:2:1"}, "", ["size_mb"]), "plain", "t", "k")
    assert _stop_paused(q, job, "plain", "k", paused, go) == trials


def test_the_cli_stop_ends_a_trial_within_one_healing_step(q, tiny_gpt, one_thread, tmp_path, monkeypatch):
    timed = S.Space(tiny_gpt.name, {"layers": (1, 2)}, ("size_mb", "speedup"), heal_steps=5, batch=2, seq=16)
    url, steps = f"sqlite:///{tmp_path / 's.sqlite'}", []
    monkeypatch.setattr(sweep, "STOP_POLL_S", 0.0)  # the store's flag read at every step

    def between():  # after each healing step (5 a trial) and each trial: in the second trial, a stop (another process)
        steps.append(1)
        if len(steps) == 8:
            assert main(["sweep", "--stop", "cli", "--storage", url]) == 0
    plan = {"space": timed, "trials": None, "grid": None, "minutes": None, "cli": []}
    out = studies.run_plan(tiny_gpt, plan, "cli", url, between=between)
    assert len(steps) == 8  # not one healing step more
    assert out["trials"] == {"complete": 1, "pruned": 1} and out["remeasured"] == 0  # the first trial's timing is not
    #                                                                                 redone after the stop


def test_live_sweeps_are_bounded_per_session_and_per_server_in_one_line(q, tiny_gpt, monkeypatch):
    gate = threading.Event()
    q.submit("apply", lambda j: gate.wait(60))  # holds the queue: the sweeps below wait, live
    plan = studies.plan(tiny_gpt, {"layers": "1:2:1"}, "", ["size_mb"])
    try:
        studies.start(tiny_gpt, plan, "a1", owner="a", client="10.0.0.7")
        with pytest.raises(C.CompressError, match="this session .* already runs 1 sweep") as e:
            studies.start(tiny_gpt, plan, "a2", owner="a")
        assert "\n" not in str(e.value)
        with pytest.raises(C.CompressError, match="another tab of this browser"):  # a new tab: a new session id
            studies.start(tiny_gpt, plan, "a2", owner="a-new-tab", client="10.0.0.7")
        studies.start(tiny_gpt, plan, "b1", owner="b", client="10.0.0.8")
        studies.start(tiny_gpt, plan, "c1", owner="c")
        with pytest.raises(C.CompressError, match="this server already runs 3 sweeps"):
            studies.start(tiny_gpt, plan, "d1", owner="d")
        monkeypatch.setenv("COMPRESS_SWEEPS_PER_SERVER", "4")
        studies.start(tiny_gpt, plan, "d1", owner="d")
        with pytest.raises(C.CompressError, match="already runs on this server"):
            studies.start(tiny_gpt, plan, "d1", owner="e")
        timed = studies.plan(tiny_gpt, {"layers": "1:2:1"}, "", ["size_mb"], minutes=121)
        with pytest.raises(C.CompressError, match="at most 120 min"):
            studies.start(tiny_gpt, timed, "e1", owner="e")
        monkeypatch.setenv("COMPRESS_SWEEP_MINUTES", "nope")
        with pytest.raises(C.CompressError, match="COMPRESS_SWEEP_MINUTES must be a number"):
            studies.start(tiny_gpt, timed, "e1", owner="e")
    finally:
        for j in q.jobs():
            q.cancel(j)
        gate.set()
    assert all(q.wait(j, 60) for j in q.jobs())


def test_only_the_key_of_the_starting_browser_stops_a_sweep(q, tiny_gpt):
    gate = threading.Event()
    q.submit("apply", lambda j: gate.wait(60))
    job = studies.start(tiny_gpt, studies.plan(tiny_gpt, {"layers": "1:2:1"}, "", ["size_mb"]), "mine", "a", "k-a")
    try:
        for other in (None, "", "k-b", "k-a "):
            assert not studies.may_stop("mine", other) and not studies.stop("mine", other)
        assert not job.cancel.is_set() and studies.may_stop("mine", "k-a")
        assert studies.stop("mine", "k-a") and job.cancel.is_set()
    finally:
        gate.set()
    assert q.wait(job, 60) and job.state == "cancelled" and not studies.may_stop("mine", "k-a")


def test_ended_sweeps_are_forgotten_beyond_keep_and_live_ones_never(q, tiny_gpt, monkeypatch):
    monkeypatch.setattr(studies, "KEEP", 2)
    gate = threading.Event()
    q.submit("apply", lambda j: gate.wait(60))
    plan = studies.plan(tiny_gpt, {"layers": "1:2:1"}, "", ["size_mb"])
    first = studies.start(tiny_gpt, plan, "s0", owner="o0")
    ended = []
    for i in range(1, 5):
        j = studies.start(tiny_gpt, plan, f"s{i}", owner=f"o{i}")
        q.cancel(j)  # ends at once (it had not started)
        ended.append(j)
    studies.start(tiny_gpt, plan, "s5", owner="o5")
    assert len(studies._JOBS) <= 2 + 2 and studies.job_of("s0") is first  # live: kept
    q.cancel(first)
    gate.set()
