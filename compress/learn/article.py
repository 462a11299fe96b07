"""The source article's claims next to what this machine measures: one recipe per technique the article describes,
its claimed size and speed gains (cited constants), and the measured row (pipeline.row) read from the results store's
Apply history, or measured here (measure) and written there so the next reader finds it."""

from ..table import pipeline
from ..measure.metrics import METRICS
from ..serve import store
from ..errors import CompressError
from ..table.recipe import Recipe
from ..table.steps import refusal
from ..techniques.heads import allowed_heads

ARTICLE = "Compressing transformers: simple, universal and applied ways to make them compact and fast"
WORKLOAD = {"batch": 8, "seq": 32}  # the Compress page's live workload: a few seconds per recipe on 2 cores

# technique -> (claimed size x, claimed speed x: (low, high) or None when the article gives none, the caveat)
CLAIMS = {
    "fewer heads + narrower FFN": ((2, 2), (2, 3), "quality drops; heal (fine-tune) afterwards"),
    "dynamic int8": ((4, 4), (2, 2), "small quality loss; CPU only"),
    "SVD factorization (spectral init)": ((2, 4), None, "definitely needs fine-tuning"),
    "FNet": ((2, 2), None, "needs fine-tuning: the model was trained with attention"),
    "freezing (inference mode / torch.jit freeze)": (None, (1.15, 1.25), "no quality change"),
    "all stacked": ((8, 10), (8, 10), "'almost an order of magnitude'; quality needs healing"),
}


def recipes(bundle) -> dict[str, Recipe]:
    """The recipe that stands for each technique on this model (half the heads and half the FFN; rank 0.25 of
    min(m, n); the stack: both halvings, rank 0.5, int8 and freeze). Half the heads: the nearest count the model can
    keep (grouped-query attention: SmolLM's 9 query heads over 3 k/v heads keep 3, 6 or 9, so 3)."""
    h = bundle.info["heads"]
    half = min(allowed_heads(h, bundle.info.get("kv_heads", h)), key=lambda k: (abs(k - h / 2), k))
    return {"fewer heads + narrower FFN": Recipe(heads=half, ffn=0.5),
            "dynamic int8": Recipe(quant="int8"),
            "SVD factorization (spectral init)": Recipe(rank_mode="ratio", rank=0.25),
            "FNet": Recipe(fnet=True),
            "freezing (inference mode / torch.jit freeze)": Recipe(runtime="freeze"),
            "all stacked": Recipe(heads=half, ffn=0.5, rank_mode="ratio", rank=0.5, quant="int8", runtime="freeze")}


def stored(bundle, rows: list[dict] | None = None) -> dict[str, dict]:
    """The newest Apply of each technique's recipe on this model in the results store (every session's) whose timing
    was reliable, else the newest (a busy machine's 0.8x must not grade the article over an idle one's 1.7x)."""
    rows = store.applies(None, limit=2000) if rows is None else rows
    want = {r.to_json(): t for t, r in recipes(bundle).items()}
    out = {}
    for row in rows:  # newest first
        t = want.get(row.get("recipe_json"))
        if t and row.get("model") == bundle.name and (t not in out or not _reliable(out[t]) and _reliable(row)):
            out[t] = row
    return out


def _reliable(row: dict) -> bool:
    return not str(row.get("timing", "")).startswith("unreliable")


def measure(bundle, progress=None, only=None) -> dict[str, dict]:
    """Compress and measure each technique's recipe here (size, interleaved latency, quality), or those named in
    `only`: {technique: row}; a recipe this model refuses gets {"skipped": reason}."""
    out, todo = {}, {t: r for t, r in recipes(bundle).items() if only is None or t in only}
    for i, (t, r) in enumerate(todo.items()):
        why = refusal(bundle, r)
        if why:
            out[t] = {"skipped": why}
        else:
            comp = pipeline.compress(bundle, r)
            rep = pipeline.report(bundle, comp, WORKLOAD["batch"], WORKLOAD["seq"], 7)
            lat = {k: rep[k]["latency_ms"] for k in ("original", "compressed")}
            out[t] = {**pipeline.row(rep["original"], rep["compressed"], lat, r), "recipe": r.describe(),
                      "workload": f"{WORKLOAD['batch']}x{WORKLOAD['seq']}", "recipe_json": r.to_json()}
        if progress is not None:
            progress((i + 1) / len(todo))
    return out


def _say(what: str, got: float | None, claim) -> str:
    if claim is None:
        return f"the article claims no {what} gain"
    if got is None:
        return "not measured yet"
    lo, hi = claim
    said = f"~{lo:g}x" if lo == hi else f"{lo:g}-{hi:g}x"
    if got < lo * 0.85:
        return f"{got:.2f}x {what}: below the claimed {said}"
    if got > hi * 1.15:
        return f"{got:.2f}x {what}: more than the claimed {said}"
    return f"{got:.2f}x {what}: as claimed ({said})"


def table(bundle, measured: dict[str, dict]) -> list[dict]:
    """One row per technique: the claim and the measurement side by side, and the difference in plain words."""
    rows = []
    for t, (size, speed, caveat) in CLAIMS.items():
        m = measured.get(t, {})
        fmt = lambda c: "-" if c is None else (f"~{c[0]:g}x" if c[0] == c[1] else f"{c[0]:g}-{c[1]:g}x")  # noqa: E731
        quality = {k: v for k, v in m.items() if k in METRICS and METRICS[k].kind == "quality"}
        if "skipped" in m:
            words = f"does not apply to {bundle.name}: {m['skipped']}"
        elif not m:
            words = "not measured yet"
        else:
            words = "; ".join([_say("smaller", m.get("x smaller"), size), _say("faster", m.get("x faster"), speed)]) \
                + ("" if _reliable(m) else f" (timing {m['timing']}: the speed is not the CPU's own)")
        rows.append({"technique": t, "claimed size": fmt(size),  # each claim beside its measurement (a phone
                     "measured size": f"{m['x smaller']:.2f}x" if "x smaller" in m else "-",  # showed the claims only)
                     "claimed speed": fmt(speed),
                     "measured speed": (f"{m['x faster']:.2f}x" + ("" if _reliable(m) else " (unreliable)"))
                     if "x faster" in m else "-",
                     "measured quality": ", ".join(f"{k} {v:.3f}" for k, v in quality.items()) or "-",
                     "in plain words": words, "article's caveat": caveat, "recipe": recipes(bundle)[t].describe()})
    return rows


def record(owner: str, bundle, measured: dict[str, dict]) -> None:
    """Each measured row into the results store's Apply history (so stored() finds it next time)."""
    for t, row in measured.items():
        if "skipped" not in row:
            store.record_apply(owner, bundle.name, row["recipe_json"],
                               {k: v for k, v in row.items() if k != "recipe_json"})


def recipe_of(bundle, technique: str) -> Recipe:
    if technique not in CLAIMS:
        raise CompressError(f"unknown technique {technique!r}")
    return recipes(bundle)[technique]
