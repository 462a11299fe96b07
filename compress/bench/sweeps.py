"""The sweep benchmarks of BENCHMARKS.md (measured, never asserted in tests):
  rank      a 1-D rank sweep on MiniLM (ratio 0.1..1.0, unhealed): its time, and each point against a single apply
  cost      one unhealed trial against one Apply of the same recipe (same workload), and the store's overhead
  frontier  a study's (fidelity, size) frontier against BENCHMARKS.md's unhealed technique rows
python -m compress.bench.sweeps rank|cost|frontier [--study NAME --storage URL]; markdown on stdout."""
import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..measure import core as measure
from ..table import pipeline
from ..sweep import run as sweep
from ..sweep.frontier import frontier, rows
from ..models.bundled import load_model
from ..table.recipe import Recipe
from ..sweep.space import Space, values

ROOT = Path(__file__).resolve().parents[2]


def _machine() -> str:
    return measure.machine_line()


def rank(model="minilm") -> str:
    b = load_model(model)
    space = Space(model, {"rank": values("rank", "0.1:1.0:0.1")}, ("fidelity", "size_mb"), {"rank_mode": "ratio"})
    url = f"sqlite:///{tempfile.mkdtemp()}/rank.sqlite"
    t0 = time.perf_counter()
    out = sweep.run(b, space, "rank", url)
    wall = time.perf_counter() - t0
    lines = [f"### {model}: `sweep --vary rank=0.1:1.0:0.1 --fixed rank_mode=ratio --objectives fidelity,size_mb` "
             f"(grid, unhealed); {_machine()}", "",
             f"10 trials in {wall:.1f} s ({out['store_s_per_trial'] * 1e3:.0f} ms per trial writing to the store). "
             "Each point against a single `apply` of its recipe (compress + report, as the CLI's apply):", "",
             "| rank | size MB (sweep) | size bytes equal | fidelity (sweep) | fidelity (apply) | abs diff | trial s |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows(sweep.open_study(None, "rank", url)), key=lambda r: r["rank"]):
        comp = pipeline.compress(b, Recipe.from_json(r["recipe"]))
        rep = pipeline.report(b, comp)
        size, fid = rep["compressed"]["size_bytes"], rep["compressed"]["quality"]["fidelity"]
        lines.append(f"| {r['rank']} | {r['size_mb']} | {'yes' if size == r['size_bytes'] else 'NO'} | "
                     f"{r['fidelity']} | {fid} | {abs(fid - r['fidelity']):.4f} | {r['wall_s']} |")
    return "\n".join(lines)


def cost(model="minilm", recipe=Recipe(rank_mode="ratio", rank=0.5), rounds=3) -> str:
    """Apply (compress + report, 8 x 128) and a one-trial sweep (compress + size + quality + latency of both + the
    store's writes) of the same recipe, alternated; medians."""
    b = load_model(model)
    space = Space(model, {"rank": (recipe.rank,)}, ("fidelity", "size_mb", "speedup"), {"rank_mode": recipe.rank_mode})
    applies, trials, store, own = [], [], [], []
    for i in range(rounds):
        t0 = time.perf_counter()
        pipeline.report(b, pipeline.compress(b, recipe))
        applies.append(time.perf_counter() - t0)
        url = f"sqlite:///{tempfile.mkdtemp()}/cost.sqlite"
        t0 = time.perf_counter()
        out = sweep.run(b, space, f"cost{i}", url)
        trials.append(time.perf_counter() - t0)
        store.append(out["store_s_per_trial"])
        own.append(rows(sweep.open_study(None, f"cost{i}", url))[0]["seconds"])
    a, t = statistics.median(applies), statistics.median(trials)
    return "\n".join([
        f"### {model}: one unhealed trial vs one Apply of `{recipe.describe()}` (8 x 128 ids, 7 timed runs each); "
        f"{_machine()}", "",
        "| | median s | runs (s) |", "|---|---|---|",
        f"| Apply (compress + report) | {a:.2f} | {', '.join(f'{x:.2f}' for x in applies)} |",
        f"| one-trial sweep (open the study, measure, store, re-measure the frontier point, summary) | {t:.2f} | "
        f"{', '.join(f'{x:.2f}' for x in trials)} |",
        f"| the trial itself (start to complete, as the study records it) | {statistics.median(own):.2f} | "
        f"{', '.join(f'{x:.2f}' for x in own)} |", "",
        f"Trial / Apply = {statistics.median(own) / a:.2f}x (the whole one-trial sweep: {t / a:.2f}x). The store's "
        f"writes per trial (every metric as a user attribute): {statistics.median(store) * 1e3:.0f} ms."])


def _bench_rows(md: Path) -> list[dict]:
    """BENCHMARKS.md's unhealed technique table (the first table after its "no healing" heading)."""
    text = md.read_text().split("## Each technique alone and stacked (no healing)", 1)[1].split("\n## ", 1)[0]
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    head = [h.strip() for h in table[0].strip("|").split("|")]
    out = []
    for ln in table[1:]:
        cells = dict(zip(head, (c.strip() for c in ln.strip("|").split("|"))))
        if re.fullmatch(r"[0-9.]+", cells.get("size MB", "")):
            out.append({"recipe": cells["recipe"], "size_mb": float(cells["size MB"]),
                        "fidelity": float(cells["fidelity"]), "speedup": float(cells["x faster"])})
    return out


def frontier_vs_rows(study_name: str, url: str) -> str:
    study = sweep.open_study(None, study_name, url)
    rs = rows(study)
    done = [r for r in rs if r["state"] == "complete"]
    front = [r for r in done if r["trial"] in set(frontier(done, ["fidelity", "size_mb"]))]
    bench = _bench_rows(ROOT / "BENCHMARKS.md")
    lines = [f"### {study_name}: {len(done)} trials; its (fidelity, size) frontier against BENCHMARKS.md's "
             f"{len(bench)} unhealed technique rows; {_machine()}", "",
             "| BENCHMARKS row | size MB | fidelity | x faster | a frontier point as good or better (size, fidelity) |"
             " also as fast |", "|---|---|---|---|---|---|"]
    n2 = n3 = 0
    for row in bench:
        good = [f for f in front if f["size_mb"] <= row["size_mb"] and f["fidelity"] >= row["fidelity"]]
        fast = [f for f in good if f.get("speedup", 0) >= row["speedup"]]
        n2, n3 = n2 + bool(good), n3 + bool(fast)
        best = max(good, key=lambda f: f["fidelity"]) if good else None
        lines.append(f"| {row['recipe']} | {row['size_mb']} | {row['fidelity']} | {row['speedup']} | " +
                     (f"trial {best['trial']}: {Recipe.from_json(best['recipe']).describe()}, {best['size_mb']:.2f} MB,"
                      f" {best['fidelity']}" if best else "none") + f" | {'yes' if fast else 'no'} |")
    lines += ["", f"Dominated or equalled in (size, fidelity): {n2} of {len(bench)} rows; also at least as fast "
                  f"(the trial's speedup, re-measured on frontier points): {n3} of {len(bench)}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m compress.bench.sweeps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["rank", "cost", "frontier"])
    p.add_argument("--model", default="minilm")
    p.add_argument("--study", default="minilm-40")
    p.add_argument("--storage")
    a = p.parse_args(argv)
    print(rank(a.model) if a.part == "rank" else cost(a.model) if a.part == "cost" else
          frontier_vs_rows(a.study, a.storage))
    return 0


if __name__ == "__main__":
    sys.exit(main())
