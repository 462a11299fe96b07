"""The studies in the results store, as the Trade-offs page sees them: which there are (per model), a sweep planned
from the page's choices and run on the server's job queue (it outlives the browser tab; any session can open it; after
a restart it can be resumed), its progress, ETA and live workers. Sweeps are bounded: per session, per server and in
minutes (SWEEP_LIMITS); only the browser that started one (it holds its key) or `sweep --stop NAME` can stop it.
No streamlit here."""
import hmac
import json
import socket

from ..serve import store
from ..errors import CompressError
from ..serve.settings import MAX_MINUTES, number
from ..serve.store import alive
from .run import request_stop, run

_JOBS: dict = {}  # study name -> (this server's queue job running it, the key that may stop it, its client)
KEEP = 50  # ended sweeps' jobs remembered (the page says how one ended); live ones are never forgotten
SWEEP_LIMITS = {"COMPRESS_SWEEPS_PER_SESSION": 1, "COMPRESS_SWEEPS_PER_SERVER": 3, "COMPRESS_SWEEP_MINUTES": 120}


def limits() -> dict:
    """SWEEP_LIMITS, each from the environment when set there (a number > 0)."""
    return {k: float(number(k, default, most=MAX_MINUTES)) for k, default in SWEEP_LIMITS.items()}


def names(model: str | None = None, url: str | None = None, content_hash: str | None = None) -> list[str]:
    """The compress sweeps in the store (of one model: its name and, given, its weights' hash: two visitors' uploads
    named model.zip are two models), newest first."""
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
        if space and (model is None or json.loads(space)["model"] == model) and \
                (content_hash is None or s.user_attrs.get("content_hash") in (None, content_hash)):
            out.append((s.user_attrs.get("created", 0), s.study_name))
    return [n for _, n in sorted(out, reverse=True)]


def plan(bundle, vary: dict, fixed_text: str, objectives, trials: int | None = None, minutes: float | None = None,
         heal_steps: int = 0, constraints=(), grid: bool = False) -> dict:
    """A sweep for these choices, checked against the table and the model first (any mistake is one CompressError
    line, and nothing starts): {"space", "trials", "grid", "minutes", "cli": the command line that runs the same}."""
    from .space import Space, check, constraint, fixed, values
    space = Space(bundle.name, {k: values(k, v) for k, v in vary.items()}, tuple(objectives), fixed(fixed_text),
                  tuple(constraint(c) for c in constraints), int(heal_steps))
    check(space, bundle)
    if not grid and trials is None and len(space.vary) > 2:
        if not minutes:
            raise CompressError("more than 2 varied fields: give a number of trials or a time budget")
        trials = 1000
    cli = ["python", "-m", "compress", "sweep", "--model", bundle.name, "--objectives", ",".join(space.objectives)]
    cli += [x for k, v in vary.items() for x in ("--vary", f"{k}={v}")]
    cli += (["--fixed", fixed_text] if fixed_text.strip() else []) + [x for c in constraints for x in ("--constraint", c)]
    cli += (["--trials", str(int(trials))] if trials else []) + (["--minutes", f"{minutes:g}"] if minutes else [])
    cli += (["--grid"] if grid else []) + (["--heal-steps", str(space.heal_steps)] if space.heal_steps else [])
    return {"space": space, "trials": trials, "grid": grid, "minutes": minutes, "cli": cli}


def start(bundle, the_plan: dict, name: str, owner: str = "", key: str = "", client: str = ""):
    """Run a planned sweep on the server's job queue (a long job: Apply and the other short jobs of every session
    run between its trials and its healing steps). It belongs to its study in the store: a closed tab does not cancel
    it; `key` (a secret the starting browser keeps) may stop it (stop()). Over a limit (limits()) it is refused in one
    line; a sweep past COMPRESS_SWEEP_MINUTES is cancelled. `client`: who asks beyond this session (the browser's
    address): COMPRESS_SWEEPS_PER_SESSION counts the live sweeps of the session or of the client, so a new tab or a
    reload does not start another. Returns the queue's job."""
    from ..serve.jobs import queue
    q, lim = queue(), limits()
    minutes = lim["COMPRESS_SWEEP_MINUTES"]
    if (the_plan["minutes"] or 0) > minutes:
        raise CompressError(f"a sweep on this server runs at most {minutes:g} min (COMPRESS_SWEEP_MINUTES), "
                            f"not {the_plan['minutes']:g}")
    live = [j for j in q.jobs() if j.kind == "sweep" and not j.ended.is_set()]
    if any(j is _JOBS.get(name, (None,))[0] for j in live):
        raise CompressError(f"the sweep {name[:100]} already runs on this server")
    clients = {id(j): c for j, _, c in _JOBS.values()}
    mine = sum(j.owner == owner or bool(client) and clients.get(id(j)) == client for j in live)
    if mine >= lim["COMPRESS_SWEEPS_PER_SESSION"]:
        raise CompressError(f"this session (or another tab of this browser) already runs {mine} sweep(s), the most "
                            "one may (COMPRESS_SWEEPS_PER_SESSION): stop it or wait for it to end")
    if len(live) >= lim["COMPRESS_SWEEPS_PER_SERVER"]:
        raise CompressError(f"this server already runs {len(live)} sweeps, the most it allows "
                            "(COMPRESS_SWEEPS_PER_SERVER): try again when one ends")

    def fn(job):
        out = run_plan(bundle, the_plan, name, between=lambda: q.yield_(job), stop=job.cancel)
        return None if job.cancel.is_set() else out  # cancelled (Stop, its time limit): a "cancelled" job
    job = q.submit("sweep", fn, owner, f"sweep {name}", limit_s=minutes * 60)
    _JOBS[name] = (job, key, client)
    ended = [n for n, (j, *_) in _JOBS.items() if j.ended.is_set()]
    for n in ended[:max(0, len(_JOBS) - KEEP)]:
        del _JOBS[n]
    return job


def may_stop(name: str, key: str | None) -> bool:
    """Is `key` the one the browser that started this server's running sweep `name` keeps?"""
    job, mine, _ = _JOBS.get(name, (None, "", ""))
    return job is not None and not job.ended.is_set() and bool(key) and bool(mine) and \
        hmac.compare_digest(str(key), mine)


def stop(name: str, key: str | None) -> bool:
    """Stop the sweep `name` if `key` may (may_stop): every worker of the study stops, this server's job at its next
    checkpoint (its running trial ends unmeasured). False, and nothing done, when it may not."""
    if not may_stop(name, key):
        return False
    from ..serve.jobs import queue
    queue().cancel(_JOBS[name][0])
    try:
        request_stop(name)  # its other workers (CLI) too; a study not yet created has none
    except CompressError:
        pass
    return True


def run_plan(bundle, the_plan: dict, name: str, url: str | None = None, **kw) -> dict:
    return run(bundle, the_plan["space"], name, url, the_plan["trials"], the_plan["grid"] or None, the_plan["minutes"],
               **kw)


def resume_plan(study) -> dict:
    """The plan of a study, to run it on toward its target (after a restart or a Stop)."""
    from .space import from_json
    space = from_json(study.user_attrs["space"])
    target = int(study.user_attrs.get("trials") or 0) or None
    return {"space": space, "trials": target, "grid": None, "minutes": None, "cli": []}


def job_of(name: str):
    """The queue job of this server running (or waiting to run) the sweep `name`, or None."""
    return _JOBS.get(name, (None,))[0]


def status(study) -> dict:
    """Progress of a study: complete / target trials, live workers, running trials, ETA in seconds (None: unknown)."""
    import optuna
    optuna.storages.fail_stale_trials(study)  # a killed worker's (or a restarted server's) running trial: failed
    ts = study.get_trials(deepcopy=False)
    done = [t for t in ts if t.state.name == "COMPLETE"]
    running = sum(t.state.name == "RUNNING" for t in ts)
    host, workers = socket.gethostname(), 0
    for k, v in study.user_attrs.items():
        if k.startswith("worker:") and not v.get("ended"):
            h, pid = k.split(":")[1:3]
            workers += (h != host and running > 0) or (h == host and alive(int(pid)))
    target = int(study.user_attrs.get("trials") or 0)
    secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    left = max(0, target - len(done))
    eta = None
    if workers and secs and left:
        eta = round(sum(secs) / len(secs) * left / max(1, workers))
    return {"complete": len(done), "target": target, "running": running, "workers": workers,
            "failed": sum(t.state.name == "FAIL" for t in ts), "skipped": sum(t.state.name == "PRUNED" for t in ts),
            "eta_s": eta, "stopping": bool(study.user_attrs.get("stop")), "active": workers > 0}
