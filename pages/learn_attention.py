"""Learn sections drawn on a sentence: every head's attention, what FNet mixes instead, efficient-attention patterns."""
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import compress as C
from compress import learn as L
from compress import learnattn as A
from pages.learn_common import DIV, OKABE_ITO, SEQ, csv, meta, open_in_compress, predict, section

MAX_LABELS = 40  # token labels on an axis (tinygpt's bytes: a 100-byte sentence is 100 tokens)


def _axis(tokens):
    return tokens if len(tokens) <= MAX_LABELS else None


def _map(z, tokens, title, scale=SEQ, mid=None, height=360):
    fig = go.Figure(go.Heatmap(z=z, x=_axis(tokens), y=_axis(tokens), colorscale=scale, zmid=mid,
                               hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=height, margin={"t": 40, "b": 10}, title=title, xaxis_title="key", yaxis_title="query")
    return fig


def heads(b, text):
    st.header("Heads: which attention heads matter", anchor="heads")
    st.markdown("Each head mixes the tokens with its own attention map (rows: the query token, columns: what it reads). "
                "Many heads can be removed with little loss: the weight score is the norm of a head's value-output "
                "circuit (what it can write), the gradient score how much the loss moves when the head is masked. "
                "*Reference: Michel et al. 2019, 'Are sixteen heads really better than one?'.*")
    _head_maps(b, text)
    _head_scores(b)


@section
def _head_maps(b, text):
    att = A.attention(b, text)
    n = len(att["maps"])
    layer = st.select_slider("Layer", list(range(n)), key="learn_heads_layer")
    maps = att["maps"][layer]                                  # (H, T, T)
    h = maps.shape[0]
    cols = min(4, h)
    rows = math.ceil(h / cols)
    ent = A.entropy(maps)
    fig = make_subplots(rows, cols, subplot_titles=[f"head {i} ({ent[i]:.1f} bits)" for i in range(h)],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    for i in range(h):
        fig.add_trace(go.Heatmap(z=maps[i], colorscale=SEQ, zmin=0, zmax=1, showscale=i == 0,
                                 hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>"), i // cols + 1, i % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=210 * rows + 40, margin={"t": 50, "b": 10},
                      title=f"Layer {layer}: every head's attention over {att['T']} tokens (title: mean row entropy)")
    st.plotly_chart(meta(fig, figure="head_maps", layer=layer, entropy=ent.tolist()), key="learn_heads_maps")
    st.caption("Tokens: " + " · ".join(att["tokens"]))
    csv(pd.DataFrame([{"layer": layer, "head": i, "query": q, "key": k, "weight": float(maps[i, q, k])}
                      for i in range(h) for q in range(att["T"]) for k in range(att["T"])]),
        f"attention_layer_{layer}", "learn_heads_csv")


@section
def _head_scores(b):
    w, g = L.head_importance(b, "weight"), L.head_importance(b, "gradient")
    n = w.shape[1]
    c1, c2 = st.columns(2)
    keep = c1.slider("Heads kept per layer", 1, n, max(1, n // 2), key="learn_heads_keep")
    method = c2.radio("Ranked by", ["weight", "gradient"], horizontal=True, key="learn_heads_method")
    gone = L.heads_removed(w if method == "weight" else g, keep)
    fig = make_subplots(1, 2, subplot_titles=("weight score (OV norm)", "gradient score (Michel et al.)"),
                        horizontal_spacing=0.06)
    for col, s in ((1, w), (2, g)):
        fig.add_trace(go.Heatmap(z=s, colorscale=SEQ, zmin=0, zmax=1, showscale=col == 2, text=np.where(gone, "x", ""),
                                 texttemplate="%{text}", hovertemplate="layer %{y}, head %{x}: %{z:.2f}<extra></extra>"),
                      1, col)
    fig.update_yaxes(autorange="reversed", title_text="layer", col=1)
    fig.update_xaxes(title_text="head")
    agree = float((L.heads_removed(w, keep) == L.heads_removed(g, keep)).mean())
    fig.update_layout(height=320, margin={"t": 60, "b": 10},
                      title=f"Keeping {keep} of {n} per layer removes {int(gone.sum())} heads (x, by {method} score); "
                            f"the two scores agree on {agree:.0%} of the choices")
    st.plotly_chart(meta(fig, figure="head_scores", removed=int(gone.sum()), agree=agree), key="learn_heads_scores")
    csv(pd.DataFrame([{"layer": i, "head": j, "weight_score": w[i, j], "gradient_score": g[i, j],
                       "removed": bool(gone[i, j])} for i in range(w.shape[0]) for j in range(n)]),
        "head_scores", "learn_heads_scores_csv")
    half = max(1, n // 2)
    predict(f"keeping {half} heads per layer, how often do the weight and gradient scores pick the same heads?",
            f"**{float((L.heads_removed(w, half) == L.heads_removed(g, half)).mean()):.0%}** of the keep/remove "
            "choices agree: the two scores measure different things (what a head can write, what the loss needs).",
            "learn_heads_predict")
    open_in_compress(b, C.Recipe(heads=0 if keep == n else keep, head_score=method), "learn_heads_open")


@section
def fnet(b, text):
    st.header("FNet: what it mixes instead of attention", anchor="fnet")
    att = A.attention(b, text)
    t = att["T"]
    hidden = b.info["hidden"]
    st.markdown(f"FNet drops q, k, v and the output projection and mixes tokens with a fixed transform: the real part "
                f"of a 2D Fourier transform. Along the sentence that is the {t} x {t} matrix below (row k is a wave "
                f"of frequency k), the same for every sentence of this length; along the hidden dimension each token's "
                f"{hidden} numbers also go through a DFT of length {hidden} first, and the sine half of the sentence "
                f"transform mixes that DFT's imaginary part. *Reference: Lee-Thorp et al. 2021, 'FNet: mixing tokens "
                f"with Fourier transforms'.*")
    c1, c2, c3 = st.columns(3)
    layer = c1.select_slider("Layer (attention it replaces)", list(range(len(att["maps"]))), key="learn_fnet_layer")
    maps = att["maps"][layer]
    head = c2.select_slider("Head", list(range(maps.shape[0])), key="learn_fnet_head")
    k = c3.slider("Frequency row k", 0, max(1, t - 1), min(2, t - 1), key="learn_fnet_k")
    cos, _ = A.dft(t)
    left, right = st.columns(2)
    crossings = A.sign_changes(cos[k])
    dft_fig = _map(cos, att["tokens"], f"Re(DFT) over {t} tokens: row {k} crosses zero {crossings} times", DIV, 0.0)
    dft_fig.add_hline(y=k, line_color=OKABE_ITO[1], line_width=2)
    left.plotly_chart(meta(dft_fig, figure="fnet", k=k, crossings=crossings, T=t), key="learn_fnet_fig")
    right.plotly_chart(meta(_map(maps[head], att["tokens"], f"Attention of layer {layer}, head {head} (learned, "
                                 "depends on the sentence)"), figure="fnet_attention", layer=layer, head=head),
                       key="learn_fnet_att")
    csv(pd.DataFrame(cos, columns=[f"k{j}" for j in range(t)]), f"dft_real_{t}", "learn_fnet_csv")
    predict(f"row {t // 4} of the {t} x {t} mixing matrix: how many times does it change sign?",
            f"**{A.sign_changes(cos[t // 4])}** times: a cosine of frequency k over T points crosses zero about 2k "
            "times, whatever the words are. Attention's rows instead follow the words.", "learn_fnet_predict")
    open_in_compress(b, C.Recipe(fnet=True), "learn_fnet_open")


@section
def efficient(b, text):
    st.header("Efficient attention: the survey's patterns", anchor="efficient")
    st.markdown("Full attention costs T² per head. The survey groups the cheaper ones into fixed patterns, strided "
                "(dilated) patterns, learned patterns (group similar tokens), low-rank (project the keys) and kernels "
                "(replace the softmax by a feature product). Below each pattern is drawn over this sentence's grid "
                "against the real map of one head. **This library implements none of them**: its nearest techniques "
                "are FNet (a fixed, dense mixing with no weights) and head pruning. *Reference: Tay et al. 2020, "
                "'Efficient transformers: a survey'.*")
    att = A.attention(b, text)
    t = att["T"]
    c1, c2 = st.columns(2)
    w = c1.slider("Width / rank / features w", 1, t, min(4, t), key="learn_eff_w")
    layer = c2.select_slider("Head of layer", list(range(len(att["maps"]))), key="learn_eff_layer")
    pats = A.patterns(att["maps"][layer][0], w)
    fig = make_subplots(1, 6, subplot_titles=["this head (full)"] + [f"{n} ({p['density']:.0%})" for n, p in pats.items()],
                        horizontal_spacing=0.02)
    fig.add_trace(go.Heatmap(z=att["maps"][layer][0], colorscale=SEQ, zmin=0, zmax=1, showscale=False), 1, 1)
    for i, p in enumerate(pats.values(), 2):
        fig.add_trace(go.Heatmap(z=p["grid"], colorscale=SEQ, zmin=0, zmax=1, showscale=False), 1, i)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=260, margin={"t": 60, "b": 10},
                      title=f"w = {w} over {t} tokens (title: share of the T x T grid computed)")
    st.plotly_chart(meta(fig, figure="efficient", w=w, **{n.replace("-", "_"): p["error"] for n, p in pats.items()},
                         density_fixed=pats["fixed"]["density"]), key="learn_eff_fig")
    st.dataframe(pd.DataFrame([{"pattern": n, "what": A.PATTERNS[n][0], "e.g.": A.PATTERNS[n][1],
                                "share of grid": round(p["density"], 3), "error vs this head": round(p["error"], 3),
                                "in this library": "yes" if A.PATTERNS[n][2] else "no"} for n, p in pats.items()]),
                 hide_index=True)
    csv(pd.DataFrame([{"pattern": n, "query": i, "key": j, "value": float(p["grid"][i, j])}
                      for n, p in pats.items() for i in range(t) for j in range(t)]), f"patterns_w{w}", "learn_eff_csv")
    lr = A.patterns(att["maps"][layer][0], max(1, t // 4))["low-rank"]["error"]
    predict(f"a rank-{max(1, t // 4)} (T/4) approximation of this head's map: how large is its error?",
            f"**{lr:.3f}** relative error: compare it with the masks' errors in the table at the same w.",
            "learn_eff_predict")
    open_in_compress(b, C.Recipe(fnet=True), "learn_eff_open")
