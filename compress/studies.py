"""The studies in the results store, as the Trade-offs page sees them: which there are (per model), a sweep started in
the background (its own process, so it outlives the browser tab and a server restart, and any session can open it),
its progress, ETA and live workers, and a stop request. No streamlit here."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import store
from .errors import CompressError
from .store import _alive

ROOT = Path(__file__).resolve().parent.parent
MAX_SWEEPS = int(os.environ.get("COMPRESS_SWEEPS", "1"))  # background sweeps this server runs at once
_SPAWNED: dict = {}  # study name -> (Popen, log path): sweeps this server process started


def names(model: str | None = None, url: str | None = None) -> list[str]:
    """The compress sweeps in the store (of one model), newest first."""
    import optuna
    try:
        found = optuna.study.get_all_study_summaries(store.optuna_storage(url), include_best_trial=False)
    except CompressError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CompressError(f"the results store cannot be read: {' '.join(str(e).split())[:200]}") from None
    out = []
    for s in found:
        space = s.user_attrs.get("space")
        if space and (model is None or json.loads(space)["model"] == model):
            out.append((s.user_attrs.get("created", 0), s.study_name))
    return [n for _, n in sorted(out, reverse=True)]


def plan(bundle, vary: dict, fixed_text: str, objectives, trials: int | None = None, minutes: float | None = None,
         heal_steps: int = 0, constraints=(), grid: bool = False) -> list[str]:
    """The `sweep` command line (without --study / --storage) for these choices, checked against the table and the
    model first: any mistake is one CompressError line, and nothing is started."""
    from .space import Space, check, constraint, fixed, values
    space = Space(bundle.name, {k: values(k, v) for k, v in vary.items()}, tuple(objectives), fixed(fixed_text),
                  tuple(constraint(c) for c in constraints), int(heal_steps))
    check(space, bundle)
    if not grid and trials is None and len(space.vary) > 2:
        trials = 1000 if minutes else None
        if trials is None:
            raise CompressError("more than 2 varied fields: give a number of trials or a time budget")
    argv = ["--model", bundle.name, "--objectives", ",".join(space.objectives), "--heal-steps", str(space.heal_steps)]
    for k, v in vary.items():
        argv += ["--vary", f"{k}={v}"]
    if fixed_text.strip():
        argv += ["--fixed", fixed_text]
    for c in constraints:
        argv += ["--constraint", c]
    argv += (["--trials", str(int(trials))] if trials else []) + (["--minutes", str(minutes)] if minutes else []) + \
        (["--grid"] if grid else [])
    return argv


def spawn(argv: list[str], name: str, url: str | None = None) -> Path:
    """Start `python -m compress sweep ARGV --study NAME --storage URL` as its own process; returns its log file."""
    running = [n for n, (p, _) in _SPAWNED.items() if p.poll() is None]
    if len(running) >= MAX_SWEEPS:  # each sweep is a process computing next to the app: on 2 cores, one at a time
        raise CompressError(f"a sweep started on this server is still running ({running[0][:80]}): stop it or wait; "
                            f"at most {MAX_SWEEPS} at a time (COMPRESS_SWEEPS)")
    url = store.storage_url(url)
    logs = store.data_dir() / "sweeps"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)[:80]}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, "-m", "compress", "sweep", *argv, "--study", name, "--storage", url],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _SPAWNED[name] = (proc, log)
    return log


def started_error(name: str) -> str | None:
    """The last line of a sweep this process started that has already exited with an error, or None."""
    proc, log = _SPAWNED.get(name, (None, None))
    if proc is None or proc.poll() in (None, 0):
        return None
    lines = [x for x in Path(log).read_text(errors="replace").splitlines() if x.strip()]
    return (lines[-1] if lines else f"the sweep process exited with status {proc.returncode}")[:300]


def status(study) -> dict:
    """Progress of a study: complete / target trials, live workers, running trials, ETA in seconds (None: unknown)."""
    ts = study.get_trials(deepcopy=False)
    done = [t for t in ts if t.state.name == "COMPLETE"]
    running = sum(t.state.name == "RUNNING" for t in ts)
    host, workers = socket.gethostname(), 0
    for k, v in study.user_attrs.items():
        if k.startswith("worker:") and not v.get("ended"):
            h, pid = k.split(":")[1:3]
            workers += (h != host and running > 0) or (h == host and _alive(int(pid)))
    target = int(study.user_attrs.get("trials") or 0)
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    left = max(0, target - len(done))
    eta = None
    if workers and secs and left:
        eta = round(sum(secs) / len(secs) * left / max(1, workers))
    return {"complete": len(done), "target": target, "running": running, "workers": workers,
            "failed": sum(t.state.name == "FAIL" for t in ts), "skipped": sum(t.state.name == "PRUNED" for t in ts),
            "eta_s": eta, "stopping": bool(study.user_attrs.get("stop")), "active": workers > 0}


def note_worker(study, ended: bool = False) -> None:
    """A worker of this study, by host and pid: started now, or ended now (status() counts the live ones)."""
    key = f"worker:{socket.gethostname()}:{os.getpid()}"
    study.set_user_attr(key, {"started": study.user_attrs.get(key, {}).get("started", time.time()),
                              "ended": time.time() if ended else None})
