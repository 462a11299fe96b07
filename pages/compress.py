"""Compress: every Recipe control, Apply, and original vs compressed side by side (measured here)."""
import pandas as pd
import streamlit as st

import compress as C
from pages import common

K = common.KEY
TEACH = {
    "rank": "Low-rank factorization: each Linear W (m x n) becomes two thinner ones, rank r, initialised from "
            "the SVD (spectral init). Saves params when r (m + n) < m n. Expect quality to drop fast below ~0.5 "
            "without healing: the article says it 'definitely needs fine-tuning'.",
    "quant": "int8: weights stored in 8 bits with one scale per output channel, activations quantized on the "
             "fly (dynamic); ~4x smaller Linear layers, faster on CPU, small quality loss. fp16/bf16: every "
             "weight in 16 bits, 2x smaller; fast on GPUs.",
    "emb": "With int8, the word-embedding table (often half of a small model) is stored in 8 bits with one "
           "scale per row.",
}

b = common.page()
st.title("Compress")
left, right = st.columns([1, 2])
with left:
    st.subheader("Recipe")
    common.rank_controls()
    st.caption(TEACH["rank"])
    st.selectbox("Quantization", C.QUANT_MODES, key=K + "quant")
    st.caption(TEACH["quant"] + f" Runs on: {C.QUANT_DEVICES[st.session_state[K + 'quant']]}.")
    st.checkbox("Quantize word embeddings too (int8 only)", key=K + "quant_embeddings",
                disabled=st.session_state[K + "quant"] != "int8", help=TEACH["emb"])
    st.subheader("Latency workload")
    c1, c2 = st.columns(2)
    batch = c1.number_input("batch", 1, 64, common.LIVE["batch"], key="live_batch")
    seq = c2.number_input("sequence length", 4, b.info.get("max_positions", 512), common.LIVE["seq"], key="live_seq")
    apply = st.button("Apply", type="primary")
    precise = st.button(f"Precise benchmark (batch {common.PRECISE['batch']} x seq {common.PRECISE['seq']})")

try:
    recipe = common.current_recipe()
except C.CompressError as e:
    right.error(f"Impossible recipe: {e}")
    st.stop()
common.put_in_url(b, recipe)

with right:
    if apply or precise:
        try:
            key, rj = common.model_key(b), recipe.to_json()
            comp = common.compressed(key, rj, b)
            nums = {"original": common.size_and_quality(key, C.Recipe().to_json(), b, b),
                    "compressed": common.size_and_quality(key, rj, comp, b)}
            w = common.PRECISE if precise else {"batch": int(batch), "seq": int(seq)}
            bar = st.progress(0.0, text=f"Timing both models, interleaved: batch {w['batch']} x seq {w['seq']}")
            lat = C.benchmark(b, comp, w["batch"], w["seq"], progress=lambda f: bar.progress(f))
            bar.empty()
            gpu = C.benchmark(b, comp, w["batch"], w["seq"], device="cuda") if C.gpu_info() else None
            st.session_state.result = {"model": key, "recipe": recipe, "nums": nums, "lat": lat, "gpu": gpu,
                                       "workload": w, "layers": comp.layers}
            q = nums["compressed"]["quality"]
            st.session_state.history.append({
                "model": b.name, "recipe": recipe.describe(), "size MB": round(nums["compressed"]["size_bytes"] / 1e6, 2),
                "x smaller": round(nums["original"]["size_bytes"] / nums["compressed"]["size_bytes"], 2),
                "p50 ms (orig)": lat["original"]["p50"], "p50 ms": lat["compressed"]["p50"],
                "workload": f"{w['batch']}x{w['seq']}", **q})
        except C.CompressError as e:
            st.error(str(e))

    res = st.session_state.get("result")
    if res is None or res["model"] != common.model_key(b):
        st.info("Move the controls, then press Apply: the numbers below are measured on this machine.")
        st.stop()
    if res["recipe"] != recipe:
        st.warning(f"Showing the last applied recipe ({res['recipe'].describe()}); press Apply for the current one.")
    o, c = res["nums"]["original"], res["nums"]["compressed"]
    st.subheader(f"Original vs compressed: {res['recipe'].describe()}")
    cols = st.columns(2)
    for col, name, n in ((cols[0], "Original", o), (cols[1], "Compressed", c)):
        lat = res["lat"][name.lower()]
        col.markdown(f"**{name}**")
        col.metric("Size", common.mb(n["size_bytes"]),
                   None if n is o else f"{o['size_bytes'] / n['size_bytes']:.2f}x smaller", delta_color="off")
        col.metric("Params", f"{n['params'] / 1e6:.2f} M")
        col.metric("CPU latency p50", f"{lat['p50']:.1f} ms",
                   None if n is o else f"{res['lat']['original']['p50'] / lat['p50']:.2f}x faster", delta_color="off")
        col.caption(f"p10-p90: {lat['p10']:.1f}-{lat['p90']:.1f} ms over {lat['runs']} runs")
        gpu = res["gpu"]
        if gpu is None:
            col.caption("GPU latency: no GPU on this machine")
        else:
            col.metric("GPU latency p50", f"{gpu[name.lower()]['p50']:.1f} ms" if name.lower() in gpu else "n/a: int8 is CPU-only")
        for metric, v in n["quality"].items():
            col.metric(metric.replace("_", " "), f"{v:.4f}")
        col.caption("size breakdown: " + ", ".join(f"{k} {common.mb(v)}" for k, v in n["size_breakdown"].items()))
    st.caption(f"Workload batch {res['workload']['batch']} x seq {res['workload']['seq']}; "
               f"{C.cpu_info()['cpu']}, {C.cpu_info()['threads']} threads, flags {', '.join(C.cpu_info()['flags'])}. "
               f"Quality: {b.info.get('metric', '')}")

    st.subheader("Sample outputs")
    comp = common.compressed(res["model"], res["recipe"].to_json(), b)
    if b.task == "embedding":
        query = st.text_input("Search the evaluation sentences", C.eval_set()[2][0], key="query")
        a, z = C.search(b, query), C.search(comp, query)
        both = {r["sentence"] for r in a} & {r["sentence"] for r in z}
        cols = st.columns(2)
        for col, name, hits in ((cols[0], "Original top 5", a), (cols[1], "Compressed top 5", z)):
            col.markdown(f"**{name}**\n\n" + "\n".join(
                f"{i}. {'✓ ' if h['sentence'] in both else ''}{h['sentence']} *({h['topic']}, {h['score']:.3f})*"
                for i, h in enumerate(hits, 1)))
        st.caption(f"{len(both)} of 5 results in both lists (✓).")
    elif b.tokenizer is not None:
        prompt = st.text_input("Prompt to continue", "The for statement", key="prompt")
        n = 200 if b.adapter.family == "tinygpt" else 30  # bytes vs tokens
        cols = st.columns(2)
        for col, name, m in ((cols[0], "Original", b), (cols[1], "Compressed", comp)):
            col.markdown(f"**{name}**")
            for how, kw in (("greedy", {}), ("sampled, seed 0", {"greedy": False, "seed": 0})):
                col.caption(how)
                col.code(prompt + C.complete(m, prompt, n, **kw), language=None, wrap_lines=True)
    else:
        st.info("This model has no tokenizer: no sample outputs (its quality numbers use random token ids).")

    with st.expander("Per-layer report"):
        st.dataframe(pd.DataFrame(res["layers"]), hide_index=True)

st.subheader("History (this session)")
if st.session_state.history:
    st.dataframe(pd.DataFrame(st.session_state.history), hide_index=True)
