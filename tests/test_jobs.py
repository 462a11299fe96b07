"""The job queue (one per server process) and the results store's job log."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import compress as C
from compress.serve import jobs
from compress.serve.store import Store
from conftest import ROOT


def _blocker(gate: threading.Event, out: list, name: str):
    def fn(job):
        gate.wait(30)
        out.append(name)
        return name
    return fn


def test_one_job_runs_at_a_time_in_order_and_a_waiting_one_can_be_cancelled(tmp_path):
    store, gate, out = Store(tmp_path / "s.sqlite"), threading.Event(), []
    q = jobs.Queue(1, store.record)
    a, b, c = (q.submit("apply", _blocker(gate, out, n), owner="s1", label=n) for n in "abc")
    time.sleep(0.2)
    assert (q.position(a), q.position(b), q.position(c)) == (0, 1, 2) and a.state == "running"
    q.cancel(c)
    assert c.state == "cancelled" and q.position(b) == 1
    gate.set()
    assert q.wait(b, 10) and out == ["a", "b"] and b.result == "b" and not q.busy()
    states = {r["label"]: r["state"] for r in store.recent()}
    assert states == {"a": "done", "b": "done", "c": "cancelled"}


def test_a_long_job_lets_waiting_short_jobs_run_between_its_steps(tmp_path):
    q, order = jobs.Queue(1), []
    started = threading.Event()

    def heal(job):
        started.set()
        for step in range(40):
            time.sleep(0.02)
            order.append(f"step {step}")
            q.yield_(job)
        return "healed"
    long_job = q.submit("heal", heal, owner="s1")
    started.wait(5)
    short = q.submit("apply", lambda job: order.append("apply") or "measured", owner="s2")
    assert q.wait(short, 10) and short.result == "measured"
    assert not long_job.ended.is_set()  # it waited one step, not the whole run
    assert q.wait(long_job, 10) and long_job.result == "healed" and order.index("apply") < 39


def test_two_long_jobs_take_turns_and_a_third_waits_for_one_to_end():
    q, order = jobs.Queue(1, long=2), []

    def long(name, steps):
        def fn(job):
            for step in range(steps):
                order.append(name)
                time.sleep(0.01)
                q.yield_(job)
            return name
        return fn
    heal = q.submit("heal", long("heal", 30), owner="s1")
    sweep = q.submit("sweep", long("sweep", 10), owner="s2")
    third = q.submit("heal", long("third", 5), owner="s3")
    assert q.wait(sweep, 20) and q.wait(heal, 20) and q.wait(third, 20)
    first_sweep = order.index("sweep")
    assert first_sweep <= 2, order  # the sweep did not wait for the whole healing: they alternate
    last_sweep = len(order) - 1 - order[::-1].index("sweep")
    assert order.index("third") > last_sweep  # the third long job started when the sweep ended (two at most)
    assert order[:first_sweep + 4].count("heal") <= 3


def test_failures_are_failures_with_their_message_and_the_worker_survives(tmp_path):
    class Panic(BaseException):  # what a Rust tokenizer's panic looks like from Python
        pass

    def panics(job):
        raise Panic("called `Result::unwrap()` on an `Err` value\nat src/lib.rs")
    q = jobs.Queue(1)
    bad = q.submit("heal", lambda job: (_ for _ in ()).throw(C.CompressError("no text to heal on")))
    worse = q.submit("apply", panics)
    good = q.submit("apply", lambda job: 42)
    assert q.wait(good, 10) and good.result == 42
    assert (bad.state, bad.error) == ("failed", "no text to heal on")
    assert worse.state == "failed" and worse.error == "an unexpected error (Panic); it is in the server's log"
    # (its text, which may name server paths, goes to the log only: the visitor and the store get this line)


def test_a_closed_tabs_long_job_is_cancelled_after_the_grace_period(monkeypatch):
    monkeypatch.setattr(jobs, "GRACE_S", 0.3)
    q = jobs.Queue(1)

    def heal(job):
        for _ in range(500):
            if job.cancel.is_set():
                return None  # healing keeps its best state and stops
            time.sleep(0.02)
            q.yield_(job)
        return "ran to the end"
    kept, gone = q.submit("heal", heal, owner="open"), None
    for _ in range(10):
        q.heartbeat("open")
        time.sleep(0.05)
    q.cancel(kept)
    gone = q.submit("heal", heal, owner="closed")  # its owner never beats again
    assert q.wait(gone, 10) and gone.state == "cancelled" and gone.result is None


def test_the_log_keeps_when_each_job_started_and_an_old_store_gains_the_column(tmp_path):
    import sqlite3
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as c:  # a store written before the started column
        c.execute("CREATE TABLE jobs (key TEXT PRIMARY KEY, kind TEXT, owner TEXT, label TEXT, state TEXT, "
                  "error TEXT, created REAL, updated REAL, host TEXT, pid INTEGER)")
        c.execute("INSERT INTO jobs VALUES ('h:1:1', 'apply', 's', 'old', 'done', '', 1.0, 2.0, 'h', 1)")
    q, gate, out = jobs.Queue(1, Store(db).record), threading.Event(), []
    a, b = (q.submit("apply", _blocker(gate, out, n), label=n) for n in "ab")
    time.sleep(0.3)
    gate.set()
    assert q.wait(b, 10) and a.started is not None and b.started >= a.started
    with sqlite3.connect(db) as c:
        rows = dict(c.execute("SELECT label, started - created FROM jobs").fetchall())
    assert rows["old"] is None and rows["a"] >= 0 and rows["b"] >= 0.2  # b waited in line behind a


def test_a_killed_server_leaves_its_jobs_marked_interrupted_and_the_rest_kept(tmp_path):
    db = tmp_path / "s.sqlite"
    code = ("import sys, time, threading; sys.path.insert(0, %r)\n"
            "from compress.serve import jobs\nfrom compress.serve.store import Store\n"
            "q = jobs.Queue(1, Store(%r).record)\n"
            "q.wait(q.submit('apply', lambda j: 'ok', label='finished'))\n"
            "q.submit('heal', lambda j: threading.Event().wait(), label='healing')\n"
            "print('ready', flush=True); time.sleep(60)") % (str(ROOT), str(db))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    store = Store(db)  # the restarted server
    assert store.interrupt_stale() == 1
    assert {r["label"]: r["state"] for r in store.recent()} == {"finished": "done", "healing": "interrupted"}


@pytest.mark.parametrize("content", [b"this is not a database" * 100, None])
def test_a_store_that_cannot_be_opened_is_one_line(tmp_path, content):
    path = tmp_path / "s.sqlite"
    if content is None:
        path = tmp_path / "a-file" / "s.sqlite"
        (tmp_path / "a-file").write_text("a file where the data folder should be")
    else:
        path.write_bytes(content)
    with pytest.raises(C.CompressError, match="cannot be opened") as e:
        Store(path)
    assert "\n" not in str(e.value)


def test_the_app_wires_the_queue_to_the_results_store_once(tmp_path, monkeypatch):
    """The queue logs plain rows to what the app gives it; ui/jobs.py gives the store's record, and the first wiring
    marks the jobs a killed server left running as interrupted."""
    from ui import jobs as page_jobs
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path))
    Store(tmp_path / "results.sqlite").record({"id": 10**6, "kind": "heal", "owner": "gone", "label": "lost",
                                                "state": "running", "error": "", "created": 1.0, "started": 1.0})
    with __import__("sqlite3").connect(tmp_path / "results.sqlite") as c:  # as a server process that is gone wrote it
        c.execute("UPDATE jobs SET pid = 999999999")
    q, rows = jobs.Queue(1), []
    assert q.log is None  # the library's queue opens no store
    monkeypatch.setattr(C, "job_queue", lambda: q)
    assert page_jobs.queue() is q and q.log is not None
    q.wait(q.submit("apply", lambda job: 1, owner="me", label="wired"))
    got = {r["label"]: r["state"] for r in C.default_store().recent()}
    assert got == {"lost": "interrupted", "wired": "done"}
    q.log = rows.append  # any callable taking a plain dict row
    q.wait(q.submit("apply", lambda job: 2, owner="me", label="plain"))
    assert [r["state"] for r in rows] == ["queued", "running", "done"] and rows[-1]["label"] == "plain"


@pytest.mark.slow
def test_the_job_log_works_on_postgresql_and_an_old_log_there_gains_the_column():
    """The same job log on a real PostgreSQL (tests/pg.py): a log of before the started column gains it, the queue's
    rows are written and updated, a gone process's running job is marked interrupted, the newest come first."""
    import pg
    import sqlalchemy as sa
    if pg.binaries() is None and os.environ.get("CI") != "true":
        pytest.skip("PostgreSQL is not installed (make test installs it as root)")
    with pg.server() as url:
        engine = sa.create_engine(url)
        with engine.begin() as db:  # as a store of before wrote it (its REAL, 8 bytes in SQLite, is PostgreSQL's FLOAT)
            db.execute(sa.text("CREATE TABLE jobs (key TEXT PRIMARY KEY, kind TEXT, owner TEXT, label TEXT, state TEXT, "
                               "error TEXT, created FLOAT, updated FLOAT, host TEXT, pid INTEGER)"))
            db.execute(sa.text("INSERT INTO jobs VALUES (:k, 'heal', 's', 'lost', 'running', '', 1.0, 2.0, :h, "
                               "999999999)"), {"k": "gone:1", "h": __import__("socket").gethostname()})
        store = Store(url)
        q, gate, out = jobs.Queue(1, store.record), threading.Event(), []
        a, b = (q.submit("apply", _blocker(gate, out, n), owner="me", label=n) for n in "ab")
        gate.set()
        assert q.wait(b, 10) and not store.last_error
        assert store.interrupt_stale() == 1
        assert [(r["label"], r["state"]) for r in store.recent()] == [("b", "done"), ("a", "done"), ("lost", "interrupted")]
        assert [r["label"] for r in store.recent(1, owner="me")] == ["b"]
        with engine.connect() as db:
            started = dict(db.execute(sa.text("SELECT label, started FROM jobs")).all())
        engine.dispose()
    assert started["lost"] is None and started["b"] >= started["a"] > 0
