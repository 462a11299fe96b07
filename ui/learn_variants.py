"""The Learn page's efficient-attention tab: the survey's patterns (learn_attention.efficient), then the library's own
variants applied to the loaded model's layer for the typed sentence: the matrix each applies, its error, a link."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from compress.learn import variants as V
from ui import cached, charts, jobs
from ui.learn_attention import efficient, two_tokens
from ui.learn_pool import pooling
from ui.learn_common import SEQ, csv, meta, open_in_compress, predict, section


def tab(b, text):
    efficient(b, text)
    variants(b, text)
    pooling(b, text)


def _settings(b, t: int) -> dict:
    """The variants' settings, bounded by the sentence (W, s up to T; k, m and n up to the model's positions)."""
    n = b.info.get("max_positions", 512)
    c = st.columns(5)
    return {"window": c[0].slider("Window W", 1, t, min(4, t), key="learn_var_window"),
            "stride": c[1].slider("Stride s", 1, t, min(3, t), key="learn_var_stride"),
            "attn_rank": c[2].slider("Projected length k", 1, min(n, 512), min(n, 512, -(-4 * n // t)),
                                     key="learn_var_rank"),  # (about 4 slots over the sentence: below, one)
            "features": c[3].slider("Random features m", 1, min(n, 256), min(16, n), key="learn_var_features"),
            "buckets": c[4].select_slider("Hash buckets n (lsh)", [1, *range(2, min(n, 64) + 1, 2)], 4 if n >= 4 else 1,
                                          key="learn_var_buckets")}


def _variants(b, text, layer, head, settings) -> dict | None:
    """Kept by the model, else computed on the job queue (None: failed, said in one line, or cancelled)."""
    for _ in range(2):  # the job awaited may be one an earlier run submitted for other settings: then once more
        got = V.cached(b, text, layer, head, settings)
        if got is not None:
            return got
        if jobs.run("learn_var", lambda job: V.variants(b, text, layer, head, settings),
                    f"Learn: efficient-attention variants of layer {layer} of {b.name}",
                    key=(cached.model_key(b), text, layer, head, repr(settings))) is None:
            return None
    return V.cached(b, text, layer, head, settings)


@st.cache_resource(max_entries=4, show_spinner=False)
def _figure(model: str, text: str, layer: int, head: int, settings: tuple, _drawn: dict) -> go.Figure:
    """The matrices side by side: built once per (model, sentence, layer, head, settings), never mutated."""
    top = max(float(v["mix"].max()) for v in _drawn.values())
    rows = -(-len(_drawn) // 4)  # four to a row (eight in one overlapped their titles on a phone)
    fig = make_subplots(rows, 4, horizontal_spacing=0.02, vertical_spacing=0.14 if rows > 1 else 0.0,
                        subplot_titles=[name if name == "original" else f"{name}<br>({v['error']:.2f})"
                                        for name, v in _drawn.items()])  # two lines: one ran into the next at 1366 px
    fig.update_annotations(font_size=12)
    for i, v in enumerate(_drawn.values()):
        fig.add_trace(go.Heatmap(z=v["mix"].round(4), colorscale=SEQ, zmin=0, zmax=top, showscale=i == len(_drawn) - 1,
                                 hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>"), 1 + i // 4, 1 + i % 4)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    t = len(next(iter(_drawn.values()))["mix"])
    fig.update_layout(height=60 + 240 * rows, margin={"t": 80, "b": 10},
                      title=f"Layer {layer}, head {head}, {t} tokens (title: the layer's output error)")
    errors = {name.replace("+", "_"): v["error"] for name, v in _drawn.items() if name != "original"}
    return meta(fig, figure="variants", layer=layer, head=head, **errors)


@section
def variants(b, text):
    st.subheader("The library's variants on this sentence", anchor="variants")
    st.markdown("What the Compress page's **Efficient attention** does to this model: the same q, k and v of one "
                "layer, the matrix each variant applies to the values (rows: queries, each summing to 1), computed by "
                "the variant's own code with v = the identity, Linformer's projections and Performer's features as "
                "Apply initialises them (before healing). The error is how far the layer's attention output (through "
                "its output projection) moves from the original's when this layer alone takes the variant, on the "
                "original's inputs: relative Frobenius norm.")
    c1, c2 = st.columns(2)
    att = two_tokens(b, text, c1, "Layer", "learn_var_layer", "variants")
    if att is None:
        return
    t, n, layer = att["T"], att["maps"].shape[0], att["layer"]
    head = c2.select_slider("Head", list(range(n)), key="learn_var_head") if n > 1 else 0
    settings = _settings(b, t)
    got = _variants(b, text, layer, head, settings)
    if got is None:
        return
    drawn = {name: v for name, v in got.items() if "mix" in v}
    per = b.info.get("max_positions", 512) / settings["attn_rank"]  # positions a Linformer slot averages at init
    if "lowrank" in drawn and per * 2 > t:
        st.caption(f"Linformer at k = {settings['attn_rank']}: each slot starts as the mean of {per:.0f} of the "
                   f"model's positions, so this {t}-token sentence fills {-(-t // max(1, int(per)))} slot(s) and "
                   "every query reads nearly the same mean (a flat map). Raise k, or heal: healing learns the slots.")
    if "local+strided" in drawn:  # its head's matrix is one half's: the table's numbers read as a copy otherwise
        half = "local" if head < -(-n // 2) else "strided"
        st.caption(f"local+strided gives the first half of the heads the local window and the rest the stride: head "
                   f"{head} is in the {half} half, so its matrix is that pattern's; the layer's output error counts "
                   "both halves.")
    key = (cached.model_key(b), text, layer, head, tuple(settings.values()))
    charts.show(st, _figure(*key, _drawn=drawn), key="learn_var_fig")
    st.dataframe(pd.DataFrame(V.table(got)), hide_index=True,  # (a refusal's reason read "LSH attention sorts th…")
                 column_config={"applies": st.column_config.TextColumn(width="large")})
    csv(lambda: pd.DataFrame([{"attention": name, "query": i, "key": j, "weight": float(w)}
                              for name, v in drawn.items() for (i, j), w in pd.DataFrame(v["mix"]).stack().items()]),
        f"variants_layer_{layer}_head_{head}", "learn_var_csv", len(drawn) * t * t)
    best = min((v for v in drawn if v != "original"), key=lambda v: drawn[v]["error"], default=None)
    if best is not None:
        predict("which variant moves this layer's output least at these settings?",
                f"**{best}** ({drawn[best]['error']:.3f}): the rest of the model was trained with full attention, "
                "so every variant needs healing; the Compress page heals and measures it.", "learn_var_predict")
    usable = [v for v in drawn if v != "original"]
    if not usable:
        st.caption(f"Open in Compress: {b.name} takes none of the variants.")
        return
    pick = st.selectbox("Open in Compress with", usable, key="learn_var_pick")
    open_in_compress(b, drawn[pick]["recipe"], "learn_var_open")
