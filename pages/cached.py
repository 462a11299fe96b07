"""Library calls the app caches, with their bounds (README: caches): shared originals (cache_resource), the model
card's sizes (cache_data), this session's healed models; compressed models live in the library's shared cache."""
import streamlit as st

import compress as C

MAX_HEALED = 3  # healed models kept per session (the shared cache never holds them: they depend on the text)


@st.cache_resource(show_spinner="Loading the bundled model...")
def bundled(name: str) -> C.ModelBundle:
    return C.load_model(name)


def model_key(bundle) -> str:
    return f"{bundle.name}:{bundle.content_hash}"


def get_compressed(b, recipe: C.Recipe) -> C.ModelBundle | None:
    """The compressed model for this recipe: the library's shared cache (compressed on a miss), or this session's
    healed ones (None: not healed yet)."""
    if recipe.heal_steps:
        return st.session_state.healed.get((model_key(b), recipe.to_json()))
    return C.compressed_model(b, recipe)


def keep_healed(key, bundle) -> None:
    healed = st.session_state.healed
    healed[key] = bundle
    while len(healed) > MAX_HEALED:  # a healed model is a whole model: keep this session's memory bounded
        healed.pop(next(iter(healed)))


@st.cache_data(max_entries=64, show_spinner="Measuring size...")
def sizes(key: str, recipe_json: str, _bundle) -> dict:
    return C.numbers(_bundle)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
