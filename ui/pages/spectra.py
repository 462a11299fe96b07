"""Singular-value spectra per layer, with the current rank cut drawn. A rank step reruns only the cut (a fragment): the
spectra are cached per model and the all-layers figure, which no rank changes, is built once per model."""
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import compress as C
from ui import cached, charts, jobs, safe, shell
from ui.controls import control
from ui.state import KEY

b = shell.page()
st.title("Spectra")
st.caption("Each Linear layer inside the transformer blocks, W (out x in) = U S Vh. A steep spectrum means a "
           "low rank keeps most of the layer; a flat one means cutting it loses information.")
spec = C.spectra(b) if C.has_spectra(b) else \
    jobs.run("spectra", lambda job: C.spectra(b, lambda f: job.progress.update(done=f)),
             f"singular values of {b.name} (once per model)", key=cached.model_key(b))
if spec is None:
    st.stop()
sens = b.cache.get("sensitivity")


@st.cache_resource(max_entries=4, show_spinner=False)
def all_layers(key: str, _spec) -> go.Figure:
    """Every layer's normalized spectrum: the same for every rank, so built once per model (never mutated)."""
    fig = go.Figure()
    for name, sp in _spec.items():
        fig.add_trace(go.Scatter(x=np.linspace(0, 1, len(sp.s)), y=sp.s / sp.s[0], mode="lines",
                                 line=dict(width=1), name=name.split(".", 2)[2], showlegend=False))
    fig.update_layout(title="All layers (x = rank / min(m, n))", yaxis_type="log", height=380,
                      xaxis_title="rank fraction", yaxis_title="S / S[0]")
    return fig


@st.fragment
@safe.guarded("the rank cut")  # a fragment reruns outside the page's boundary: its own
def cut():
    """The rank controls and what they change: a slider step reruns this fragment only (spectra are cached)."""
    control("rank_mode", b)
    control("rank", b)
    mode, x = st.session_state[KEY + "rank_mode"], st.session_state[KEY + "rank"]
    by_sens = mode == "budget" and st.session_state.get(KEY + "allocate") == "sensitivity"
    if by_sens and sens is None:
        st.info("Budget allocation is set to sensitivity (Compress page): measure it below to see its ranks; "
                "showing the spectral allocation meanwhile.")
    try:
        ranks = C.allocate(spec, sens, x) if by_sens and sens else C.select_ranks(spec, mode, x)
    except C.CompressError as e:
        st.error(safe.plain(e))
        return
    rep = pd.DataFrame(C.layer_report(spec, ranks))
    rep["block"] = rep["layer"].str.extract(r"\.(\d+)\.").astype(int)
    rep["kind"] = rep["layer"].str.extract(r"\.\d+\.(.+)$")[0]

    kept = rep["params"].sum() / rep["params_dense"].sum()
    c = st.columns(3)
    c[0].metric("Factorizable params kept", f"{kept:.1%}")
    c[1].metric("Layers factorized", f"{(~rep['dense']).sum()} / {len(rep)}")
    c[2].metric("Mean energy kept", f"{rep['energy_kept'].mean():.3f}")

    left, right = st.columns(2)
    layer = left.selectbox("Layer", list(spec), index=0)
    s = spec[layer]
    r = ranks[layer]
    fig = go.Figure(go.Scatter(y=s.s / s.s[0], mode="lines", name="S / S[0]"))
    fig.add_trace(go.Scatter(y=s.energy, mode="lines", name="cumulative energy", yaxis="y2"))
    if r:
        fig.add_vline(x=r - 1, line_dash="dash", annotation_text=f"rank {r}")
    fig.update_layout(title=f"{layer} ({s.m}x{s.n}){'' if r else ': kept dense'}", xaxis_title="index",
                      yaxis=dict(type="log", title="normalized singular value"),
                      yaxis2=dict(overlaying="y", side="right", range=[0, 1.02], title="energy", tickmode="linear",
                                  tick0=0, dtick=0.2, showgrid=False),  # 0, 0.2, ... 1 (they were 0.074, 0.155, ...)
                      legend=dict(orientation="h", y=-0.25), height=400)  # under the plot: it hid the top ticks
    charts.show(left, fig)
    energy = rep.pivot(index="block", columns="kind", values="energy_kept")
    labels = rep.assign(label=rep["rank"].astype(str).where(~rep["dense"], "dense"))
    heat = go.Figure(go.Heatmap(z=energy.values, x=list(energy.columns), y=list(energy.index), zmin=0, zmax=1,
                                colorscale="Viridis", text=labels.pivot(index="block", columns="kind", values="label").values,
                                texttemplate="%{text}"))
    heat.update_layout(title="Energy kept per layer (text: rank chosen)", height=380,
                       yaxis=dict(autorange="reversed", title="block"), xaxis_title="kind")
    charts.show(right, heat)
    st.dataframe(rep.drop(columns=["block", "kind"]), hide_index=True)


cut()
charts.show(st, all_layers(cached.model_key(b), spec))

st.subheader("Per-layer sensitivity")
st.caption("The quality drop when ONLY this layer is factorized hard (rank 0.1 x min(m, n)), measured on 64 "
           "sentences of the healing text (never the evaluation set). Layers that hurt most when cut deserve more "
           "rank: the budget mode's sensitivity allocation spends parameters there.")
measure = st.button("Measure sensitivity (each layer cut and measured once)") if sens is None else False
if sens is None and (measure or jobs.waiting("sensitivity", cached.model_key(b))):  # (a rerun waits for it again)
    sens = jobs.run("sensitivity", lambda job: C.layer_sensitivity(
        b, spec, progress=lambda p: job.progress.update(done=p["done"] / p["total"])), f"sensitivity of {b.name}",
        key=cached.model_key(b))
if sens is not None:
    sdf = pd.DataFrame({"layer": list(sens), "drop": list(sens.values())})
    charts.show(st, px.bar(sdf, x="layer", y="drop", height=380,
                           title=f"Quality drop per layer cut alone ({'1 - fidelity' if b.task == 'embedding' else 'next-token KL'})"))
