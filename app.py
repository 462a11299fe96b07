"""Minimal app until the app issue lands: MiniLM, one recipe, measured numbers."""
import streamlit as st

import compress as C

st.set_page_config(page_title="Transformer compression explorer", layout="wide")
st.title("Transformer compression explorer")
bundle = st.cache_resource(C.load_model)("minilm")
st.caption(", ".join(f"{k}: {v}" for k, v in bundle.info.items()))
rank_mode = st.selectbox("Rank mode", C.RANK_MODES)
rank = st.slider("Rank", 0.05, 1.0, 0.5, 0.05, disabled=rank_mode == "none")
quant = st.selectbox("Quantization", C.QUANT_MODES)
if st.button("Apply"):
    recipe = C.Recipe(rank_mode=rank_mode, rank=rank, quant=quant)
    with st.spinner("compressing and measuring"):
        comp = C.compress(bundle, recipe)
        r = C.report(bundle, comp, batch=8, seq=64)
    cols = st.columns(2)
    for col, side in zip(cols, ("original", "compressed")):
        col.subheader(side)
        col.metric("size (MB)", f"{r[side]['size_bytes'] / 1e6:.1f}")
        col.metric("CPU p50 (ms)", f"{r[side]['latency_ms']['p50']:.0f}")
        col.metric("fidelity", f"{r[side]['quality']['fidelity']:.3f}")
