"""The figures of the Trade-offs page and of the HTML report (plotly): every trial as a point with the frontier joined, and a 1-D sweep's curve."""

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..measure import core, metrics
from ..table.recipe import Recipe
from ..sweep.frontier import frontier
from ..table.steps import FIELDS

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]  # colour-blind safe


def label(metric: str) -> str:
    """An axis or column title: the metrics table's label (metrics.py), or a quality key's words."""
    return metrics.label(metric)


def hover(r: dict, keys, sep: str = "<br>") -> str:
    """A trial in words: its number, recipe and these metrics; sep "<br>" for plotly's hover, "; " for plain text
    (a picker's option, a message: they show markup as it is written)."""
    recipe = Recipe.from_json(r["recipe"]).describe() if r.get("recipe") else ""
    return sep.join([f"trial {r['trial']}: {recipe}",
                     *(f"{label(k)}: {r[k]:.4g}" for k in keys if isinstance(r.get(k), (int, float)))])


def tradeoff(rows: list[dict], x: str, y: str, log_x: bool = False, log_y: bool = False) -> go.Figure:
    """Every complete trial as a point (x: size or latency, y: a quality metric); the points no other beats in both
    joined as the frontier; infeasible ones (constraints) hollow; latency with its p10-p90 as an error bar."""
    pts = [r for r in rows if r["state"] == "complete" and r.get(x) is not None and r.get(y) is not None]
    best = set(frontier(pts, [y, x]))
    fig = go.Figure()
    groups = (("trials", [r for r in pts if r["trial"] not in best and r["feasible"]], "markers", "circle"),
              ("outside the constraint", [r for r in pts if not r["feasible"]], "markers", "circle-open"),
              ("frontier", sorted((r for r in pts if r["trial"] in best), key=lambda r: r[x]), "lines+markers",
               "diamond"))
    for name, rs, mode, symbol in groups:
        if not rs:
            continue
        err = None
        if x == "latency_ms" and all("latency_p10" in r for r in rs):
            err = {"type": "data", "symmetric": False, "array": [r["latency_p90"] - r[x] for r in rs],
                   "arrayminus": [r[x] - r["latency_p10"] for r in rs], "thickness": 1}
        fig.add_trace(go.Scatter(x=[r[x] for r in rs], y=[r[y] for r in rs], mode=mode, name=name, error_x=err,
                                 marker={"symbol": symbol, "size": 10 if name == "frontier" else 8},
                                 customdata=[[r["trial"]] for r in rs], hovertext=[hover(r, (x, y)) for r in rs],
                                 hoverinfo="text"))
    m = metrics.METRICS.get(y)
    better = "higher is better" if m is None or m.direction == "maximize" else "lower is better"
    fig.update_layout(xaxis_title=label(x), yaxis_title=f"{label(y)} ({better})", height=460, clickmode="event+select",
                      legend={"orientation": "h", "y": 1.08}, margin={"t": 30})
    fig.update_xaxes(type="log" if log_x else "linear")
    fig.update_yaxes(type="log" if log_y else "linear")
    return fig


def curve(rows: list[dict], field: str, y: str) -> go.Figure:
    """A 1-D sweep as the seed's question: quality vs the varied field (before and after healing when healing ran),
    with size on a second axis."""
    rs = sorted((r for r in rows if r["state"] == "complete" and isinstance(r.get(field), (int, float))),
                key=lambda r: r[field])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    xs = [r[field] for r in rs]
    if any(f"unhealed_{y}" in r for r in rs):
        fig.add_trace(go.Scatter(x=xs, y=[r.get(f"unhealed_{y}") for r in rs], name=f"{label(y)}, unhealed",
                                 mode="lines+markers", line={"dash": "dot"}))
        fig.add_trace(go.Scatter(x=xs, y=[r[y] for r in rs], name=f"{label(y)}, healed", mode="lines+markers"))
    else:
        fig.add_trace(go.Scatter(x=xs, y=[r[y] for r in rs], name=label(y), mode="lines+markers"))
    fig.add_trace(go.Scatter(x=xs, y=[r["size_mb"] for r in rs], name="size (MB)", mode="lines+markers",
                             line={"color": "gray"}), secondary_y=True)
    fig.update_layout(xaxis_title=FIELDS[field].label or field, height=380, margin={"t": 30},
                      legend={"orientation": "h", "y": 1.1})
    fig.update_yaxes(title_text=label(y), secondary_y=False)
    fig.update_yaxes(title_text="size (MB)", secondary_y=True, tickmode="auto", showgrid=False)  # its own round ticks
    return fig


def seqlen(rows: list[dict], crossover: int | None = None) -> go.Figure:
    """Latency and peak memory of one call over T (bench/seqlen.py's rows), a line per model, both axes log: a slope
    of 1 is linear in T, 2 quadratic; the crossover T marked."""
    fig = make_subplots(1, 2, subplot_titles=("latency (ms, median)", "peak memory rise (MB)"), horizontal_spacing=0.1)
    for i, name in enumerate(dict.fromkeys(r["model"] for r in rows)):
        rs = sorted((r for r in rows if r["model"] == name), key=lambda r: r["T"])
        for col, y in ((1, "ms"), (2, "peak_mb")):
            fig.add_trace(go.Scatter(x=[r["T"] for r in rs], y=[max(r[y], 0.1) for r in rs],
                                     name=f"{name} ({'ms' if col == 1 else 'MB'})",
                                     mode="lines+markers", legendgroup=name, showlegend=col == 1,
                                     line={"color": OKABE_ITO[i % len(OKABE_ITO)], "dash": "dot" if i else "solid"}),
                          1, col)
    if crossover is not None:
        fig.add_vline(x=crossover, line_dash="dash", line_color="gray", col=1)
    ts = sorted({r["T"] for r in rows})  # ticked at the lengths measured (log ticks read '2 3 4 ... 9 1000 2')
    fig.update_xaxes(type="log", title_text="T (tokens, batch 1)", tickvals=ts, ticktext=[str(t) for t in ts])
    fig.update_yaxes(type="log")
    fig.update_layout(height=380, margin={"t": 60}, legend={"orientation": "h", "y": -0.25},
                      title="Cost of one forward call over sequence length" +
                            (f": the variant is faster from T = {crossover}" if crossover else ""))
    return fig


def seqlen_words(got: dict, machine: str) -> str:
    """bench/seqlen.of_recipe's result in one paragraph (the Compress page's and the report's words): where the variant
    is faster, the fitted slopes, the machine, and how the lengths were timed."""
    ts = sorted({r["T"] for r in got["rows"]})
    slopes = ", ".join(f"{n} {s:.2f}" for n, s in got["slopes"].items())
    return (f"{got['variant']} is faster than the original ({got['against']}) "
            + (f"from T = {got['crossover']} on, at every longer T measured" if got["crossover"] else
               f"at no T up to {ts[-1]}") + (f"; fitted slopes of log ms over log T: {slopes}" if slopes else "")
            + f". {machine}; positions beyond the trained ones tiled for timing; memory: the rise of the server's peak "
            "RSS during one call (other work there can add to it).")


def busiest(rows: list[dict]) -> float | None:
    """The largest share of the CPUs other programs used while a length was timed (None: not measured)."""
    return max((r["others_busy"] for r in rows if r.get("others_busy") is not None), default=None)


def seqlen_unreliable(rows: list[dict]) -> str:
    """The page's and the report's warning when other programs were busy while a length was timed ("": quiet)."""
    busy = busiest(rows)
    if busy is None or busy <= core.BUSY:
        return ""
    return (f"Timing unreliable: other programs used up to {busy:.0%} of the CPUs while a length was timed (over "
            f"{core.BUSY:.0%}), so the crossover and the slopes above may be noise: time it again when the machine "
            "is quiet.")


def in_words(fig: go.Figure) -> str:
    """A chart's text alternative (the page's caption under it, the report's): its title and axes, and per trace how
    many points and the range of its values, read off the figure itself so that no chart goes without one."""
    import re
    import numpy as np

    def plain(t) -> str:
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", str(t or ""))).strip()

    def span(v) -> str:
        try:
            a = np.asarray(v, dtype=float)
        except (TypeError, ValueError):  # categories (layer names, models)
            return f"{len(v)} categories"
        a = a[np.isfinite(a)]
        return f"from {a.min():.3g} to {a.max():.3g}" if a.size else "no values"

    lay = fig.layout
    axes = [plain(a.title.text) for a in (lay.xaxis, lay.yaxis) if a.title.text]
    parts = [f"{plain(lay.title.text) or 'A chart'}" + (f" ({' against '.join(reversed(axes))})" if axes else "")]
    for t in fig.data:
        name = plain(getattr(t, "name", "")) or t.type
        if getattr(t, "z", None) is not None:
            z = np.asarray(t.z, dtype=float)
            parts.append(f"{name}: a {' x '.join(map(str, z.shape))} map, values {span(z.ravel())}")
        elif getattr(t, "y", None) is not None:
            at = len(set(zip(t.x, t.y))) if getattr(t, "x", None) is not None else len(t.y)
            parts.append(f"{name}: {len(t.y)} points{f' at {at} places' if at < len(t.y) else ''}, values {span(t.y)}")
    return "; ".join(parts) + "."
