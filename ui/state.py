"""Session state: the active model, the recipe the widgets hold (keys r_<field>), and the recipe in the URL."""
import streamlit as st

import compress as C
from ui import cached

KEY = "r_"  # widget keys of recipe fields: r_rank_mode, r_rank, ... (kept alive across pages by setup())
HELD = "held_values"  # each recipe control's value as the server last set or showed it, and whether greyed out
MINUTES, CAP = "heal_minutes", (0.5, 60.0)  # healing's time cap (minutes): its widget key and link parameter, its range
UPLOAD = "upload"  # the URL's name of the uploaded model a page was on (init_state: a reload says it is gone)
HEALING = "healing"  # the URL's token of this tab's running healing (jobs.find_healing: a reload finds it again)


def active() -> C.ModelBundle:
    """The model picked in the sidebar: bundled (shared, cached) or loaded by this session."""
    kind, key = st.session_state.get("active", ("bundled", "minilm"))
    return cached.bundled(key) if kind == "bundled" else st.session_state["loaded"][key]


def init_state():
    """First run of a session: widget values from the URL's recipe (a shared link), else defaults."""
    if "init" in st.session_state:
        return
    st.session_state.init = True
    st.session_state.loaded = {}
    st.session_state.healed = {}  # (model key, recipe JSON) -> healed bundle of this session
    try:
        recipe = C.Recipe.from_params(st.query_params) or C.Recipe()
    except C.CompressError as e:
        st.session_state.url_error = f"The recipe in the link was ignored: {e}"
        recipe = C.Recipe()
    set_recipe(recipe)
    cap = st.query_params.get(MINUTES)
    if cap is not None:  # healing's time cap travels with its steps (a preset's 45 min: 5 would cut its healing short)
        try:
            minutes = float(cap)
        except ValueError:
            minutes = None
        if minutes is not None and CAP[0] <= minutes <= CAP[1]:
            st.session_state[MINUTES] = minutes
        else:
            st.session_state.url_error = (f"The link's healing time cap was ignored: {MINUTES} must be a number of "
                                          f"minutes from {CAP[0]:g} to {CAP[1]:g}")
    if st.query_params.get("model") in C.BUNDLED:
        st.session_state.model_choice = st.query_params["model"]
    elif st.query_params.get(UPLOAD):  # a reload (or a shared link) of a page on an upload: the upload is not here
        st.session_state.url_upload = str(st.query_params[UPLOAD])[:80]


def set_recipe(recipe: C.Recipe):
    """The recipe into the widgets' session keys (a link's, or a trial's from the Trade-offs page)."""
    held = st.session_state.setdefault(HELD, {})
    for k, v in recipe.to_dict().items():
        st.session_state[KEY + k] = tuple(v) if isinstance(v, list) else v
        held[KEY + k] = (st.session_state[KEY + k], False)  # (shown again below: its greying out is known then)


def values() -> dict:
    """The recipe fields as the widgets hold them (maybe an impossible combination)."""
    return {k: st.session_state.get(KEY + k, f.default) for k, f in C.FIELDS.items()}


def current_recipe() -> C.Recipe:
    """The recipe the widgets describe (raises CompressError for an impossible combination)."""
    return C.Recipe.from_dict(values())


def put_in_url(bundle, recipe: C.Recipe, minutes: float = 5.0):
    params = {k: v for k, v in recipe.to_params().items() if v != C.FIELDS[k].text(C.FIELDS[k].default)}  # (a link
    #  of the fields off their defaults: 33 fields spelled out made a shared link long and hard to read)
    if recipe.heal_steps and minutes != 5.0:  # (the default cap is left out, as the recipe's defaults are not)
        params[MINUTES] = f"{minutes:g}"
    if bundle.name in C.BUNDLED:
        params["model"] = bundle.name
    else:  # (an upload's name: a reload says which model to upload again)
        params[UPLOAD] = bundle.name[:80]
    if st.session_state.get("heal_job") is not None and st.session_state.get("heal_token"):
        params[HEALING] = st.session_state.heal_token
    st.query_params.from_dict(params)
