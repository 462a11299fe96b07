"""Library calls the app caches, with their bounds (README: caches): shared originals (cache_resource), the model
card's sizes (a bounded dict, measured on the queue),
this session's healed models; compressed models live in the library's shared cache."""
import threading

import streamlit as st

import compress as C
from compress.outputs.html import mb  # noqa: F401  (one format: the page's numbers read the same in the report)

MAX_HEALED = 3  # healed models kept per session (the shared cache never holds them: they depend on the text)


@st.cache_resource(show_spinner="Loading the bundled model...")
def bundled(name: str) -> C.ModelBundle:
    return C.load_model(name)


def model_key(bundle) -> str:
    """The same upload kept in bf16 and widened shares its weights' hash, not its sizes: the dtype tells them apart."""
    kept = "kept" in bundle.info.get("dtype", "")
    return f"{bundle.name}:{bundle.content_hash}" + (":kept" if kept else "")


def session_model(b, recipe: C.Recipe) -> C.ModelBundle | None:
    """This session's own model for this recipe: healed here or uploaded back (None: the shared cache's is used)."""
    return st.session_state.healed.get((model_key(b), recipe.to_json()))


def keep_healed(key, bundle) -> None:
    healed = st.session_state.healed
    healed[key] = bundle
    while len(healed) > MAX_HEALED:  # a healed model is a whole model: keep this session's memory bounded
        healed.pop(next(iter(healed)))


MAX_SIZES = 64  # models whose card numbers are kept (every session's: a few numbers each)
_SIZES: dict = {}  # model_key -> C.numbers(), oldest first
_SIZES_LOCK = threading.Lock()


def sizes(b) -> dict | None:
    """The card's size, params and size breakdown of model b: measured once per model as a job of the queue (a 1B
    model's two serializations take seconds: its progress and Cancel are shown), then kept for every session. None:
    cancelled or failed (the page was told in one line)."""
    from ui import jobs  # (jobs imports this module)
    key = model_key(b)
    n = _SIZES.get(key)
    if n is None:
        n = jobs.run("sizes", lambda job: C.numbers(b, progress=lambda f: job.progress.update(done=f)),
                     f"sizes of {b.name}", key=key)
        if n is not None:
            with _SIZES_LOCK:
                _SIZES[key] = n
                while len(_SIZES) > MAX_SIZES:
                    _SIZES.pop(next(iter(_SIZES)))
    return n
