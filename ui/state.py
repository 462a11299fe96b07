"""Session state: the active model, the recipe the widgets hold (keys r_<field>), and the recipe in the URL."""
import streamlit as st

import compress as C
from ui import cached

KEY = "r_"  # widget keys of recipe fields: r_rank_mode, r_rank, ... (kept alive across pages by setup())


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
    if st.query_params.get("model") in C.BUNDLED:
        st.session_state.model_choice = st.query_params["model"]


def set_recipe(recipe: C.Recipe):
    """The recipe into the widgets' session keys (a link's, or a trial's from the Trade-offs page)."""
    for k, v in recipe.to_dict().items():
        st.session_state[KEY + k] = tuple(v) if isinstance(v, list) else v


def values() -> dict:
    """The recipe fields as the widgets hold them (maybe an impossible combination)."""
    return {k: st.session_state.get(KEY + k, f.default) for k, f in C.FIELDS.items()}


def current_recipe() -> C.Recipe:
    """The recipe the widgets describe (raises CompressError for an impossible combination)."""
    return C.Recipe.from_dict(values())


def put_in_url(bundle, recipe: C.Recipe):
    params = recipe.to_params()
    if bundle.name in C.BUNDLED:
        params["model"] = bundle.name
    st.query_params.from_dict(params)
