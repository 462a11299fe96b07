"""Library calls the app caches, with their bounds (README: caches): shared originals and compressed models
(cache_resource), measured numbers (cache_data), and this session's healed models."""
import streamlit as st

import compress as C

MAX_HEALED = 3  # healed models kept per session (the shared cache never holds them: they depend on the text)


@st.cache_resource(show_spinner="Loading the bundled model...")
def bundled(name: str) -> C.ModelBundle:
    return C.load_model(name)


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


def keep_healed(key, bundle) -> None:
    healed = st.session_state.healed
    healed[key] = bundle
    while len(healed) > MAX_HEALED:  # a healed model is a whole model: keep this session's memory bounded
        healed.pop(next(iter(healed)))


@st.cache_data(max_entries=64, show_spinner="Measuring size...")
def sizes(key: str, recipe_json: str, _bundle) -> dict:
    return C.numbers(_bundle)


@st.cache_data(max_entries=64, show_spinner="Measuring quality on the held-out set...")
def size_and_quality(key: str, recipe_json: str, _bundle, _base) -> dict:
    return {**sizes(key, recipe_json, _bundle), "quality": C.quality(_bundle, _base)}


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
