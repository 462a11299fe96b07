"""What guides a newcomer on the Compress page: the presets (measured recipes, compress/table/presets.py), the verdict on
quality next to size and speed (compress/measure/verdict.py), and the lines that say what healing and the peer did."""
import streamlit as st

import compress as C
from compress.table import presets as P
from compress.measure.verdict import verdict
from compress.outputs import html
from compress.outputs.html import workload_text
from ui import cached, safe, state

PICK = "(choose a preset)"


def _use(b):
    name = st.session_state.get("preset")
    if name in P.BY_NAME:
        state.set_recipe(P.BY_NAME[name].build(b))
        if P.BY_NAME[name].minutes:  # the healing time cap its steps need (the default 5 min would cut them short)
            st.session_state["heal_minutes"] = P.BY_NAME[name].minutes


def presets(b) -> None:
    """A preset fills the controls with a measured recipe; one this model cannot take is shown with the reason."""
    why = {p.name: P.reason(p.name, b) for p in P.PRESETS}
    st.selectbox("Start from a preset", [PICK, *why], key="preset", on_change=_use, args=(b,),
                 format_func=lambda n: n if n == PICK or not why[n] else f"{n} (not for this model)",
                 help="Measured recipes: choosing one fills the controls below; Apply measures it here.")
    name = st.session_state.get("preset")
    if name in P.BY_NAME:
        p = P.BY_NAME[name]
        if why[name]:
            st.caption(f"{name} cannot apply to {b.name}: {safe.plain(why[name])}.")
        try:
            changed = state.current_recipe() != p.build(b)  # a control moved since: the numbers are not its own
        except C.CompressError:
            changed = True
        if changed:
            st.caption(f"The controls no longer hold {name}'s recipe (changed since it was chosen): these are the "
                       "preset's numbers, not the current recipe's.")
        if b.name != p.model:  # a decoder's 4x was 1.15x slower where MiniLM's caption said 1.7x faster
            st.caption(f"These are {p.model}'s numbers, not {b.name}'s: Apply measures it on {b.name}.")
        st.caption(f"Measured on {p.measured_on}: {p.gives}." + (f" Healing: {p.healing}." if p.healing else "")
                   + (f" Choosing it set healing's time cap to {p.minutes:g} min." if p.minutes else "")
                   + f" (BENCHMARKS.md, {p.source})")


def verdict_line(quality: dict, healed: bool = False) -> None:
    """Kept / some loss / large loss of these quality numbers, with the thresholds and what to try next."""
    v = verdict(quality, healed)
    if v is None:
        return
    say = st.success if v["verdict"] == "kept" else st.info if v["verdict"] == "some loss" else st.warning  # (not
    #  st.error: a large loss is a finding about the recipe, not an error of the page)
    say(f"Quality: **{v['verdict']}** ({C.metric_label(v['metric'])} {v['value']:.4f}; {v['rule']}). {v['hint']}")


ENDED = {"done": "all steps run", "Stop": "stopped by Stop", "time cap": "stopped by the time cap",
         "diverged": "stopped: the loss diverged"}  # heal.HealResult.ended, in words


ratio = html.ratio  # '4.00x smaller', '1.15x larger', 'about the same'


def timed_on(w) -> str:
    """' on token ids (8x32)': the workload a speed was timed on, or nothing where a result does not say it."""
    try:
        return f" on {workload_text(w)}"
    except (KeyError, TypeError):
        return ""


def glance(res: dict, recipe) -> str:
    """The last Apply in one line, beside the Apply button: size, speed (with its timing flag), the quality verdict;
    whether it is the recipe the controls hold now."""
    o, c, lo, lc = res["nums"]["original"], res["nums"]["compressed"], res["lat"]["original"], res["lat"]["compressed"]
    how, v = C.timing(lc, res["recipe"]), verdict(c["quality"])
    speed = "no change in speed (nothing chosen)" if how == "no change" else \
        ratio(lo["p50"] / lc["p50"], "faster", "slower") + timed_on(res.get("workload")) \
        + ("" if how == "reliable" else f" (timing {how})")  # (the presets' speeds name theirs: 8 x 128)
    return (f"**{res['recipe'].ran(res['applied'])}**"
            + ("" if res["recipe"] == recipe else " (the last applied; Apply for the controls' recipe)")
            + f": {cached.mb(c['size_bytes'])}, {ratio(o['size_bytes'] / c['size_bytes'], 'smaller', 'larger')}, "
            + speed
            + (f"; quality **{v['verdict']}** ({C.metric_label(v['metric'])} {v['value']:.4f})" if v else "")
            + ". [Details](#result)")


def heal_status(p: dict, planned: int, minutes: float) -> tuple[float, str]:
    """The healing bar while it runs (heal's progress dict): the steps run, of how many, under which time cap; before
    its first step it says what it is doing, never a step count or a time it has not measured."""
    cap = f"time cap {minutes:g} min"
    ran = p.get("step")
    if not isinstance(ran, int) and isinstance(p.get("labeled"), int) and isinstance(p.get("texts"), int):
        return 0.0, (f"Healing: the original labels the texts once, {p['labeled']:,} of {p['texts']:,} (up to 80% of "
                     f"the cap); 0 of {planned} steps run, {cap}")
    if not isinstance(ran, int):
        return 0.0, f"Healing: preparing (compressing, then the unhealed dev score); 0 of {planned} steps run, {cap}"
    nums = f", loss {p['loss']:.4f}" if isinstance(p.get("loss"), float) else ""
    if isinstance(p.get("dev"), float):  # measured every few steps: said with the step it was measured at
        nums += f", dev {p['dev']:.4f}" + (f" (at step {p['dev_step']})" if isinstance(p.get("dev_step"), int) else "")
    left = p.get("seconds_left")
    when = f"about {left:.0f} s left" if isinstance(left, (int, float)) and left >= 1 else "the final dev check"
    cap_left, per_step = p.get("cap_left"), p.get("per_step")  # before the time cap alone, and a step's seconds
    fits = ran + int(cap_left / per_step) if isinstance(cap_left, (int, float)) and isinstance(per_step, (int, float)) \
        and per_step > 0 else planned
    pace = f"; at this pace about {fits} of {planned} steps will run before the cap" if fits < planned else ""
    return min(1.0, ran / max(1, planned)), f"Healing: {ran} of {planned} steps run{nums}; {when} ({cap}){pace}"


def heal_line(h, planned: int | None = None) -> str:
    """What healing did, from this server's healing or an uploaded card (the uploader's JSON: any shape): the steps
    it ran, of how many, and why it stopped."""
    try:
        ran = int(h["steps_run"])
        why = ENDED.get(h.get("ended")) or ("stopped by Stop" if h.get("stopped") is True else  # (an older card's)
                                            "stopped by the time cap" if planned and ran < planned else "")
        return (f". Healed {ran}" + (f" of {planned}" if planned and ran != planned else "")
                + f" steps in {float(h['seconds']):.0f} s (best step {int(h['best_step'])}, "
                f"dev {safe.plain(h['metric'])[:40]} {float(h['dev_before']):.4f} -> {float(h['dev_after']):.4f}"
                + (f", {why})" if why else ")"))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return ". Its card does not say how it was healed."


def peer_line(p, o) -> None:
    """What a user would pick instead, measured in the same job: ONNX Runtime's int8 of the original."""
    pc, pl = p["nums"]["compressed"], p["lat"]
    how = p["applied"].get("runtime_setting") or f"fell back to eager: {p['applied'].get('runtime_reason', '')}"
    flag = C.timing(pl["compressed"])
    st.caption(f"**Peer**, what a user would pick instead: ONNX Runtime int8 of the original ({how}): "
               f"{cached.mb(pc['size_bytes'])} ({ratio(o['size_bytes'] / pc['size_bytes'], 'smaller', 'larger')}), "
               f"p50 {pl['compressed']['p50']:.1f} ms "
               f"({ratio(pl['original']['p50'] / pl['compressed']['p50'], 'faster', 'slower')} than "
               f"the original in its own interleaved run{'' if flag == 'reliable' else '; timing ' + flag}), "
               + ", ".join(f"{C.metric_label(k)} {v:.4f}" for k, v in pc["quality"].items()) + ".")
