"""Library calls the app caches, with their bounds (README: caches): shared originals (cache_resource), the model
card's sizes (cache_data), this session's healed models; compressed models live in the library's shared cache."""
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


@st.cache_data(max_entries=64, show_spinner="Measuring size...")
def sizes(key: str, recipe_json: str, _bundle) -> dict:
    from ui import jobs  # (jobs imports this module)
    return jobs.quiet("sizes", lambda: C.numbers(_bundle), f"sizes of {_bundle.name}")
