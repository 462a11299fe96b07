"""The queue's own bounds: its maps (jobs, heartbeats) stay bounded however many sessions come and go, a job that
waits or runs is never forgotten (its tab's reaping needs it), and a job with a time limit is cancelled at it."""
import threading

import pytest

import compress.techniques.sensitivity as T
import compress.techniques.spectrum as S
from compress.serve import cancel, jobs


def test_heartbeats_of_many_sessions_are_trimmed_but_a_busy_sessions_is_kept():
    q, gate = jobs.Queue(1, keep=5), threading.Event()
    busy = q.submit("heal", lambda job: gate.wait(30), owner="busy")  # its owner beats once, first
    for i in range(100):
        q.heartbeat(f"visitor-{i}")
    assert len(q._beats) <= 5 + 1 and "busy" in q._beats and "visitor-99" in q._beats
    gate.set()
    assert q.wait(busy, 30)
    q.heartbeat("one more")
    assert len(q._beats) <= 5 and "busy" not in q._beats  # idle now: the oldest beat goes first


def test_ended_jobs_are_trimmed_and_a_live_one_never_is():
    q, gate = jobs.Queue(2, keep=3), threading.Event()  # two slots: the applies run beside a long job
    long = q.submit("heal", lambda job: gate.wait(30), owner="s")
    done = [q.submit("apply", lambda job: 1, owner="s") for _ in range(10)]
    gate.set()
    assert all(q.wait(j, 30) for j in done)
    q.submit("apply", lambda job: 1, owner="s")
    assert len(q._jobs) <= 3 + 1 and done[0] not in q.jobs()
    gate2 = threading.Event()
    live = q.submit("heal", lambda job: gate2.wait(30), owner="s")
    for _ in range(10):
        assert q.wait(q.submit("apply", lambda job: 1, owner="s"), 30)
    assert live in q.jobs() and not live.ended.is_set()  # oldest, but still running: kept
    gate2.set()
    assert q.wait(live, 30) and long.state == "done"


def test_a_job_past_its_time_limit_is_cancelled_at_its_next_checkpoint_and_says_why():
    q = jobs.Queue(1)

    def forever(job):
        while True:
            cancel.checkpoint()
            job.cancel.wait(0.01)
    job = q.submit("sweep", forever, limit_s=0.05)
    assert q.wait(job, 30), "the time limit never ended it"  # a guard against a hang
    assert job.state == "cancelled" and job.error == "stopped at its time limit of 0.000833333 min"
    quick = q.submit("sweep", lambda job: "done", limit_s=0.05)
    assert q.wait(quick, 30) and quick.state == "done" and not quick.error


def test_a_long_job_cancelled_while_it_waits_for_its_turn_ends_without_waiting(tmp_path):
    """A healing that gave its slot to an Apply is cancelled while that Apply runs: it ends then, not after."""
    q, in_apply, release, order = jobs.Queue(1), threading.Event(), threading.Event(), []
    submitted = threading.Event()

    def heal(job):
        for step in range(1000):
            order.append(step)
            if step == 1:
                submitted.wait(30)  # the Apply is in line: the next yield_ gives it the slot
            q.yield_(job)

    def apply(job):
        in_apply.set()
        release.wait(30)
        order.append("apply")
    h = q.submit("heal", heal)
    a = q.submit("apply", apply)
    submitted.set()
    assert in_apply.wait(30)
    q.cancel(h)
    assert q.wait(h, 30) and h.state == "cancelled" and "apply" not in order  # ended while the Apply still ran
    release.set()
    assert q.wait(a, 30) and a.state == "done"


@pytest.mark.parametrize("kind", ["spectra", "sensitivity"])
def test_an_apply_waits_for_one_layer_of_a_spectra_or_sensitivity_job(kind, tiny_bert, one_thread):
    """Spectra and sensitivity of a big model take minutes (a 1.1B Llama: ~67 s a layer's SVD here): they are long
    kinds that let waiting jobs go first between layers (cancel.turn), so an Apply waits for one layer, not all."""
    q, layers, paused, go = jobs.Queue(1), [], threading.Event(), threading.Event()
    spec = S.compute_spectra(tiny_bert.model, tiny_bert.adapter)  # (not the cache: another test's model may share the
    #  fixture's hash)
    work = {"spectra": lambda j: S.compute_spectra(tiny_bert.model, tiny_bert.adapter),
            "sensitivity": lambda j: T.layer_sensitivity(tiny_bert, spec)}[kind]  # (not C's: it is the cached one)
    real = cancel.turn

    def turn():  # counts the layers begun; pauses at the second, as if at work, while an Apply is submitted
        layers.append(1)
        if len(layers) == 2:
            paused.set()
            go.wait(60)  # a guard
        real()
    old = S.turn, T.turn
    S.turn = T.turn = turn
    try:
        long = q.submit(kind, work, "tab-1")
        for _ in range(240):  # (a guard of 2 min)
            if paused.wait(0.5) or long.ended.is_set():
                break
        assert paused.is_set(), (long.state, long.error)  # (if it ended before its second layer: why)
        apply = q.submit("apply", lambda j: len(layers), "tab-2")
        go.set()
        assert q.wait(apply, 120) and q.wait(long, 300) and long.state == "done"
    finally:
        S.turn, T.turn = old
    n = len(tiny_bert.adapter.factorizable(tiny_bert.model))
    assert apply.result == 2 < n  # it ran at the paused job's next turn, not after its last layer
