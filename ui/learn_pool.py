"""The Learn page's token pooling (the survey's down-sampling, Funnel-Transformer): which tokens of the typed sentence
each pooled slot averages, by the library's own pool_tokens, and the attention grid each block computes before and
after the pooling."""
import math

import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

import compress as C
from compress.learn.attention import MAX_CHARS, layers, tokens_of
from compress.measure.evaluate import batches
from compress.techniques import pool
from ui import charts, safe
from ui.learn_common import SEQ, meta, open_in_compress, predict, section


def grid(t: int, blocks: int, f: int, at: int) -> list[int]:
    """Query-key pairs each block's attention computes on t tokens: t^2 in the first `at`, ceil(t / f)^2 after."""
    return [t * t if i < at else math.ceil(t / f) ** 2 for i in range(blocks)]


@section
def pooling(b, text):
    st.subheader("Token pooling: the later blocks on fewer tokens", anchor="pooling")
    st.markdown(f"{pool.TEACH} The survey calls this **down-sampling**: the sequence itself gets shorter, where the "
                "patterns above keep every token and compute fewer of their pairs. Left: the weight each pooled slot "
                "gives each token of the sentence (the library's own `pool_tokens` on the identity). Right: the "
                "query-key pairs each block's attention computes.")
    blocks = layers(b)
    why = pool.refuse(b, C.Recipe(pool=2, pool_at=1))
    if why or blocks < 2:
        st.caption(f"Not for {b.name}: {safe.plain(why or 'it has one block: none would run on fewer tokens')}.")
        return
    ids = batches(b, [text[:MAX_CHARS]], 1)[0][0][0].tolist()
    words, t = safe.labels(tokens_of(b, ids)), len(ids)  # (plotly renders tags in hover text: escaped)
    c1, c2 = st.columns(2)
    f = c1.select_slider("Pool every (tokens)", [2, 4], 2, key="learn_pool_f")
    at = c2.slider("After block", 1, blocks - 1, min(2, blocks - 1), key="learn_pool_at") if blocks > 2 else 1
    mix = pool.pool_tokens(torch.eye(t)[None], None, f)[0][0]  # (slots, t): slot i averages its f tokens
    cost = grid(t, blocks, f, at)
    fig = make_subplots(1, 2, column_widths=[0.62, 0.38], horizontal_spacing=0.12,
                        subplot_titles=[f"{len(mix)} slots from {t} tokens", "query-key pairs per block"])
    fig.add_trace(go.Heatmap(z=mix.numpy().round(3), x=list(range(t)), colorscale=SEQ, zmin=0, zmax=1,
                             customdata=[words] * len(mix), showscale=False,
                             hovertemplate="slot %{y}, token %{x} (%{customdata}): %{z:.2f}<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=[f"block {i}" for i in range(blocks)], y=cost, marker_color=["#4c72b0" if i < at else
                  "#dd8452" for i in range(blocks)], hovertemplate="%{x}: %{y:,} pairs<extra></extra>"), 1, 2)
    fig.update_yaxes(autorange="reversed", title_text="pooled slot", row=1, col=1)
    fig.update_xaxes(title_text="token", row=1, col=1)
    fig.update_layout(height=380, showlegend=False, margin={"t": 50})
    full = t * t * blocks
    charts.show(st, meta(fig, figure="pooling", tokens=t, slots=len(mix), pairs=sum(cost), full=full),
                key="learn_pool_fig")
    st.caption(f"This {t}-token sentence: {sum(cost):,} of {full:,} query-key pairs ({sum(cost) / full:.0%}); the "
               f"blocks after block {at - 1} also run their FFN on {len(mix)} tokens instead of {t}.")
    predict("why is the pooling placed after the first blocks, not before the first?",
            "The first blocks mix each token with its context: a slot then averages tokens that already carry their "
            "neighbours' meaning. Pooled before any block, it would average raw word rows (the model refuses that: "
            "pool after block 1 or later). Healing then teaches the later blocks to read the slots.",
            "learn_pool_predict")
    open_in_compress(b, C.Recipe(pool=f, pool_at=at), "learn_pool_open")
