"""Learn sections drawn on a sentence: every head's attention, what FNet mixes instead, efficient-attention patterns,
the self-attention relations relation healing copies."""
import dataclasses
import functools
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import compress as C
from compress.learn import figures as L
from compress.learn import attention as A
from compress.learn import relmaps as R
from compress.table import presets as P
from ui import cached, charts, jobs, safe
from ui.learn_common import DIV, OKABE_ITO, SEQ, csv, meta, open_in_compress, or_say, predict, section

MAX_LABELS = 40    # token labels on an axis (tinygpt's bytes: a 100-byte sentence is 100 tokens)
MAX_CELLS = 2**19  # numbers one figure of maps sends to the browser (about 3 MB of JSON): heads shown at a time
MAX_PER_PAGE = 16  # heads in one figure at most, whatever the sentence's length


def _axis(tokens):
    return safe.labels(tokens) if len(tokens) <= MAX_LABELS else None  # plotly renders tags in ticks


def _map(z, tokens, title, scale=SEQ, mid=None, height=360):
    fig = go.Figure(go.Heatmap(z=z, x=_axis(tokens), y=_axis(tokens), colorscale=scale, zmid=mid,
                               hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=height, margin={"t": 40, "b": 10}, title=title, xaxis_title="key", yaxis_title="query")
    return fig


def layer_maps(b, text: str, layer: int, key: str) -> dict | None:
    """One layer's maps: kept by the model, else one forward on the job queue (learnattn bounds it by heads x T²);
    None when the job failed (said in one line) or was cancelled."""
    for _ in range(2):  # the job awaited may be one an earlier run submitted for another layer: then once more
        got = A.cached(b, text, layer)
        if got is not None:
            return got
        if jobs.run(f"learn_att_{key}", lambda job: A.layer_attention(b, text, layer),
                    f"Learn: attention of layer {layer} of {b.name}", key=(cached.model_key(b), text, layer)) is None:
            return None
    return A.cached(b, text, layer)


def two_tokens(b, text, where, label: str, key: str, job: str) -> dict | None:
    """A layer slider in `where` and that layer's maps; None when the job failed or was cancelled (said), or when
    the sentence is one token (said: a width slider from 1 to 1 is no slider, Streamlit refuses it)."""
    att = layer_maps(b, text, where.select_slider(label, list(range(A.layers(b))), key=key), job)
    if att is not None and att["T"] < 2:
        st.info("The sentence is one token: type a longer one to compare the patterns.")
        return None
    return att


def heads(b, text):
    st.header("Heads: which attention heads matter", anchor="heads")
    st.markdown("Each head mixes the tokens with its own attention map (rows: the query token, columns: what it reads). "
                "Many heads can be removed with little loss: the weight score is the norm of a head's value-output "
                "circuit (what it can write), the gradient score how much the loss moves when the head is masked. "
                "*Reference: Michel et al. 2019, 'Are sixteen heads really better than one?'.*")
    _head_maps(b, text)
    _head_scores(b)


@st.cache_resource(max_entries=4, show_spinner=False)
def _heads_figure(model: str, text: str, layer: int, first: int, per: int, _att) -> go.Figure:
    """The maps of heads first.. first+per-1: built once per (model, sentence, layer, heads), never mutated."""
    maps, t = _att["maps"][first:first + per], _att["T"]              # (h, T, T)
    h = maps.shape[0]
    cols = min(4, h)
    rows = math.ceil(h / cols)
    ent = A.entropy(maps)
    fig = make_subplots(rows, cols, subplot_titles=[f"head {first + i} ({ent[i]:.1f} bits)" for i in range(h)],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    for i in range(h):
        fig.add_trace(go.Heatmap(z=np.round(maps[i], 3), colorscale=SEQ, zmin=0, zmax=1, showscale=i == 0,
                                 hovertemplate="query %{y}, key %{x}: %{z:.3f}<extra></extra>"), i // cols + 1, i % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=210 * rows + 40, margin={"t": 50, "b": 10},
                      title=f"Layer {layer}: heads {first}-{first + h - 1} over {t} tokens (title: mean row entropy)")
    return meta(fig, figure="head_maps", layer=layer, entropy=ent.tolist())


def _maps_csv(att, first, per) -> pd.DataFrame:
    maps = att["maps"][first:first + per]                              # (h, T, T)
    h, q, k = np.indices(maps.shape)
    return pd.DataFrame({"layer": att["layer"], "head": h.ravel() + first, "query": q.ravel(), "key": k.ravel(),
                         "weight": maps.ravel()})


@section
def _head_maps(b, text):
    layer = st.select_slider("Layer", list(range(A.layers(b))), key="learn_heads_layer")
    att = layer_maps(b, text, layer, "heads")
    if att is None:
        return
    t, n = att["T"], att["maps"].shape[0]
    per = max(1, min(MAX_PER_PAGE, MAX_CELLS // (t * t)))
    first = 0
    if n > per:  # a figure of every head of a wide layer was 11 MB of JSON a run
        first = st.selectbox(f"Heads ({per} at a time)", list(range(0, n, per)), key="learn_heads_page",
                             format_func=lambda i: f"{i}-{min(n, i + per) - 1} of {n}")
    charts.show(st, _heads_figure(cached.model_key(b), text, layer, first, per, att), key="learn_heads_maps")
    st.caption("Tokens: " + safe.plain(" · ".join(att["tokens"])))
    csv(functools.partial(_maps_csv, att, first, per), f"attention_layer_{layer}", "learn_heads_csv",
        min(per, n - first) * t * t)


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
    fig.update_yaxes(autorange="reversed")  # layer 0 on top in both maps, so their rows line up
    fig.update_yaxes(title_text="layer", col=1)
    fig.update_xaxes(title_text="head")
    agree = float((L.heads_removed(w, keep) == L.heads_removed(g, keep)).mean())
    fig.update_layout(height=320, margin={"t": 60, "b": 10},
                      title=f"Keeping {keep} of {n} per layer removes {int(gone.sum())} heads (x, by {method} score); "
                            f"the two scores agree on {agree:.0%} of the choices")
    charts.show(st, meta(fig, figure="head_scores", removed=int(gone.sum()), agree=agree), key="learn_heads_scores")
    csv(lambda: pd.DataFrame([{"layer": i, "head": j, "weight_score": w[i, j], "gradient_score": g[i, j],
                               "removed": bool(gone[i, j])} for i in range(w.shape[0]) for j in range(n)]),
        "head_scores", "learn_heads_scores_csv", w.size)
    half = max(1, n // 2)
    predict(f"keeping {half} heads per layer, how often do the weight and gradient scores pick the same heads?",
            f"**{float((L.heads_removed(w, half) == L.heads_removed(g, half)).mean()):.0%}** of the keep/remove "
            "choices agree: the two scores measure different things (what a head can write, what the loss needs).",
            "learn_heads_predict")
    open_in_compress(b, C.Recipe(heads=0 if keep == n else keep, head_score=method), "learn_heads_open")


@section
def fnet(b, text):
    st.header("FNet: what it mixes instead of attention", anchor="fnet")
    c1, c2, c3 = st.columns(3)
    layer = c1.select_slider("Layer (attention it replaces)", list(range(A.layers(b))), key="learn_fnet_layer")
    att = layer_maps(b, text, layer, "fnet")
    if att is None:
        return
    t, maps = att["T"], att["maps"]                              # (H, T, T)
    hidden = b.info["hidden"]
    st.markdown(f"FNet drops q, k, v and the output projection and mixes tokens with a fixed transform: the real part "
                f"of a 2D Fourier transform. Along the sentence that is the {t} x {t} matrix below (row k is a wave "
                f"of frequency k), the same for every sentence of this length; along the hidden dimension each token's "
                f"{hidden} numbers also go through a DFT of length {hidden} first, and the sine half of the sentence "
                f"transform mixes that DFT's imaginary part. *Reference: Lee-Thorp et al. 2021, 'FNet: mixing tokens "
                f"with Fourier transforms'.*")
    head = c2.select_slider("Head", list(range(maps.shape[0])), key="learn_fnet_head")
    k = c3.slider("Frequency row k", 0, max(1, t - 1), min(2, t - 1), key="learn_fnet_k")
    cos, _ = A.dft(t)
    left, right = st.columns(2)
    crossings = A.sign_changes(cos[k])
    dft_fig = _map(cos, att["tokens"], f"Re(DFT) over {t} tokens: row {k} crosses zero {crossings} times", DIV, 0.0)
    dft_fig.add_hline(y=k, line_color=OKABE_ITO[1], line_width=2)
    charts.show(left, meta(dft_fig, figure="fnet", k=k, crossings=crossings, T=t), key="learn_fnet_fig")
    charts.show(right, meta(_map(maps[head], att["tokens"], f"Attention of layer {layer}, head {head} (learned, "
                                 "depends on the sentence)"), figure="fnet_attention", layer=layer, head=head),
                       key="learn_fnet_att")
    csv(lambda: pd.DataFrame(cos, columns=[f"k{j}" for j in range(t)]), f"dft_real_{t}", "learn_fnet_csv", t)
    predict(f"row {t // 4} of the {t} x {t} mixing matrix: how many times does it change sign?",
            f"**{A.sign_changes(cos[t // 4])}** times: a cosine of frequency k over T points crosses zero about 2k "
            "times, whatever the words are. Attention's rows instead follow the words.", "learn_fnet_predict")
    open_in_compress(b, C.Recipe(fnet=True), "learn_fnet_open")


@st.cache_resource(max_entries=8, show_spinner=False)
def _patterns(model: str, text: str, layer: int, w: int, causal: bool, _head) -> dict:
    """The five patterns of a head's map (two SVDs of T x T): once per (model, sentence, layer, w), never mutated."""
    return A.patterns(_head, w, causal=causal)


@section
def efficient(b, text):
    st.header("Efficient attention: the survey's patterns", anchor="efficient")
    st.markdown("Full attention costs T² per head. The survey groups the cheaper ones into fixed patterns, strided "
                "(dilated) patterns, learned patterns (group similar tokens), low-rank (project the keys) and kernels "
                "(replace the softmax by a feature product). Below each pattern is drawn over this sentence's grid "
                "against the real map of one head; below them, the Compress page's **Efficient attention** variants "
                "(local, strided, local+strided, lowrank (Linformer), kernel (Performer), linear, lsh (Reformer)) "
                "applied to this model's layer. *Reference: Tay et al. 2020, 'Efficient transformers: a survey'.*")
    c1, c2 = st.columns(2)
    att = two_tokens(b, text, c2, "Head of layer", "learn_eff_layer", "efficient")
    if att is None:
        return
    t, layer, head = att["T"], att["layer"], att["maps"][0]     # (T, T): the layer's first head
    w = c1.slider("Width / rank / features w", 1, t, min(4, t), key="learn_eff_w")
    pats = _patterns(cached.model_key(b), text, layer, w, b.adapter.causal, head)
    titles = ["this head<br>(full)"] + [f"{n}<br>(" + (f"no grid, T x {w}" if n in ("low-rank", "kernel") else
                                                        f"{p['density']:.0%}") + ")" for n, p in pats.items()]
    fig = make_subplots(2, 3, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.14)  # (six in a
    fig.update_annotations(font_size=12)  # row overlapped their titles on a 390 px phone: two rows of three)
    for i, z in enumerate([head, *(p["grid"] for p in pats.values())]):
        fig.add_trace(go.Heatmap(z=z, colorscale=SEQ, zmin=0, zmax=1, showscale=False), 1 + i // 3, 1 + i % 3)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=520, margin={"t": 80, "b": 10},
                      title=f"w = {w} over {t} tokens (title: share of the T x T grid computed)")
    charts.show(st, meta(fig, figure="efficient", w=w, **{n.replace("-", "_"): p["error"] for n, p in pats.items()},
                         density_fixed=pats["fixed"]["density"]), key="learn_eff_fig")
    st.dataframe(pd.DataFrame([{"pattern": n, "what": A.PATTERNS[n][0], "e.g.": A.PATTERNS[n][1],
                                "share of grid": f"no grid, T x {w}" if n in ("low-rank", "kernel") else  # (their
                                f"{p['density']:.3f}",  # T x T is a product of T x w factors: none of it is computed)
                                "error vs this head": round(p["error"], 3),
                                "in this library": A.PATTERNS[n][2] or "no"} for n, p in pats.items()]),
                 hide_index=True)
    csv(lambda: pd.DataFrame([{"pattern": n, "query": i, "key": j, "value": float(p["grid"][i, j])}
                              for n, p in pats.items() for i in range(t) for j in range(t)]), f"patterns_w{w}",
        "learn_eff_csv", len(pats) * t * t)
    lr = _patterns(cached.model_key(b), text, layer, max(1, t // 4), b.adapter.causal, head)["low-rank"]["error"]
    predict(f"a rank-{max(1, t // 4)} (T/4) approximation of this head's map: how large is its error?",
            f"**{lr:.3f}** relative error: compare it with the masks' errors in the table at the same w.",
            "learn_eff_predict")  # (the link to Compress: under the library's variants, learn_variants.py)


_RELATIONS = ("Healing can copy more than the output: with **attention relations** (MiniLM v2) the compressed "
              "model's last block also learns the original's self-relations: for the query, key and value "
              "projections X of the sentence's tokens, softmax(X Xᵀ / √d) per relation head, rows the tokens that "
              "ask, columns what they relate to. Relations are token x token whatever the width, so a model with "
              "fewer heads, or factorized projections, can learn them all the same. *Reference: Wang et al. 2021, "
              "'MiniLMv2: multi-head self-attention relation distillation'.*")


@section
def relations(b, text):
    st.header("Attention relations: what relation healing copies", anchor="relations")
    st.markdown(_RELATIONS)
    if (d := or_say(b, lambda: R.relation_maps(b, text))) is None:
        return
    c1, c2 = st.columns(2)
    kind = c1.radio("Relation", list(R.KINDS), format_func=R.KINDS.get, horizontal=True, key="learn_rel_kind")
    head = c2.slider("Relation head", 0, d["heads"][kind] - 1, 0, key="learn_rel_head")
    m = d["maps"][kind][head]
    fig = _map(m, d["tokens"], f"{R.KINDS[kind]} relation, head {head} of {d['heads'][kind]}, the last block: "
               f"{d['entropy'][kind][head]:.2f} bits a row")
    charts.show(st, meta(fig, figure="relations", kind=kind, head=head, entropy=float(d["entropy"][kind][head]),
                         rowsum=float(m.sum(-1).mean())), key="learn_rel_fig")
    most = min(R.KINDS, key=lambda n: float(d["entropy"][n].mean()))
    predict("which of the three relations is the most peaked (each token relating to few others)?",
            f"Here the **{R.KINDS[most]}** relation: mean " + ", ".join(
                f"{R.KINDS[n]} {float(d['entropy'][n].mean()):.2f}" for n in R.KINDS) + " bits a row (uniform over "
            f"{len(d['tokens'])} tokens: {math.log2(len(d['tokens'])):.2f}).", "learn_rel_predict")
    ten = dataclasses.replace(P.BY_NAME["about 10x"].build(b), heal_relations=True)
    open_in_compress(b, ten, "learn_rel_open")
