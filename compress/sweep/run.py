"""Sweeps: an Optuna study over a Space (space.py) in the results store (store.py). Each trial is one compress() and
the same size / quality / latency measurement as Apply; its values are the objectives in the order given and its
user attributes hold every metric by name, the recipe, the machine, the versions, the workload and the wall time.
Many workers (processes, machines) run the same study name on the same storage: `trials` is the study's total, a
recipe is never evaluated twice (a twin of a done or running trial is skipped), the running trials of a killed
worker fail after a heartbeat grace and are retried once, and the others wait for them instead of stopping short.
Frontier points are re-measured once (latency is noisy and favours lucky trials) before the summary calls them best."""
import dataclasses
import itertools
import json
import os
import platform
import socket
import time

from ..measure import core as measure
from ..measure.measurement import Side
from ..measure.metrics import has_shape
from ..table import pipeline
from ..serve import store
from ..serve.cancel import Cancelled
from ..errors import CompressError
from .frontier import summary, timed_values
from .space import Space, check
from ..table.steps import refusal

MAX_TRIALS = 5000  # trials one sweep may ask for
STOP_POLL_S = 2.0  # a trial that heals reads the store's stop flag (`sweep --stop`) at most this often


def _optuna():
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def measure_trial(original, recipe, space: Space, original_bytes: int | None = None, progress=None,
                  base: Side | None = None) -> dict:
    """Apply's numbers for one recipe (measurement.measure), flat: the metrics table's values (size, params, quality,
    and latency of both, timed interleaved in this trial when an objective or constraint needs it), every quality key,
    quality before healing. base: the original's numbers, measured once per sweep. progress(dict) after every healing
    step: the queue's turn for waiting jobs and a Stop's check (it may raise Cancelled)."""
    t0 = time.perf_counter()
    comp = pipeline.compress(original, recipe, progress=progress)
    if base is None:
        base = Side(**pipeline.numbers(original), quality={})
    if original_bytes:
        base = dataclasses.replace(base, size_bytes=original_bytes)
    raw = pipeline.compress(original, dataclasses.replace(recipe, heal_steps=0, heal_corpus="", runtime="eager")) \
        if recipe.heal_steps else None  # the seed's question: quality before and after healing
    m = pipeline.measure(original, comp, space.workload, space.batch, space.seq, 7, unhealed=raw, base=base,
                         timed=space.timed, own=space.own, gpu=False)
    out = {**m.values(), **m.compressed.quality, **{k: comp.applied[k] for k in ("factorized",) if k in comp.applied}}
    if raw is not None:
        out.update({f"unhealed_{k}": v for k, v in m.unhealed.quality.items()})
    if space.timed:
        out.update(timed_values(m.lat))
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    return out


def context(space: Space) -> dict:
    """Where and how a trial was measured (user attributes of every trial)."""
    import torch
    import transformers
    cpu = measure.cpu_info()
    return {"machine": json.dumps(cpu), "cpu": str(cpu.get("cpu", platform.processor()))[:120],
            "threads": torch.get_num_threads(), "versions": json.dumps(
                {"torch": torch.__version__, "transformers": transformers.__version__,
                 "optuna": _optuna().__version__, "python": platform.python_version()}),
            "workload": f"{space.workload} {space.batch}x{space.seq}" if has_shape(space.workload) else
            space.workload,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


def open_study(space: Space | None, name: str, url: str | None = None):
    """The study `name` in the store: created for this space, or loaded (space None: it must exist). A study made for
    another model or another sweep is refused in one line; nothing stored is changed."""
    optuna = _optuna()
    storage = store.optuna_storage(url)
    where = store.shown(store.storage_url(url))
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        if space is None:
            raise CompressError(f"no study {name!r} in {where}") from None
        study = optuna.create_study(study_name=name, storage=storage, directions=space.directions,
                                    load_if_exists=True)
        study.set_user_attr("space", space.to_json())
        study.set_user_attr("created", time.time())
    except Exception as e:  # noqa: BLE001 - the store answered with an error: one line
        raise CompressError(f"study {name!r} in {where} cannot be read: {' '.join(str(e).split())[:200]}") from None
    for _ in range(50):  # another worker may have created it a moment ago and not yet written its space
        if "space" in study.user_attrs or study.trials:
            break
        time.sleep(0.1)
        study = optuna.load_study(study_name=name, storage=storage)
    if "space" not in study.user_attrs:
        raise CompressError(f"study {name!r} in {where} is not a compress sweep")
    if space is not None and study.user_attrs["space"] != space.to_json():
        theirs = json.loads(study.user_attrs["space"])
        if theirs["model"] != space.model:
            raise CompressError(f"study {name!r} is a study of {theirs['model']}, not {space.model}: "
                                f"give another --study name")
        raise CompressError(f"study {name!r} was made for another sweep (fields, objectives or workload): "
                            f"give another --study name")
    return study


def space_of(study) -> dict:
    return json.loads(study.user_attrs["space"])


def request_stop(name: str, url: str | None = None) -> None:
    """Ask every worker of a study to stop after its current trial."""
    open_study(None, name, url).set_user_attr("stop", time.time())


def _sampler(space, grid, trials, seed):
    optuna = _optuna()
    if grid:
        return optuna.samplers.GridSampler({k: list(v) for k, v in space.vary.items()}, seed=seed)
    if len(space.objectives) == 1:  # constraints: set on each trial (Trial.set_constraint), read by the sampler
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 4)))
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, trials // 4)))


def run(bundle, space: Space, study_name: str, url: str | None = None, trials: int | None = None,
        grid: bool | None = None, minutes: float | None = None, seed: int | None = None, log=None,
        between=None, stop=None) -> dict:
    """Work on the study until it has its trials (or the grid is covered), the time is up, or a stop is requested
    (in the store: request_stop; or the `stop` threading.Event). log(dict) is called with one JSON-able line per trial
    this worker ran; between() after each trial and each healing step (the app's queue runs waiting jobs there). A
    stop requested during a trial (or a Cancel of its job) ends that trial unmeasured, as skipped, and nothing is
    re-measured after. Returns the summary."""
    optuna = _optuna()
    check(space, bundle)
    grid = trials is None and len(space.vary) <= 2 if grid is None else grid
    if not grid and trials is None:
        raise CompressError("more than 2 varied fields: give --trials N (or --grid for every combination)")
    if trials is not None and not 1 <= trials <= MAX_TRIALS:
        raise CompressError(f"--trials must be from 1 to {MAX_TRIALS}, got {trials}")
    total = min(trials or space.grid_size(), space.grid_size())  # (more trials than combinations: each once)
    study = open_study(space, study_name, url)
    made_on = study.user_attrs.get("content_hash")
    if made_on and bundle.content_hash and made_on != bundle.content_hash:
        raise CompressError(f"study {study_name!r} was made on another model named {bundle.name} (other weights): "
                            "give another --study name")
    if not made_on and bundle.content_hash:
        study.set_user_attr("content_hash", bundle.content_hash)
    study.sampler = _sampler(space, grid, total, seed)
    study.set_user_attr("trials", total)
    study.set_user_attr("grid", bool(grid))  # (the report's command runs the same)
    study.set_user_attr("stop", 0)
    where, ctx = context(space), {"ran": 0, "store_s": 0.0, "stopped": False, "polled": 0.0}
    base = Side(**pipeline.numbers(bundle), quality={})  # the original's numbers, once
    deadline = time.time() + minutes * 60 if minutes else None
    State = optuna.trial.TrialState

    def skip(trial, why):
        trial.set_user_attr("skipped", why)
        raise optuna.TrialPruned(why)

    def stopping() -> bool:  # the Event, or the store's flag read at most every STOP_POLL_S
        if stop is not None and stop.is_set() or ctx["stopped"]:
            return True
        if time.monotonic() - ctx["polled"] >= STOP_POLL_S:
            ctx["polled"], ctx["stopped"] = time.monotonic(), bool(study.user_attrs.get("stop"))
        return ctx["stopped"]

    def tick(_progress=None):  # after each healing step of a trial: waiting jobs run, a stop ends the trial
        if between is not None:
            between()
        if stopping():
            raise Cancelled("stopped")

    def objective(trial):
        if stop is not None and stop.is_set():
            study.stop()
            skip(trial, "stopped")
        params = {k: trial.suggest_categorical(k, list(v)) for k, v in space.vary.items()}
        try:
            recipe = space.recipe(params)
        except CompressError as e:
            skip(trial, f"impossible: {e}")
        if why := refusal(bundle, recipe):
            skip(trial, f"refused: {why}")
        key = recipe.to_json()
        trial.set_user_attr("recipe", key)  # first, so a twin started at the same time sees it
        trial.set_user_attr("worker", where["worker"])
        ts = study.get_trials(deepcopy=False, states=(State.COMPLETE, State.RUNNING))
        me = next(t for t in ts if t.number == trial.number)
        mine = (me.datetime_start, me.number)  # trials that started before this one go first
        busy = [t for t in ts if t.number != me.number and (t.state == State.COMPLETE or
                                                            (t.datetime_start, t.number) < mine)]
        if twin := next((t for t in busy if t.user_attrs.get("recipe") == key), None):
            skip(trial, f"same recipe as trial {twin.number}")
        if not grid and len(busy) >= total:
            skip(trial, "the study has its trials")
        ctx["ran"] += 1
        t0 = time.perf_counter()
        try:
            m = measure_trial(bundle, recipe, space, progress=tick, base=base)
        except Cancelled:  # never Optuna's (it would leave the trial running): skipped, and the study stops
            ctx["stopped"] = True
            study.stop()
            skip(trial, "stopped")
        except Exception as e:  # the trial fails (Optuna records why) and the study goes on; said on its line too
            if log:
                log({"trial": trial.number, "params": params, "failed": " ".join(str(e).split())[:300]})
            raise
        t1 = time.perf_counter()
        for k, v in {**m, **where, "params_json": json.dumps(params)}.items():
            trial.set_user_attr(k, v)
        for (metric, op, bound), c in zip(space.constraints, space.feasibility(m)):
            trial.set_constraint(f"{metric}{op}{bound:g}", c)
        if space.constraints:
            trial.set_user_attr("constraints", space.feasibility(m))
        ctx["store_s"] += time.perf_counter() - t1
        if log:
            log({"trial": trial.number, "params": params, "values": [m[o] for o in space.objectives],
                 **{k: m[k] for k in ("size_mb", "wall_s")}, "measure_s": round(t1 - t0, 2)})
        return [m[o] for o in space.objectives]

    def callback(study, trial):
        if between is not None and not ctx["stopped"]:
            between()
        while True:
            if ctx["stopped"] or study.user_attrs.get("stop") or (stop is not None and stop.is_set()) or \
                    (deadline and time.time() > deadline):
                return study.stop()
            ts = study.get_trials(deepcopy=False)
            n = {s: sum(t.state == getattr(State, s) for t in ts) for s in ("COMPLETE", "RUNNING", "WAITING")}
            if n["COMPLETE"] >= total:
                return study.stop()
            if n["WAITING"] or n["COMPLETE"] + n["RUNNING"] < total and _unvisited(space, ts):
                return None  # work left for this worker
            if n["RUNNING"] == 0:
                return study.stop()
            optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed after the grace, retried
            time.sleep(min(2.0, store.heartbeat_s()))

    if _done(study, total, space):
        return summary(study, bundle, space)
    note_worker(study)
    try:
        study.optimize(objective, callbacks=[callback], timeout=minutes * 60 if minutes else None,
                       catch=(Exception,), gc_after_trial=True)
        stopped = ctx["stopped"] or stop is not None and stop.is_set() or bool(study.user_attrs.get("stop"))
        out = summary(study, bundle, space, remeasure=not stopped, ran_here=ctx["ran"],
                      between=between)  # the frontier re-measured, unless a stop was asked for
    finally:
        note_worker(study, ended=True)
    out["store_s_per_trial"] = round(ctx["store_s"] / max(1, ctx["ran"]), 4)
    return out


def _unvisited(space, trials) -> bool:
    seen = {json.dumps(t.params, sort_keys=True) for t in trials if t.state.name != "WAITING" and t.params}
    return any(json.dumps(dict(zip(space.vary, c)), sort_keys=True) not in seen
               for c in itertools.product(*space.vary.values()))


def _done(study, total, space) -> bool:
    ts = study.get_trials(deepcopy=False)
    if sum(t.state.name == "COMPLETE" for t in ts) >= total:
        return True
    return not _unvisited(space, ts) and not any(t.state.name in ("RUNNING", "WAITING") for t in ts)


def note_worker(study, ended: bool = False) -> None:
    """A worker of this study, by host and pid: started now, or ended now (status() counts the live ones)."""
    key = f"worker:{socket.gethostname()}:{os.getpid()}"
    study.set_user_attr(key, {"started": study.user_attrs.get(key, {}).get("started", time.time()),
                              "ended": time.time() if ended else None})
