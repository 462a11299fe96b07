"""A sweep's trial opened on the Compress page (a frontier click, the trial picker, the best recipe found): the
numbers the sweep measured, read from the results store and shown at once, marked as the sweep's, with Apply to
measure it again here; likewise an earlier Apply of the recipe a shared link opens. Nothing is measured to show them."""
import streamlit as st

import compress as C
from compress.measure import metrics
from ui import cached, guide, safe

SKIP = ("size_bytes",)  # the same as size_mb, in bytes


# the page back at its top, and kept there while it is drawn (8 s; under load CI's stayed 1,602 px down after resets at
# 0-2.5 s), unless the reader scrolls, clicks or types first; the timer outlives a rerun that removes the element
TO_TOP = ("<script>(() => { const top = () => { for (const e of document.querySelectorAll('*')) if (e.scrollTop > 0) "
          "e.scrollTop = 0; }; const id = setInterval(top, 200); const stop = () => clearInterval(id); top(); "
          "setTimeout(stop, 8000); for (const ev of ['wheel', 'touchstart', 'keydown', 'mousedown']) "
          "document.addEventListener(ev, stop, {once: true, capture: true}); })();</script>")


def keep(b, study: str, row: dict) -> None:
    """The trial the Trade-offs page opens: its row of the store (frontier.rows), for the Compress page."""
    st.session_state.sweep_trial = {"model": cached.model_key(b), "study": study, "row": dict(row)}
    st.session_state.trial_to_top = True  # the Compress page opens at its top (it kept the Trade-offs page's scroll)


def of(b, recipe) -> dict | None:
    """The opened trial, if it is of this model and this recipe (a control moved since: it no longer is)."""
    t = st.session_state.get("sweep_trial")
    if not t or t["model"] != cached.model_key(b):
        return None
    try:
        return t if C.Recipe.from_json(t["row"].get("recipe") or "{}") == recipe else None
    except C.CompressError:  # a store written by another version: not this recipe
        return None


def text(name: str, v: float) -> str:
    """A metric's value as the page writes it."""
    m = metrics.METRICS.get(name)
    if m is None or m.kind == "quality":
        return f"{v:.4f}"
    if m.unit == "x":
        return f"{v:.2f}x"
    if name == "params":
        return f"{v / 1e6:.2f} M"
    return f"{v:,.2f} {m.unit}".strip()


def numbers(row: dict) -> list[tuple[str, str]]:
    """(label, value) of every metric the trial has, in the metrics table's order, then its other quality keys."""
    names = [n for n in metrics.METRICS if n not in SKIP] + \
        [k for k in row if k not in metrics.METRICS and k.startswith(("fidelity", "retrieval", "neighbour"))]
    return [(metrics.label(n), text(n, row[n])) for n in names if isinstance(row.get(n), (int, float))
            and not isinstance(row.get(n), bool)]


def _again():
    st.session_state.auto_apply = True  # the Apply button's run, on the rerun this click starts


def show(t: dict) -> None:
    """The trial's stored numbers, the verdict on its quality, and Apply to measure it again here."""
    row = t["row"]
    if st.session_state.pop("trial_to_top", False):  # our own constant script, nothing of the page's data in it:
        st.html(TO_TOP, unsafe_allow_javascript=True)
    st.subheader(f"Measured by the sweep: {C.Recipe.from_json(row['recipe']).ran(row)}", anchor="result")
    where = ", ".join(str(row[k]) for k in ("workload", "cpu") if row.get(k)) + \
        (f", {row['threads']} thread(s)" if row.get("threads") else "")
    st.info(f"Measured by the sweep **{safe.plain(t['study'])[:120]}**, trial {row['trial']}"
            + (f" ({safe.plain(where)})" if where else "") + ": the results store's numbers, shown without measuring "
            "again" + ("; its latency was re-measured once as a frontier point" if "latency_ms_first" in row else "")
            + ". Apply measures it again on this machine, with the sample outputs, the per-layer report and the "
              "download.")
    guide.verdict_line(row)
    got = numbers(row)
    for i in range(0, len(got), 3):  # three a row: at four, "x smaller than the original" was cut to "the ori…"
        for col, (label, v) in zip(st.columns(3), got[i:i + 3]):
            col.metric(label, v, help=label)
    st.button("Apply: measure it again here", type="primary", key="trial_apply", on_click=_again)


def stored(b, recipe, session: str) -> bool:
    """The newest Apply of this model and this recipe in the results store, said at once: a shared link's receiver
    sees the sender's numbers without healing again. A bundled model's rows are those recorded under its name (an
    upload is never named so: an upload of MiniLM's weights with another config showed its numbers as MiniLM's);
    an upload's only from its own session; both of the same weights' hash; a healing that ran all its steps (one cut
    short by another time cap is another model). False when there is none, or the store cannot be read."""
    if recipe == C.Recipe():
        return False
    try:
        rows = C.applies(None if b.name in C.BUNDLED else session, model=b.name)
    except C.CompressError:
        return False
    for r in rows:
        try:
            if r.get("model_hash") == b.content_hash and C.Recipe.from_json(r["recipe_json"]) == recipe and (
                    not recipe.heal_steps or r.get("heal steps run") == recipe.heal_steps):
                break  # (a healing its time cap or Stop cut short is not this recipe's: 12 of 400 steps run)
        except C.CompressError:  # a row written by another version
            continue
    else:
        return False
    try:
        fast = f"{float(r['x faster']):g}x faster (timing {safe.plain(r['timing'])[:80]})" if r.get("x faster") else ""
        said = [safe.plain(r["recipe"])[:200], cached.mb(float(r["size MB"]) * 1e6),  # (the page's format)
                f"{float(r['x smaller']):g}x smaller",
                *([fast] if fast else []), *(f"{metrics.label(k)} {v:.4f}" for k, v in r.items() if k in metrics.METRICS
                                             and metrics.METRICS[k].kind == "quality" and isinstance(v, float))]
    except (KeyError, TypeError, ValueError):  # a row of another shape
        return False
    st.info(f"**Measured here before** ({r['when']}, {'this' if r['session'] == session[:8] else 'another'} "
            f"session, {safe.plain(r.get('workload') or '')[:40]}): " + "; ".join(said) + ". The results store's "
            "numbers, not measured now: Apply measures it again here, with the sample outputs, the per-layer report "
            "and the download.")
    return True
