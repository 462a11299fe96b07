"""Shared by the pages: cached library calls, the active model, the recipe in session state and URL."""
import dataclasses
import hashlib
import tempfile
import threading
from pathlib import Path

import streamlit as st

import compress as C

FIELDS = {f.name: f for f in dataclasses.fields(C.Recipe)}
KEY = "r_"  # widget keys of recipe fields: r_rank_mode, r_rank, ... (kept alive across pages by app.py)
LIVE = {"batch": 8, "seq": 32}      # live latency: a few seconds on 2 cores
PRECISE = {"batch": 8, "seq": 128}  # the library's default workload
MAX_HEALED = 3  # healed models kept per session (the shared cache never holds them: they depend on the text)


@st.cache_resource(show_spinner="Loading the bundled model...")
def bundled(name: str) -> C.ModelBundle:
    return C.load_model(name)


def page() -> C.ModelBundle:
    """Top of every page: make sure app.py (the router and sidebar) runs, and return the active model.

    Streamlit runs a process's first session through its legacy pages/ discovery when a pages/ folder
    exists (until st.navigation is called once), which would run this page without app.py.
    """
    from streamlit.runtime.pages_manager import PagesManager
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False  # from the next run on, app.py routes
        setup()
    return active()


def setup():
    """What app.py does before routing: session state, keep-alive of widget values, the sidebar."""
    init_state()
    for k in list(st.session_state):  # keep widget values alive while their page is not shown
        if k.startswith(KEY) or k == "model_choice":
            st.session_state[k] = st.session_state[k]
    sidebar()
    if st.session_state.get("url_error"):
        st.warning(st.session_state.url_error)


def active() -> C.ModelBundle:
    """The model picked in the sidebar: bundled (shared, cached) or loaded by this session."""
    kind, key = st.session_state.get("active", ("bundled", "minilm"))
    return bundled(key) if kind == "bundled" else st.session_state["loaded"][key]


def model_key(bundle) -> str:
    return f"{bundle.name}:{bundle.content_hash}"


@st.cache_resource(max_entries=6, show_spinner="Compressing...")
def compressed(key: str, recipe_json: str, _base) -> C.ModelBundle:
    """Keyed by (model, recipe): sessions share a compressed model only when they asked for the same one."""
    return C.compress(_base, C.Recipe.from_json(recipe_json))


def get_compressed(b, recipe: C.Recipe) -> C.ModelBundle | None:
    """The compressed model for this recipe: shared cache, or this session's healed ones (None: not healed yet)."""
    if recipe.heal_steps:
        return st.session_state.healed.get((model_key(b), recipe.to_json()))
    return compressed(model_key(b), recipe.to_json(), b)


def heal_text_changed():
    """The user's own healing text: its sha256 goes into the recipe (heal_corpus), its lines to the healer."""
    f = st.session_state.heal_file
    st.session_state.heal_texts, st.session_state[KEY + "heal_corpus"] = None, ""
    if f is None:
        return
    try:
        texts = [t.strip() for t in f.getvalue().decode("utf-8").splitlines() if t.strip()]
    except UnicodeDecodeError:
        st.session_state.heal_error = f"{f.name} is not UTF-8 text"
        return
    if len(texts) < 20:
        st.session_state.heal_error = f"{f.name} has {len(texts)} non-empty lines; healing needs at least 20"
        return
    st.session_state.heal_texts = texts
    st.session_state[KEY + "heal_corpus"] = hashlib.sha256("\n".join(texts).encode()).hexdigest()


def start_healing(b, recipe: C.Recipe, minutes: float):
    """Heal in a background thread (widget clicks rerun the page, not the thread); heal_progress polls it."""
    job = {"key": (model_key(b), recipe.to_json()), "stop": threading.Event(), "progress": {}, "bundle": None,
           "error": None}
    texts = st.session_state.get("heal_texts")

    def run():  # no streamlit calls in here: it runs outside the script thread
        try:
            job["bundle"] = C.compress(b, recipe, texts=texts, minutes=minutes, stop=job["stop"],
                                       progress=lambda p: job["progress"].update(p))
        except Exception as e:  # noqa: BLE001 - shown to the user; the app keeps running
            job["error"] = str(e) if isinstance(e, C.CompressError) else f"{type(e).__name__}: {e}"
    job["thread"] = threading.Thread(target=run, daemon=True)
    job["thread"].start()
    st.session_state.heal_job = job


@st.fragment(run_every=1.0)
def heal_progress():
    job = st.session_state.get("heal_job")
    if job is None:
        return
    if job["thread"].is_alive():
        p = job["progress"]
        if "layer" in p and "step" not in p:  # budget + sensitivity: each layer is measured before healing
            st.progress(p["done"] / p["total"], text=f"Measuring sensitivity: layer {p['done']}/{p['total']}")
            return
        done = p.get("step", 0) / max(1, p.get("steps", 1))
        dev = f", dev {p['dev']:.4f}" if isinstance(p.get("dev"), float) else ""
        loss = f", loss {p['loss']:.4f}" if isinstance(p.get("loss"), float) else ""
        st.progress(min(1.0, done), text=f"Healing: step {p.get('step', 0)}/{p.get('steps', '?')}{loss}{dev}, "
                                          f"about {p.get('seconds_left', 0):.0f} s left")
        if st.button("Stop (keeps the best state so far)", key="heal_stop"):
            job["stop"].set()
        return
    st.session_state.heal_job = None
    if job["error"]:
        st.session_state.heal_error = job["error"]
    else:
        healed = st.session_state.healed
        healed[job["key"]] = job["bundle"]
        while len(healed) > MAX_HEALED:  # a healed model is a whole model: keep this session's memory bounded
            healed.pop(next(iter(healed)))
        st.session_state.auto_apply = True  # measure and show it on the full rerun
    st.rerun()


@st.cache_data(max_entries=64, show_spinner="Measuring size...")
def sizes(key: str, recipe_json: str, _bundle) -> dict:
    return C.numbers(_bundle)


@st.cache_data(max_entries=64, show_spinner="Measuring quality on the held-out set...")
def size_and_quality(key: str, recipe_json: str, _bundle, _base) -> dict:
    return {**sizes(key, recipe_json, _bundle), "quality": C.quality(_bundle, _base)}


def recipe_from_params(params) -> C.Recipe | None:
    """The recipe in the URL (?rank_mode=ratio&rank=0.5&quant=int8), or None when it holds none."""
    d = {}
    for k, f in FIELDS.items():
        if k in params:
            v = params[k]
            if isinstance(f.default, bool):
                d[k] = v.lower() in ("1", "true", "yes")
            elif k == "heads":  # K or a per-layer list K1,K2,...
                hs = [int(x) for x in v.strip("[]() ").split(",")]
                d[k] = hs[0] if len(hs) == 1 else hs
            else:
                d[k] = type(f.default)(v)
    return C.Recipe.from_dict(d) if d else None


def init_state():
    """First run of a session: widget values from the URL's recipe (a shared link), else defaults."""
    if "init" in st.session_state:
        return
    st.session_state.init = True
    st.session_state.history = []
    st.session_state.loaded = {}
    st.session_state.healed = {}  # (model key, recipe JSON) -> healed bundle of this session
    try:
        recipe = recipe_from_params(st.query_params) or C.Recipe()
    except (ValueError, C.CompressError) as e:
        st.session_state.url_error = f"The recipe in the link was ignored: {e}"
        recipe = C.Recipe()
    for k, v in recipe.to_dict().items():
        st.session_state[KEY + k] = tuple(v) if isinstance(v, list) else v
    if st.query_params.get("model") in C.BUNDLED:
        st.session_state.model_choice = st.query_params["model"]


def current_recipe() -> C.Recipe:
    """The recipe the widgets describe (raises CompressError for an impossible combination)."""
    return C.Recipe.from_dict({k: st.session_state[KEY + k] for k in FIELDS if KEY + k in st.session_state})


def put_in_url(bundle, recipe: C.Recipe):
    params = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in recipe.to_dict().items()}
    if bundle.name in C.BUNDLED:
        params["model"] = bundle.name
    st.query_params.from_dict(params)


def rank_controls():
    """Rank mode + value: the same widgets (same keys) on the Spectra and Compress pages."""
    st.radio("Rank mode", C.RANK_MODES, key=KEY + "rank_mode", horizontal=True,
                         help="ratio: r = X * min(m, n) per layer (the article's dim_ratio). energy: the smallest r "
                              "keeping X of sum(S^2). budget: X of the dense params, spent where singular values "
                              "carry most energy per parameter.")
    st.slider("Rank X", 0.02, 1.0, step=0.01, key=KEY + "rank",
              disabled=st.session_state.get(KEY + "rank_mode") == "none")


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _try_load(kind: str, key: str, load):
    """Load into this session; on any bad input show the library's message and keep the current model."""
    try:
        with st.spinner("Loading and checking the model..."):
            st.session_state.loaded[key] = load()
        st.session_state.active = (kind, key)
        st.session_state.load_error = None
    except C.CompressError as e:
        st.session_state.load_error = str(e)


def _upload_changed():
    f = st.session_state.upload
    if f is None:
        return
    data = f.getvalue()
    key = "upload:" + hashlib.sha256(data).hexdigest()[:16]
    if key in st.session_state.loaded:
        st.session_state.active = ("upload", key)
        return

    def load():
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / Path(f.name).name
            path.write_bytes(data)
            return C.load_upload(path)
    _try_load("upload", key, load)


def sidebar():
    with st.sidebar:
        st.header("Model")
        source = st.radio("Source", ["Bundled", "Upload a zip", "Local folder"], horizontal=True, key="model_source")
        if source == "Bundled":
            choice = st.selectbox("Bundled model", list(C.BUNDLED), key="model_choice")
            st.session_state.active = ("bundled", choice)
        elif source == "Upload a zip":
            st.file_uploader(f"Hugging Face model folder as .zip (config.json + *.safetensors, at most "
                             f"{C.MAX_UPLOAD_BYTES // 2**20} MB)", type=["zip"], key="upload", on_change=_upload_changed)
        elif st.get_option("server.address") in ("localhost", "127.0.0.1"):
            path = st.text_input("Folder on this machine", key="local_path")
            if st.button("Load folder") and path:
                _try_load("local", "local:" + path, lambda: C.load_upload(path))
        else:
            st.info("Local folders are offered only when the server listens on localhost.")
        if st.session_state.get("load_error"):
            st.error(f"Could not load that model: {st.session_state.load_error}")
        bundle = active()
        st.caption(f"Active: **{bundle.name}** ({bundle.info['architecture']}, {bundle.task})")
