"""One self-contained HTML file for the people who asked "how small can it get": a comparison (original vs
compressed, the peer beside them) or a Trade-offs study (its frontier). Plotly inline, system fonts, no external
script, font or image: it opens offline. It reports numbers already measured; it never measures."""
import html
import json
import re
import shlex

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from ..sweep import frontier
from ..measure import core as measure
from . import plots
from ..measure.evaluate import metric_label
from ..measure import metrics
from ..measure.verdict import verdict
from ..table.pipeline import PEER  # noqa: F401 (re-exported: the peer a report names)
from ..table.recipe import Recipe

COLOURS = {"original": "#0072B2", "compressed": "#E69F00", "peer": "#009E73"}  # Okabe-Ito: colour-blind safe
STYLE = ("body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
         "color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
         "text-align:left}th{background:#f2f2f2}.lead{font-size:1.15em;background:#f6f8fa;padding:.8em;"
         "border-left:4px solid #0072B2}pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap}"
         ".cols{display:flex;gap:2em}.cols>div{flex:1;min-width:0}"
         ".two{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:2em}")  # (a grid: the first chart is
#          drawn into half the width before the second exists; a flex row would give it all, the chart kept that width)


def result(rep: dict, recipe: Recipe) -> dict:
    """pipeline.report()'s dict in the shape the app keeps an Apply in (and comparison() reads)."""
    sides = ("original", "compressed")
    return {"recipe": recipe, "workload": {k: rep["workload"][k] for k in ("kind", "batch", "seq") if k in rep["workload"]},
            "nums": {k: {x: rep[k][x] for x in ("size_bytes", "params", "size_breakdown", "quality", *OWN) if x in rep[k]}
                     for k in sides}
            | ({"unhealed": rep["unhealed"]} if "unhealed" in rep else {}),  # the model before healing, if measured
            "lat": {k: rep[k]["latency_ms"] for k in sides}, "layers": rep["layers"],
            "gpu": {k: rep[k]["gpu_latency_ms"] for k in sides if rep[k].get("gpu_latency_ms")} if rep["workload"]["gpu"] else None,
            "applied": {k: rep[k] for k in ("runtime_applied", "runtime_setting", "runtime_reason", "kept_blocks", "heal",
                                            "factorized") if k in rep}}


OWN = tuple(m.name for m in metrics.own("all"))  # the metrics measured on their own (metrics.py), where measured


def workload_text(w: dict) -> str:
    from ..table.pipeline import WORKLOADS
    return f"{WORKLOADS[w['kind']]} ({w['batch']}x{w['seq']})" if metrics.has_shape(w["kind"]) else WORKLOADS[w["kind"]]


def mb(n) -> str:  # the app's formats, so every number the page shows reads the same here
    return f"{n / 1e6:.{1 if n >= 1e6 else 2 if n >= 1e5 else 3}f} MB"  # (a tiny model's parts: 0.1 = 0.1 + 0.1 + 0.0)


_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"<>]+/)+([^\s/'\"<>]*)")


def public(x) -> str:
    """Text without this server's absolute paths (a bundled model's site-packages folder, an upload's temp name):
    only the last part of a path is said."""
    return _PATH.sub(lambda m: "…/" + m.group(1), str(x))


def _e(x) -> str:
    return html.escape(public(x))


def unreliable(lat: dict) -> bool:
    """Was this timing measured while other programs used more than BUSY of the CPUs (the page's warning)?"""
    busy = lat.get("others_busy")
    return busy is not None and busy > measure.BUSY


def _chart(fig: go.Figure, title: str, x: str, y: str, height: int) -> go.Figure:
    """Every chart: a title with room above it and both axes named."""
    fig.update_layout(title=title, height=height, margin={"t": 60}, xaxis_title=x, yaxis_title=y)
    return fig


def _table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Figs:
    """plotly figures as divs, each with its text alternative (plots.in_words); plotly.js inline once, in the first."""
    def __init__(self):
        self.n = 0

    def __call__(self, fig: go.Figure) -> str:
        self.n += 1
        return pio.to_html(fig, full_html=False, include_plotlyjs=self.n == 1,
                           config={"displaylogo": False, "responsive": True},
                           div_id=f"fig{self.n}") + f"<p class='alt'>The chart in words: {_e(plots.in_words(fig))}</p>"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _sides(res: dict, peer: dict | None) -> dict:
    sides = {"original": {**res["nums"]["original"], "lat": res["lat"]["original"]},
             "compressed": {**res["nums"]["compressed"], "lat": res["lat"]["compressed"]}}
    if peer:
        sides["peer"] = {**peer["nums"]["compressed"], "lat": peer["lat"]["compressed"], "o_lat": peer["lat"]["original"]}
    return sides


def _verdict(res: dict) -> str:
    """The page's verdict on the quality (kept / some loss / large loss), its rule and its hint."""
    v = verdict(res["nums"]["compressed"]["quality"], bool((res.get("applied") or {}).get("heal")))
    return "" if v is None else (f"<p><b>Quality: {_e(v['verdict'])}</b> ({_e(metric_label(v['metric']))} "
                                 f"{v['value']:.4f}; {_e(v['rule'])}). {_e(v['hint'])}</p>")


def ratio(x: float, better: str, worse: str) -> str:
    """original / compressed in words: '4.00x smaller', '1.15x larger' below 1, 'about the same' within 0.5%."""
    return "about the same" if f"{x:.2f}" == "1.00" else f"{x:.2f}x {better}" if x >= 1 else f"{1 / x:.2f}x {worse}"


def summary(name: str, res: dict, machine: str) -> str:
    """The three plain sentences: how much smaller, how much faster, how much quality was kept, on what."""
    o, c = res["nums"]["original"], res["nums"]["compressed"]
    lo, lc = res["lat"]["original"]["p50"], res["lat"]["compressed"]["p50"]
    speed = ratio(lo / lc, "faster", "slower")
    if unreliable(res["lat"]["compressed"]):
        speed += (f" (unreliable: other programs used {res['lat']['compressed']['others_busy']:.0%} of the CPUs while "
                  "it was timed)")
    q = [f"{metric_label(k)} {v:.4f} (the original: {o['quality'].get(k, float('nan')):.4f})"
         for k, v in c["quality"].items()]
    return (f"The compressed {name} is {ratio(o['size_bytes'] / c['size_bytes'], 'smaller', 'larger')} than the "
            f"original ({mb(c['size_bytes'])} instead of {mb(o['size_bytes'])}). It runs {speed} on this machine's CPU "
            f"({lc:.1f} ms instead of {lo:.1f} ms at the median, {machine}). On quality it scores {'; '.join(q)}.")


def comparison(card: dict, res: dict, peer: dict | None = None, samples: dict | None = None,
               command: str = "", machine: str = "", curve: dict | None = None) -> str:
    """card: the original (name, info, content_hash, quality: metrics.quality_words); res: the app's Apply result (nums, lat, workload, layers,
    recipe, applied); peer: the same for PEER, when measured; samples: {"Original": [lines], "Compressed": [...]};
    curve: the attention variant's cost over T as the page timed it (seqlen.of_recipe), when it did."""
    name, info, recipe = card["name"], card["info"], res["recipe"]
    figs, sides = _Figs(), _sides(res, peer)
    label = {"original": "Original", "compressed": "Compressed", "peer": "Peer: ONNX Runtime int8 of the original"}
    o = sides["original"]
    rows = []
    for k, s in sides.items():
        lat = s["lat"]
        base_p50 = s.get("o_lat", o["lat"])["p50"]  # the peer's own interleaved original
        rows.append({"": label[k], "size": mb(s["size_bytes"]), "x smaller": f"{o['size_bytes'] / s['size_bytes']:.2f}x",
                     "params": f"{s['params'] / 1e6:.2f} M", "CPU latency p50": f"{lat['p50']:.1f} ms",
                     "p10-p90": f"{lat['p10']:.1f}-{lat['p90']:.1f} ms", "x faster": f"{base_p50 / lat['p50']:.2f}x"
                     + (f" (against its own run of the original: {base_p50:.1f} ms)" if "o_lat" in s else "")
                     + (" (unreliable: CPUs busy)" if unreliable(lat) else ""),
                     **{metric_label(m): f"{v:.4f}" for m, v in s["quality"].items()},
                     **{metrics.label(r): f"{lat[r]:,.0f}" for r in metrics.RATES if r in lat},
                     **{metrics.label(m): f"{s[m]:,.1f} {metrics.METRICS[m].unit}" for m in OWN if s.get(m) is not None}})
    short = {"original": "Original", "compressed": "Compressed", "peer": "Peer (ORT int8)"}  # (the long one was cut)
    bars = go.Figure([go.Bar(x=[short[k] for k in sides], y=[s["size_bytes"] / 1e6 for s in sides.values()],
                             marker_color=[COLOURS[k] for k in sides], name="size")])
    _chart(bars, "Size of each model (MB)", "model", "size (MB)", 340)
    lat = go.Figure([go.Bar(x=[short[k] for k in sides], y=[s["lat"]["p50"] for s in sides.values()],
                            error_y={"type": "data", "symmetric": False,
                                     "array": [s["lat"]["p90"] - s["lat"]["p50"] for s in sides.values()],
                                     "arrayminus": [s["lat"]["p50"] - s["lat"]["p10"] for s in sides.values()]},
                            marker_color=[COLOURS[k] for k in sides])])
    _chart(lat, "CPU latency p50 (error bars: p10-p90)", "model", "latency (ms)", 340)
    names = list(o["quality"])  # each metric on its own axis: KL (~0.002) beside bits per char (~1.7) was invisible
    qual = make_subplots(1, len(names), subplot_titles=[metric_label(m) for m in names], horizontal_spacing=0.08)
    for i, m in enumerate(names, 1):
        qual.add_trace(go.Bar(name=metric_label(m), x=[short[k] for k in sides], showlegend=False, marker_color=[
            COLOURS[k] for k in sides], y=[s["quality"].get(m) for s in sides.values()]), 1, i)
    _chart(qual, "Quality of each model (each metric on its own axis)", "model", "value", 360)
    peer_line = ("<p>The peer row is what a user would pick instead: the original in ONNX Runtime with its own "
                 "dynamic int8 (per-channel), measured on the same machine and workload, interleaved with its own "
                 "run of the original.</p>") if peer else \
        "<p>The peer (ONNX Runtime int8 of the original) was not measured for this report.</p>"
    layers = res.get("layers") or []
    side_by_side = ""
    if samples:
        side_by_side = "<h2>Sample outputs</h2><div class='cols'>" + "".join(
            f"<div><h3>{_e(k)}</h3><ol>" + "".join(f"<li>{_e(x)}</li>" for x in v) + "</ol></div>"
            for k, v in samples.items() if not k.startswith("_")) + "</div>" + \
            (f"<p>{_e(samples['_note'])}</p>" if samples.get("_note") else "")
    over_t = "" if not curve else (
        f"<h2>Cost over sequence length</h2>{figs(plots.seqlen(curve['rows'], curve['crossover']))}"
        f"<p>{_e(plots.seqlen_words(curve, machine))}</p>" + "".join(f"<p>{_e(n)}</p>" for n in curve.get("notes", ()))
        + (f"<p>{_e(busy)}</p>" if (busy := plots.seqlen_unreliable(curve["rows"])) else "")
        + _table(curve["rows"]))
    body = (f"<h1>{_e(name)}, compressed: {_e(recipe.ran(res.get('applied') or {}))}</h1>"
            f"<p class='lead'>{_e(summary(name, res, machine))}</p>{_verdict(res)}"
            f"<h2>Original vs compressed</h2>{_table(rows)}{peer_line}"
            f"<div class='two'><div>{figs(bars)}</div><div>{figs(lat)}</div></div>{figs(qual)}"
            f"<h2>The recipe</h2><p>{_e(recipe.describe())}</p><pre>{_e(recipe.to_json())}</pre>"
            + (f"<p>Runtime: {_e(res['applied'].get('runtime_applied'))} "
               f"{_e(res['applied'].get('runtime_setting') or res['applied'].get('runtime_reason') or '')}</p>")
            + f"<h2>The original model</h2>{_table([{k: v for k, v in info.items() if k != 'card'}])}"
            f"<p>Content hash (sha256 of its weights): <code>{_e(card['content_hash'])}</code></p>"
            + (f"<h2>Per-layer report</h2>{_table(layers)}" if layers else "") + over_t + side_by_side
            + f"<h2>How it was measured</h2><p>{_e(machine)}</p><p>Workload: {_e(workload_text(res['workload']))}</p>"
            f"<p>Quality: {_e(card['quality'])}</p>"
            + (f"<p>Reproduce it:</p><pre>{_e(command)}</pre>" if command else ""))
    return _page(f"{name}: {recipe.describe()}", body)


def study(name: str, model: str, rows: list[dict], space: dict, status: dict, machine: str = "",
          command: str = "") -> str:
    """A Trade-offs study: the frontier plot and table, every trial, the space, and how it was measured."""
    figs = _Figs()
    done = [r for r in rows if r["state"] == "complete"]
    y = space["objectives"][0]
    x = "size_mb" if any("size_mb" in r for r in done) else "latency_ms"
    best = [r for r in done if r.get("on_frontier")]
    sign = -1 if metrics.METRICS[y].direction == "minimize" else 1  # (bits per char, KL, latency: lower is better)
    top = max((r for r in best if r.get(y) is not None), key=lambda r: sign * r[y], default=None)
    lead = (f"{len(done)} compressed versions of {model} were measured on this machine; {len(best)} of them are on the "
            f"frontier (no other trial is both smaller and better). ")
    if top is not None and top.get("size_mb"):
        lead += (f"The best {plots.label(y)} on the frontier ({'lower' if sign < 0 else 'higher'} is better) is "
                 f"{top[y]:.4f}, at {top['size_mb']:.2f} MB; the "
                 f"smallest frontier point is {min(r['size_mb'] for r in best):.2f} MB. ")
    lead += f"Measured on {machine or 'this machine'}."
    keep = ["trial", "state", "feasible", "on_frontier", *space["objectives"], "size_mb", "latency_ms", "speedup"]
    table = [{k: (Recipe.from_json(r["recipe"]).describe() if k == "recipe" else r.get(k)) for k in keep + ["recipe"]
              if k in r} for r in rows]
    body = (f"<h1>Trade-offs of {_e(model)}: study {_e(name)}</h1><p class='lead'>{_e(lead)}</p>"
            f"{figs(plots.tradeoff(rows, x, y).update_layout(title=f'{plots.label(y)} against {plots.label(x)}', margin={'t': 60}))}"
            f"<h2>Frontier</h2>{_table([t for t, r in zip(table, rows) if r.get('on_frontier')])}"
            "<p>The frontier's recipes as JSON (trial: recipe):</p><pre>"
            + _e("\n".join(f"{r['trial']}: {r['recipe']}" for r in rows if r.get("on_frontier") and r.get("recipe")))
            + "</pre>"
            f"<h2>The space</h2><pre>{_e(json.dumps(space, indent=1))}</pre>"
            f"<p>{status.get('complete', 0)} of {status.get('target', 0)} trials complete"
            f"{', ' + str(status['failed']) + ' failed' if status.get('failed') else ''}.</p>"
            f"<h2>Every trial</h2>{_table(table)}<h2>How it was measured</h2><p>{_e(machine)}</p>"
            + (f"<p>Reproduce it:</p><pre>{_e(command)}</pre>" if command else ""))
    return _page(f"{model}: {name}", body)


def study_of(name: str, url: str | None = None) -> str:
    """study() of a stored study, by name (the page's and the CLI's)."""
    from ..sweep import studies, run as sweep
    from ..sweep.space import from_json
    st = sweep.open_study(None, name, url)
    rows, sp, stat = frontier.rows(st), sweep.space_of(st), studies.status(st)
    a = next((t.user_attrs for t in st.trials if t.user_attrs.get("machine")), {})
    cpu = json.loads(a.get("machine") or "{}")
    machine = (f"{measure.machine_line({**cpu, 'threads': a.get('threads', '?')})}; workload {a.get('workload', '?')}; "
               f"torch {cpu.get('torch', '?')}") if a else ""
    grid = st.user_attrs.get("grid", len(sp["vary"]) <= 2)  # (a study made before the flag was kept)
    return study(name, sp["model"], rows, sp, stat, machine,
                 f"{from_json(st.user_attrs['space']).cli(name, st.user_attrs.get('trials'), grid)}\n"
                 f"python -m compress report --study {shlex.quote(name)} --out report.html")
