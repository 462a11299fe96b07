"""Redraw timings of the Learn page's figures and the Spectra page's rank slider (a benchmark, not part of pytest).

    .venv/bin/python tests/learnbench.py            # the figure functions per slider step, on MiniLM
    .venv/bin/python tests/learnbench.py --browser  # also: a real browser, slider key press -> figure redrawn

Part 1 times what a fragment rerun does for each section per slider step: the library call and building the plotly
figure (a warm cache: decompositions are computed once per model before). Part 2 serves the app, opens a page in
Debian's chromium, presses ArrowRight on a slider and waits until the number it drives has changed on the page:
the time a person waits, server rerun, transfer and drawing included. Prints medians and maxima in seconds.
"""
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _stats(ts):
    return {"median_s": round(statistics.median(ts), 4), "max_s": round(max(ts), 4), "steps": len(ts)}


def figures(model="minilm") -> dict:
    """Each section's slider stepped over its range: library call + figure build, per step."""
    import numpy as np
    import plotly.graph_objects as go

    import compress as C
    from compress.learn import figures as L
    from compress.learn import attention as A
    b = C.load_model(model)
    t = time.perf_counter()
    L.prepare(b)
    prep = time.perf_counter() - t
    text = C.eval_set("project")[0][0]
    layer = L.linear_layers(b)[4]
    att = A.layer_attention(b, text, 2)
    T = att["T"]

    def lowrank(x):
        d = L.lowrank(b, layer, x)
        go.Figure([go.Heatmap(z=d["w"]), go.Heatmap(z=d["w_r"]), go.Heatmap(z=d["diff"]), go.Scatter(y=d["s"])]).to_json()

    def quant(bits):
        d = L.quantize_row(b, layer, 3, bits)
        go.Figure(go.Histogram(x=d["values"])).to_json()

    def heads(k):
        s = L.head_importance(b, "weight")
        gone = L.heads_removed(s, k)
        go.Figure([go.Heatmap(z=s, text=np.where(gone, "x", "")), go.Heatmap(z=L.head_importance(b, "gradient"))]).to_json()

    def head_maps(layer_i):
        m = A.layer_attention(b, text, layer_i)["maps"]
        go.Figure([go.Heatmap(z=m[i]) for i in range(m.shape[0])]).to_json()

    def ffn(x):
        d = L.ffn_cut(b, 2, x)
        go.Figure(go.Histogram(x=d["scores"])).to_json()

    def fnet(k):
        cos, _ = A.dft(T)
        A.sign_changes(cos[k])
        go.Figure([go.Heatmap(z=cos), go.Heatmap(z=att["maps"][0])]).to_json()

    def layers(k):
        d = L.layers_kept(b, k)
        go.Figure(go.Bar(y=d["influence"])).to_json()

    def efficient(w):
        p = A.patterns(att["maps"][2][0], w)
        go.Figure([go.Heatmap(z=v["grid"]) for v in p.values()]).to_json()

    steps = {"low rank (rank 0.02..1.0)": (lowrank, list(np.round(np.arange(0.02, 1.0, 0.07), 2))),
             "quantization (bits 2..8)": (quant, list(range(2, 9))),
             "head maps (layer)": (head_maps, list(range(b.info["layers"]))),
             "head scores (heads kept)": (heads, list(range(1, b.info["heads"] + 1))),
             "FFN (fraction)": (ffn, [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95]),
             "FNet (frequency row)": (fnet, list(range(0, T))),
             "fewer layers (blocks kept)": (layers, list(range(1, b.info["layers"] + 1))),
             "efficient attention (w)": (efficient, list(range(1, T + 1)))}
    out = {"model": model, "sentence tokens": T, "prepare_s (once per model)": round(prep, 2)}
    for name, (fn, values) in steps.items():
        ts = []
        for v in values:
            t = time.perf_counter()
            fn(v)
            ts.append(time.perf_counter() - t)
        out[name] = _stats(ts)
    return out


PLOT = ".js-plotly-plot .gtitle, .js-plotly-plot .annotation-text"  # drawn titles and cut labels: redrawn when the figure is


def browser(steps: int = 8) -> dict:
    """Slider key presses in a real browser: Spectra's rank slider, and the Learn page's low-rank slider."""
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, serve
    out = {}
    with serve() as url, sync_playwright() as p:
        br = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                                              "--disable-background-networking", "--disable-sync"])
        page = br.new_page(viewport={"width": 1500, "height": 1400})
        for name, path, label, probe in (
                ("spectra page, rank slider", "/spectra?rank_mode=ratio&rank=0.3", "Rank X", PLOT),
                ("learn page, low-rank slider", "/learn?section=low-rank", "Rank (fraction of min(m, n))", PLOT)):
            page.goto(url + path, timeout=120_000)
            page.wait_for_selector(probe, timeout=300_000)
            page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=300_000)
            time.sleep(2)
            thumb = page.get_by_role("slider", name=label)
            ts, done = [], []
            for _ in range(steps):
                before = page.locator(probe).evaluate_all("els => els.map(e => e.textContent)")
                thumb.focus()
                t = time.perf_counter()
                thumb.press("ArrowRight")
                page.wait_for_function("([sel, before]) => JSON.stringify([...document.querySelectorAll(sel)]"
                                       ".map(e => e.textContent)) !== before", arg=[probe, json.dumps(before)],
                                       timeout=30_000, polling=10)
                ts.append(time.perf_counter() - t)  # the figure shows the new cut
                page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]') && "
                                       "!document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                       timeout=30_000, polling=10)
                done.append(time.perf_counter() - t)  # the rerun has ended: nothing on the page is stale
                time.sleep(0.3)
            out[name] = {"figure redrawn": _stats(ts), "rerun ended": _stats(done)}
        br.close()
    return out


if __name__ == "__main__":
    import platform
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.processor())
    res = {"machine": cpu}
    if "--browser-only" not in sys.argv:
        res["figures"] = figures()
    if "--browser" in sys.argv or "--browser-only" in sys.argv:
        res["browser"] = browser()
    print(json.dumps(res, indent=1))
