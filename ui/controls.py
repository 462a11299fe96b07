"""The Compress page's controls, generated from the technique table (compress.STEPS): a widget per field by its
kind, its label, range and help from the table, greyed out with the reason the library gives (field_reason). The few
steps a newcomer needs come first (FIRST); every other step of the table folds into one expander."""
import streamlit as st

import compress as C
from ui import jobs
from ui.learn_common import SECTIONS, STEP_SECTION
from ui.safe import plain
from ui.state import CAP, HELD, KEY, MINUTES, values

# shown first, in this order (issue 25: quantization, layers, heads, rank, healing); a step the table gains later
# lands in the folded "More techniques" on its own
FIRST = ("int8", "int4", "half", "layers", "heads", "factorize", "heal")


def control(name: str, b, where=st) -> str | None:
    """One widget for Recipe field `name` (session key r_<name>), for model b; returns why it is greyed out."""
    f, key = C.FIELDS[name], KEY + name
    why = C.field_reason(name, b, values())
    held = st.session_state.setdefault(HELD, {})  # key -> (value, greyed out) as this control was last shown
    if held.get(key, (None, False))[1] and st.session_state.get(key, f.default) != held[key][0]:  # it was greyed out:
        st.session_state[key] = held[key][0]  # not moved by the user; its browser sent back a value a preset had reset
        why = C.field_reason(name, b, values())
    held[key] = (st.session_state.get(key, f.default), bool(why))
    kw = {"key": key, "disabled": bool(why), "help": f"{f.help}. Disabled: {plain(why)}." if why else f.help,
          "persist_state": "session"}  # else Streamlit drops the value on a page switch: a link's recipe was lost
    if f.kind in ("count", "counts"):
        n = b.info[f.most]
        v = st.session_state.get(key, 0)
        if isinstance(v, tuple):  # a per-block list (from a link or the CLI): shown, not edited by a slider
            where.info(f"{f.label} (from the link): {list(v)}")
            return why
        counts = [k for k in (f.allowed(b) if f.allowed else range(1, n)) if k < n] + [0]  # (GQA: equal groups)
        if v == n:  # all n (a sweep's default range ends at n): the slider's "all" option, the same recipe
            st.session_state[key], held[key] = 0, (0, bool(why))
        elif v > n:  # from a link or another model: a count this model cannot take
            st.session_state[key], held[key] = 0, (0, bool(why))
            where.info(f"{name} = {v} does not fit {b.name}, which has {n} {f.unit}: set back to all.")
        elif 0 < v < n and v not in counts:  # a count this model refuses (grouped-query attention: unequal groups)
            st.session_state[key], held[key] = 0, (0, bool(why))
            where.info(f"{C.refusal(b, C.Recipe(**{name: v}))}: set back to all.")
        where.select_slider(f.label, counts, format_func=lambda v: f"all {n}" if v == 0 else str(v),
                            **{**kw, "disabled": kw["disabled"] or n < 2})
    elif f.kind == "fraction":  # a value from a link may lie below the slider's usual range: the range grows to it
        where.slider(f.label, min(f.lo, st.session_state.get(key, f.default)), 1.0, step=f.step, **kw)
    elif f.kind == "bool":
        where.checkbox(f.label, **kw)
    elif f.kind == "choice":
        fmt = {"format_func": f.fmt} if f.fmt else {}
        if f.widget == "select":
            where.selectbox(f.label, f.choices, **fmt, **kw)
        else:
            where.radio(f.label, f.choices, horizontal=True, **fmt, **kw)
    elif f.kind == "float" and f.choices:
        options = sorted({*f.choices, st.session_state.get(key, f.default)})
        where.select_slider(f.label, options, format_func=f.fmt or str, **kw)
    elif f.kind == "int":
        where.number_input(f.label, int(f.lo), int(f.hi), step=int(f.step), **kw)
    return why


def _shown(reasons) -> list[str]:  # "only with int8/int4" is said by the greyed control itself
    return [r for r in dict.fromkeys(reasons) if r and not r.startswith("only with")]


def caption(step, reasons, text: str | None = None) -> None:
    """A step's teaching text (or `text`), why its controls are greyed out by the model or the other fields, and a
    link to the Learn page's section that shows the technique working (learn_common.STEP_SECTION)."""
    st.caption((step.teach if text is None else text) + "".join(f" Disabled: {plain(r)}." for r in _shown(reasons)))
    slug = STEP_SECTION.get(step.name)
    if slug:
        st.page_link("ui/pages/learn.py", label=f"See it on the model: Learn, {SECTIONS[slug][0]}",
                     icon=":material/school:", query_params={"section": slug})


def _recipe():
    try:
        return C.Recipe.from_dict(values())
    except C.CompressError:  # an impossible combination: the page says so in one line beside Apply
        return None


def step_controls(step, b) -> None:
    """A step's controls, then its caption. Steps that are values of one field (Quantization: int8, int4, fp16 /
    bf16) teach only the value chosen; with none chosen, one line names the values."""
    why = [control(f.name, b) for f in step.fields if f.label]
    r = _recipe()
    if not step.selects or _shown(why) or (r is not None and step.is_active(r)):
        caption(step, why)
    elif step.fields and r is not None and getattr(r, step.selects[0]) == C.FIELDS[step.selects[0]].default:
        f = C.FIELDS[step.selects[0]]  # the table's field: the values every selecting step adds
        caption(step, why, f"{f.label}: choose one of {', '.join(str(c) for c in f.choices if c != f.default)} "
                           "to read what it stores and where it runs.")


def heal_controls(step, b) -> float:
    """Healing's controls: steps, learning rate, seed, the time cap, which text, the user's own; returns the cap."""
    why = control("heal_steps", b)
    h1, h2, h3 = st.columns(3)
    control("heal_lr", b, h1)
    control("heal_seed", b, h2)
    st.session_state.setdefault(MINUTES, 5.0)  # (a preset or a link sets it: no value= here, no Session State clash)
    minutes = h3.number_input("time cap (min)", *CAP, step=0.5, key=MINUTES)
    control("heal_text", b)
    control("heal_relations", b)
    control("heal_hidden", b)
    st.file_uploader(f"Heal on your own text (.txt, one sentence or paragraph per line; at most "
                     f"{C.MAX_HEAL_BYTES >> 20} MB)", key="heal_file",
                     max_upload_size=C.MAX_HEAL_BYTES >> 20, on_change=jobs.heal_text_changed)
    caption(step, [why])
    return minutes


def folded_label(rest) -> str:
    """The expander's label: what it holds, and which of its steps the recipe uses (a link's, a preset's)."""
    r = _recipe()
    used = [s.describe(r) for s in rest if r is not None and s.is_active(r)]
    return "More techniques" + (f" (in this recipe: {', '.join(used)})" if used else
                                f": {', '.join(s.title for s in rest if s.fields)}")


def recipe_controls(b) -> float:
    """Every step's controls, FIRST first, the rest folded; returns healing's time cap (minutes)."""
    by = {s.name: s for s in C.STEPS}
    minutes = 5.0
    for name in FIRST:
        if by[name].trains:
            minutes = heal_controls(by[name], b)
        else:
            step_controls(by[name], b)
    rest = [s for s in C.STEPS if s.name not in FIRST]
    with st.expander(folded_label(rest), key="more_steps"):
        for step in rest:
            step_controls(step, b)
    return minutes
