"""Learn: each technique shown working on the model loaded in the sidebar, next to what the article promised. One tab
per technique, every tab drawn when the page opens; each figure's sliders live in a fragment, so a slider step reruns
that figure only. The numbers come from compress.learn.figures / compress.learn.attention / compress.learn.article (no tensors here)."""
import streamlit as st

import compress as C
from compress.learn import figures as L
from ui import cached, jobs, safe, shell
from ui.learn_common import SECTIONS, section_from_url, section_to_url
from ui import learn_article, learn_attention, learn_variants, learn_weights

b = shell.page()
st.title("Learn: why each technique works (or fails)")
st.caption(f"Every figure below is drawn from **{b.name}**'s own weights and from a sentence you type. Move a slider: "
           "only that figure redraws. Each section ends with a button that opens its recipe on the Compress page.")
if not L.prepared(b):  # spectra, head and neuron scores, Block Influence: once per model, on the job queue
    done = jobs.run("learn", lambda job: L.prepare(b, lambda f: job.progress.update(done=f)),
                    f"Learn: decompositions and scores of {b.name} (once per model)", key=cached.model_key(b))
    if done is None and not L.prepared(b):
        st.stop()
sentences = C.eval_set("project")[0]
text = st.text_input("A sentence for the attention figures (heads, FNet, efficient attention, relations), the "
                     "vocabulary and the static table", sentences[0],
                     key="learn_text", max_chars=300)

# a tab click writes its section into the address (a link to the tab shown) and reruns the page (its figures are cached)
tabs = st.tabs([title for title, _ in SECTIONS.values()], default=section_from_url(), key="learn_tab",
               on_change=section_to_url, args=(b, "learn_tab"))
draw = {"article": learn_article.article, "low-rank": learn_weights.low_rank, "quantization": learn_weights.quantization,
        "heads": learn_attention.heads, "ffn": learn_weights.ffn, "fnet": learn_attention.fnet,
        "layers": learn_weights.layers, "healing": learn_article.healing, "efficient": learn_variants.tab,
        "vocabulary": learn_weights.vocabulary, "static": learn_weights.static_table,
        "relations": learn_attention.relations}
ON_TEXT = ("heads", "fnet", "efficient", "vocabulary", "static", "relations")  # the sections drawn on the sentence above
for tab, slug in zip(tabs, SECTIONS):
    with tab:  # each tab behind its own boundary: one failing figure leaves the other tabs drawn
        safe.guard(lambda: draw[slug](b, text) if slug in ON_TEXT else draw[slug](b),
                   f"the Learn tab {SECTIONS[slug][0]}")
