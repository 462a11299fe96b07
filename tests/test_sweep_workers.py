"""Many workers on one study (compress/sweep/run.py, store.py): in a real PostgreSQL, a worker killed with SIGKILL, and
workers that start together."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import compress as C
from compress.sweep import space as S
from compress.serve import store
from compress.sweep import run as sweep

sys.path.insert(0, os.path.dirname(__file__))
import pg  # noqa: E402
from test_sweep import _url, gpt  # noqa: E402,F401  (gpt: test_sweep's tinygpt fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRIALS = 8  # enough for two survivors to share the study and a killed trial to be failed (20 took minutes more)


def _worker(url, log, study="shared"):
    env = {**os.environ, "COMPRESS_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "compress", "sweep", "--model", "tinygpt", "--vary", "layers=1,2,3,4",
           "--vary", "heads=1,2,3,4", "--vary", "ffn=0.25:1:0.25", "--objectives", "bits_per_char,size_mb",
           "--trials", str(TRIALS), "--study", study, "--storage", url]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_many_workers_share_one_study_in_postgresql(tmp_path):
    """Two workers and a third killed with SIGKILL mid-trial, on a real PostgreSQL: TRIALS complete trials, no recipe
    evaluated twice, the killed trial failed after the heartbeat grace and nothing else lost."""
    if pg.binaries() is None and os.environ.get("CI") != "true":
        pytest.skip("PostgreSQL is not installed (make test installs it as root)")
    with pg.server() as url:
        procs = [_worker(url, tmp_path / f"w{i}.log") for i in range(3)]
        victim = f"{socket.gethostname()}:{procs[2].pid}"
        os.environ["COMPRESS_HEARTBEAT_S"] = "1"
        deadline, killed = time.time() + 180, None
        while killed is None and time.time() < deadline:
            time.sleep(0.1)
            try:
                study = sweep.open_study(None, "shared", url)
            except C.CompressError:
                continue  # not created yet
            running = [t for t in study.get_trials(deepcopy=False)
                       if t.state.name == "RUNNING" and t.user_attrs.get("worker") == victim]
            if running:
                procs[2].send_signal(signal.SIGKILL)
                killed = running[0].number
        assert killed is not None, "the third worker never started a trial"
        for p in procs[:2]:
            assert p.wait(timeout=300) == 0, (tmp_path / "w0.log").read_text()[-2000:]
        study = sweep.open_study(None, "shared", url)
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        recipes = [t.user_attrs["recipe"] for t in done]
        assert len(done) == TRIALS and len(set(recipes)) == TRIALS
        assert study.trials[killed].state.name == "FAIL"
        workers = {t.user_attrs["worker"] for t in done}
        assert len(workers - {victim}) == 2  # both survivors worked on it
        last = json.loads((tmp_path / "w0.log").read_text().strip().splitlines()[-1])["summary"]
        assert last["trials"]["complete"] == TRIALS and last["frontier"]


@pytest.mark.heavy  # make test-slow only: the PostgreSQL test above kills a worker mid-trial too, and loses nothing
@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_the_study_resumes(gpt, tmp_path, monkeypatch):  # noqa: F811
    """kill -9 of a SQLite sweep worker mid-trial: the store opens, the finished trials are kept, the running one is
    failed after the heartbeat grace, and resuming the study completes it."""
    from compress.sweep import studies
    monkeypatch.setenv("COMPRESS_HEARTBEAT_S", "1")
    monkeypatch.setattr(store, "_STORAGES", {})
    url = _url(tmp_path)
    env = {**os.environ, "COMPRESS_HEARTBEAT_S": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "compress", "sweep", "--model", "tinygpt", "--vary", "layers=1:4:1",
           "--vary", "ffn=0.5,1.0", "--objectives", "bits_per_char,size_mb", "--study", "k", "--storage", url]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            ts = sweep.open_study(None, "k", url).get_trials(deepcopy=False)
        except C.CompressError:
            ts = []
        if sum(t.state.name == "COMPLETE" for t in ts) >= 2 and any(t.state.name == "RUNNING" for t in ts):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    study = sweep.open_study(None, "k", url)
    deadline = time.time() + 60
    while (stat := studies.status(study))["failed"] == 0 and time.time() < deadline:
        time.sleep(0.5)  # the grace: 3 missed beats of 1 s
    assert stat["complete"] >= 2 and stat["failed"] == 1 and not stat["active"] and stat["target"] == 8
    kept = {t.number: t.values for t in study.trials if t.state.name == "COMPLETE"}
    out = studies.run_plan(gpt, studies.resume_plan(study), "k", url)
    assert out["trials"]["complete"] == 8 and out["trials"]["fail"] == 1
    after = sweep.open_study(None, "k", url)
    assert all(after.trials[n].values == v for n, v in kept.items())
    assert len({t.user_attrs["recipe"] for t in after.trials if t.state.name == "COMPLETE"}) == 8


def test_a_study_another_worker_just_created_is_waited_for_and_a_foreign_one_refused(tmp_path):
    """Workers starting together: one creates the study and writes its space a moment later; another opening it in
    between waits for the space instead of calling it foreign. A study that never gets one is refused."""
    import threading
    import optuna
    space = S.Space("tinygpt", {"layers": (1, 2)}, ("size_mb",))
    url = _url(tmp_path)
    made = optuna.create_study(study_name="race", storage=store.optuna_storage(url), directions=space.directions)
    threading.Timer(0.5, lambda: made.set_user_attr("space", space.to_json())).start()
    assert sweep.space_of(sweep.open_study(space, "race", url)) == json.loads(space.to_json())
    optuna.create_study(study_name="plain", storage=store.optuna_storage(url))
    with pytest.raises(C.CompressError, match="not a compress sweep"):
        sweep.open_study(space, "plain", url)
