"""What every Learn section shares: the section list (slug -> tab title, used by the Compress page's links), the
fragment wrapper (a slider step reruns one figure; a library error is one line), colour-blind-safe palettes, the CSV
download, the predict-then-reveal question and the "open in Compress" button."""
import streamlit as st

import compress as C
from compress.outputs.plots import OKABE_ITO  # noqa: F401 (the sections' palette, colour-blind safe)
from ui import safe
from ui.state import set_recipe

SECTIONS = {  # slug (the ?section= of a link) -> (tab title, what it teaches)
    "article": ("Article vs this machine", "the article's claims next to this machine's numbers"),
    "low-rank": ("Low rank", "what a rank cut does to a weight matrix"),
    "quantization": ("Quantization", "what int8 / 4-bit / 2-bit rounding and shared codes do to a row"),
    "heads": ("Heads", "which heads matter"),
    "ffn": ("FFN narrowing", "which FFN neurons matter"),
    "fnet": ("FNet", "what FNet mixes instead of attention"),
    "layers": ("Fewer layers", "which blocks matter"),
    "healing": ("Healing", "how healing wins quality back"),
    "efficient": ("Efficient attention", "the attention patterns of the survey, and token pooling"),
    "vocabulary": ("Vocabulary", "what a dropped token reads"),
    "static": ("Static table", "a sentence as a bag of tokens"),
    "relations": ("Attention relations", "what relation healing copies"),
}
STEP_SECTION = {"layers": "layers", "heads": "heads", "ffn": "ffn", "fnet": "fnet", "emb_rank": "low-rank",
                "emb_bits": "quantization", "emb_pq": "quantization", "factorize": "low-rank", "heal": "healing",
                "int8": "quantization", "int4": "quantization", "half": "quantization", "runtime": "article",
                "vocab": "vocabulary", "static": "static", "attention": "efficient", "pool": "efficient",
                "pooler": "layers", "positions": "layers"}
SEQ = "Cividis"   # sequential colour scale, readable with every colour-vision deficiency
DIV = "PuOr"      # diverging (signed weights, errors)


def section_from_url() -> str | None:
    """The tab a link asked for (?section=low-rank), else the first."""
    slug = st.query_params.get("section")
    return SECTIONS[slug][0] if slug in SECTIONS else None


def section_to_url(b, key: str):
    """The open tab (and a bundled model) into the address, so a teacher can copy the link to the tab shown."""
    slug = next((s for s, (title, _) in SECTIONS.items() if title == st.session_state.get(key)), None)
    if slug:
        st.query_params["section"] = slug
    if b.name in C.BUNDLED:
        st.query_params["model"] = b.name


def section(fn):
    """A section's figure as a fragment: its widgets rerun only it (outside the page's boundary, so it has its own):
    a CompressError is one line, any other exception one line and a log entry."""
    return st.fragment(safe.guarded(f"the Learn figure {fn.__name__.strip('_')}")(fn))


def meta(fig, **numbers):
    """The numbers a figure shows, kept in its layout (the tests read them back from the chart)."""
    fig.update_layout(meta=numbers)
    return fig


def csv(build, name: str, key: str, rows: int) -> None:
    """The figure's data as a CSV built when the button is clicked (build() -> DataFrame), not on every run: a
    layer's maps were a 2.1M-row table rebuilt on each rerun."""
    st.download_button(f"Download the data (CSV, {rows:,} rows)", lambda: safe.csv_bytes(build()),
                       f"{name}.csv", "text/csv", key=key, on_click="ignore")


def predict(question: str, answer: str, key: str) -> None:
    """A question for the class; the answer shows only when the expander is opened."""
    with st.expander(f"Predict, then reveal: {question}", key=key):
        st.markdown(answer)


def or_say(b, data):
    """The figure's data, or None once the page says in one line why the model has none."""
    try:
        return data()
    except C.CompressError as e:
        st.caption(f"Not for {b.name}: {safe.plain(e)}")
        return None


def open_in_compress(b, recipe: C.Recipe | None, key: str, why: str | None = None) -> None:
    """The section's recipe on the Compress page (or why this model cannot take it)."""
    why = why or (C.refusal(b, recipe) if recipe is not None else "no recipe")
    if why:
        st.caption(f"Open in Compress: not for {b.name}: {safe.plain(why)}.")
        return
    if st.button(f"Open in Compress: {recipe.describe()}", key=key, icon=":material/compress:"):
        set_recipe(recipe)
        st.switch_page("ui/pages/compress.py")
