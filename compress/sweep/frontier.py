"""A study's trials as flat rows (the page's table, the CSV), its Pareto frontier among the feasible trials, the one
re-measurement of each frontier point's latency, and the summary a sweep prints last. Reads what sweep.py stored."""
import dataclasses
import json
import time

from ..table import pipeline
from ..table.recipe import NO_FACTOR, Recipe, unfactorized
from ..measure.metrics import values
from .space import METRICS, TIMED, Space

_EXTRA = ("latency_p10", "latency_p90", "latency_ms_original", "wall_s", "cpu", "threads", "workload", "worker",
          "factorized")


def timed_values(lat: dict) -> dict:
    """The timed metrics of the table (latency_ms, speedup, the rate) of one interleaved timing, and its spread."""
    o, c = lat["original"], lat["compressed"]
    return {"latency_p10": c["p10"], "latency_p90": c["p90"], "latency_ms_original": o["p50"],
            **values({"latency_ms": c}, {"latency_ms": o}, TIMED)}


def latency(original, comp, space: Space) -> dict:
    """Latency of the original and the compressed model, interleaved, on the study's workload."""
    return timed_values(pipeline.benchmark(original, comp, space.batch, space.seq, 7, workload=space.workload))


def rows(study) -> list[dict]:
    """Every trial, flat: number, state, varied fields, every metric (re-measured latency where it was), feasible,
    on_frontier, the recipe (JSON) and why it was skipped or failed."""
    space = json.loads(study.user_attrs["space"])
    again = {int(k.split(":")[1]): v for k, v in study.user_attrs.items() if k.startswith("remeasured:")}
    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        r = {"trial": t.number, "state": t.state.name.lower(), **{k: t.params.get(k) for k in space["vary"]}}
        r.update({k: v for k, v in a.items() if k in METRICS or k in _EXTRA or k.startswith("unhealed_")})
        if t.number in again:
            r["latency_ms_first"] = r.get("latency_ms")
            r.update(again[t.number])
        r["feasible"] = t.state.name == "COMPLETE" and all(c <= 0 for c in a.get("constraints", []))
        r["recipe"] = a.get("recipe", "")
        r["note"] = a.get("skipped") or str(t.system_attrs.get("fail_reason", ""))[:200] or \
            (NO_FACTOR if unfactorized(a) else "")
        r["seconds"] = round((t.datetime_complete - t.datetime_start).total_seconds(), 1) \
            if t.datetime_complete and t.datetime_start else None
        out.append(r)
    best = set(frontier(out, space["objectives"]))
    for r in out:
        r["on_frontier"] = r["trial"] in best
    return out


def frontier(rows: list[dict], objectives) -> list[int]:
    """The trial numbers no other complete, feasible trial dominates (as good in every objective, better in one)."""
    sign = [1 if METRICS[o][0] == "minimize" else -1 for o in objectives]
    pts = [(r["trial"], [s * r[o] for s, o in zip(sign, objectives)]) for r in rows
           if r["state"] == "complete" and r["feasible"] and all(r.get(o) is not None for o in objectives)]

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
    return [n for n, v in pts if not any(dominates(w, v) for _, w in pts)]


def remeasure_frontier(study, bundle, space: Space, most: int = 50, between=None) -> int:
    """Time each frontier point once more (its own re-measurement replaces the trial's latency), until every point of
    the frontier has been re-measured; between() after each. A healed recipe is timed unhealed: healing changes the
    weights, not the shapes or the time, and healing again would hold the queue for a whole run. Returns how many
    were re-measured now."""
    if not space.timed:
        return 0
    done = 0
    while done < most:
        rs = rows(study)
        todo = [r for r in rs if r["on_frontier"] and f"remeasured:{r['trial']}" not in study.user_attrs]
        if not todo:
            return done
        r = todo[0]
        recipe = Recipe.from_json(r["recipe"])
        comp = pipeline.compress(bundle, dataclasses.replace(recipe, heal_steps=0, heal_corpus=""))
        study.set_user_attr(f"remeasured:{r['trial']}", {**latency(bundle, comp, space), "remeasured_at": time.time()})
        done += 1
        if between is not None:
            between()
    return done


def summary(study, bundle=None, space: Space | None = None, remeasure: bool = False, ran_here: int = 0,
            between=None) -> dict:
    """The study in one JSON-able dict: counts by state, and the frontier (re-measured first when asked)."""
    again = remeasure_frontier(study, bundle, space, between=between) if remeasure and bundle is not None and space \
        else 0
    rs = rows(study)
    sp = json.loads(study.user_attrs["space"])
    states: dict = {}
    for r in rs:
        states[r["state"]] = states.get(r["state"], 0) + 1
    keep = [*sp["objectives"], "size_mb", "latency_ms", "latency_p10", "latency_p90", "speedup"]
    front = sorted((r for r in rs if r["on_frontier"]), key=lambda r: r.get(sp["objectives"][-1]) or 0)
    return {"study": study.study_name, "model": sp["model"], "objectives": sp["objectives"],
            "trials": states, "target": study.user_attrs.get("trials"), "ran_here": ran_here, "remeasured": again,
            "frontier": [{"trial": r["trial"], **{k: r[k] for k in keep if k in r},
                          "recipe": _changed(r["recipe"])} for r in front]}


def _changed(recipe_json: str) -> dict:
    """A recipe as the fields it sets away from their defaults."""
    d, base = json.loads(recipe_json), Recipe().to_dict()
    return {k: v for k, v in d.items() if base.get(k) != v}
