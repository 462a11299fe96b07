"""Compress: every Recipe control, Apply, and original vs compressed side by side (measured here)."""
import dataclasses

import pandas as pd
import streamlit as st

import compress as C
from pages import common

K = common.KEY
TEACH = {
    "layers": "Fewer layers: keep the k whole blocks that change their input most (Block Influence, 1 - cos(input, "
              "output) on calibration text; ShortGPT, Men et al. 2024); about L/k times faster. Heal afterwards: "
              "each kept block learns to match the original block it came from. On MiniLM this heals better than "
              "thinning every block to the same size.",
    "heads": "Head pruning: keep the k most important attention heads per layer and physically delete the rest "
             "(their q/k/v rows and output columns). The article: fewer heads and a narrower FFN give ~2x size and "
             "2-3x speed; quality drops unless healed. weight = data-free norms; gradient = Michel et al. 2019, "
             "how much the loss on calibration text moves when a head is masked.",
    "ffn": "FFN narrowing: keep this fraction of the feed-forward neurons in every layer (the least important, "
           "by weight norms, are deleted). The FFN holds about 2/3 of a block's weights.",
    "fnet": "FNet (Lee-Thorp et al. 2021): attention is replaced by the real part of a 2D Fourier transform over "
            "(tokens, hidden); no weights at all. Large size and speed gains, but it needs healing: the rest of the "
            "model was trained with attention.",
    "emb_rank": "Embedding factorization: the token table (vocab x hidden; half of MiniLM's weights, and most of "
                "what is left after the other techniques) becomes vocab x r rows times an r x hidden matrix, from "
                "its SVD. Block techniques never touch it. Heal afterwards. At the same size a 2-bit table keeps more.",
    "emb_bits": "Low-bit table: every row of the token table stored in 4 or 2 bits, with a scale and minimum per "
                "128 weights; only the rows a text uses are unpacked. On MiniLM 4-bit is nearly lossless (fidelity "
                "0.998) and 2-bit keeps 0.95 at the size where rank factorization keeps 0.70. Applied before "
                "healing, so the blocks learn to work with it.",
    "runtime": "freeze: TorchScript trace + freeze + optimize_for_inference (the article's 15-25%); compile: "
               "torch.compile (slow first run). Size is measured before this step; if a runtime cannot apply, "
               "eager runs and the reason is shown.",
    "allocate": "budget mode: spectral spends the parameter budget where singular values carry most energy per "
                "parameter; sensitivity spends it where cutting a layer measurably hurts quality most (slower: "
                "each layer is cut and measured once).",
    "heal": "Healing: a short distillation from the original (teacher) into the compressed model before "
            "quantization: it learns to give the original's outputs again on the healing text (default: 2,000+ "
            "everyday sentences written for this project; tinygpt: its training split). The best state on a dev "
            "split is kept. With int8 chosen it trains with int8 rounding simulated, so it learns the model int8 "
            "will run. Runs in the background; Stop keeps the best state so far.",
    "rank": "Low-rank factorization: each Linear W (m x n) becomes two thinner ones, rank r, initialised from "
            "the SVD (spectral init). Saves params when r (m + n) < m n. Expect quality to drop fast below ~0.5 "
            "without healing: the article says it 'definitely needs fine-tuning'.",
    "quant": "int8: weights stored in 8 bits with one scale per output channel, activations quantized on the "
             "fly (dynamic); ~4x smaller Linear layers, faster on CPU, small quality loss. fp16/bf16: every "
             "weight in 16 bits, 2x smaller; fast on GPUs.",
    "emb": "With int8, the word-embedding table (often half of a small model) is stored in 8 bits with one "
           "scale per row.",
}



def measure(comp, recipe, w):
    """Size, quality and interleaved latency of original vs compressed; kept as the result and in the history."""
    key, rj = common.model_key(b), recipe.to_json()
    nums = {"original": common.size_and_quality(key, C.Recipe().to_json(), b, b),
            "compressed": common.size_and_quality(key, rj + str(comp.applied.get("heal")), comp, b)}
    if recipe.heal_steps:  # quality before healing, on the same held-out set
        unhealed = dataclasses.replace(recipe, heal_steps=0, heal_corpus="", runtime="eager")
        nums["unhealed"] = common.size_and_quality(key, unhealed.to_json(), common.get_compressed(b, unhealed), b)
    bar = st.progress(0.0, text=f"Timing both models, interleaved: batch {w['batch']} x seq {w['seq']}")
    lat = C.benchmark(b, comp, w["batch"], w["seq"], progress=lambda f: bar.progress(f))
    bar.empty()
    gpu = C.benchmark(b, comp, w["batch"], w["seq"], device="cuda") if C.gpu_info() else None
    st.session_state.result = {"model": key, "recipe": recipe, "nums": nums, "lat": lat, "gpu": gpu,
                               "workload": w, "layers": comp.layers, "applied": comp.applied}
    o, c = nums["original"], nums["compressed"]
    st.session_state.history.append({
        "model": b.name, "recipe": recipe.describe(), "size MB": round(c["size_bytes"] / 1e6, 2),
        "x smaller": round(o["size_bytes"] / c["size_bytes"], 2), "p50 ms (orig)": lat["original"]["p50"],
        "p50 ms": lat["compressed"]["p50"], "workload": f"{w['batch']}x{w['seq']}", **c["quality"]})


b = common.page()
st.title("Compress")
left, right = st.columns([1, 2])
with left:
    st.subheader("Recipe")
    L, H = b.info["layers"], b.info["heads"]
    for key, n, what in (("layers", L, "blocks"), ("heads", H, "heads per block")):
        v = st.session_state[K + key]  # from a link or another model: a count this model cannot take
        if isinstance(v, int) and v >= n:
            st.session_state[K + key] = 0
            st.info(f"{key} = {v} does not fit {b.name}, which has {n} {what}: set back to all.")
    st.select_slider("Transformer blocks (layers) kept", list(range(1, L)) + [0], key=K + "layers",
                     format_func=lambda v: f"all {L}" if v == 0 else str(v), disabled=L < 2,
                     help="Disabled: a single block cannot lose any." if L < 2 else None)
    st.caption(TEACH["layers"])
    if isinstance(st.session_state.get(K + "heads"), tuple):
        st.info(f"Heads kept per layer (from the link): {list(st.session_state[K + 'heads'])}")
    else:
        st.select_slider("Attention heads kept per layer", list(range(1, H)) + [0], key=K + "heads",
                         format_func=lambda v: f"all {H}" if v == 0 else str(v),
                         disabled=st.session_state[K + "fnet"],
                         help="Disabled with FNet: FNet has no attention heads to prune.")
    st.radio("Head importance", C.HEAD_SCORES, key=K + "head_score", horizontal=True,
             disabled=not st.session_state[K + "heads"])
    st.caption(TEACH["heads"])
    st.slider("FFN neurons kept", 0.05, 1.0, step=0.05, key=K + "ffn")
    st.caption(TEACH["ffn"])
    why_not = ("FNet mixes in future tokens, so it cannot apply to a causal (decoder) model" if b.adapter.causal
               else "choose FNet or head pruning, not both" if st.session_state[K + "heads"] else None)
    st.checkbox("FNet: Fourier mixing instead of attention", key=K + "fnet", disabled=bool(why_not), help=why_not)
    st.caption(TEACH["fnet"] + (f" Disabled: {why_not}." if why_not else ""))
    tied = ("its output layer shares the word-embedding table (tied weights), so factorizing the table would not "
            "shrink it") if C.tied_embeddings(b.model, b.adapter) else None
    bits_set = "a 4- or 2-bit table is chosen below; use one or the other" if st.session_state[K + "emb_bits"] else None
    st.slider("Word-embedding rank (fraction of hidden size)", 0.05, 1.0, step=0.05, key=K + "emb_rank",
              disabled=bool(tied or bits_set), help=tied or bits_set)
    st.caption(TEACH["emb_rank"] + (f" Disabled: {tied or bits_set}." if tied or bits_set else ""))
    rank_set = "the table is factorized (rank < 1); use one or the other" if st.session_state[K + "emb_rank"] < 1 else None
    st.radio("Word-embedding table bits", C.EMB_BITS, key=K + "emb_bits", horizontal=True,
             format_func=lambda v: "as Quantization" if v == 0 else f"{v}-bit", disabled=bool(tied or rank_set),
             help=tied or rank_set)
    st.caption(TEACH["emb_bits"] + (f" Disabled: {tied or rank_set}." if tied or rank_set else ""))
    common.rank_controls()
    st.caption(TEACH["rank"])
    st.radio("Budget allocation", C.ALLOCATIONS, key=K + "allocate", horizontal=True,
             disabled=st.session_state[K + "rank_mode"] != "budget", help=TEACH["allocate"])
    no_text = "this model has no tokenizer, so there is no text to heal it on" if b.tokenizer is None else None
    st.number_input("Healing steps (0 = none)", 0, 100_000, step=50, key=K + "heal_steps", disabled=bool(no_text),
                    help=no_text)
    h1, h2, h3 = st.columns(3)
    h1.select_slider("learning rate", sorted({1e-5, 3e-5, 1e-4, 3e-4, 1e-3, st.session_state[K + "heal_lr"]}),
                     key=K + "heal_lr", format_func=lambda v: f"{v:g}")
    h2.number_input("seed", 0, 2**31 - 1, key=K + "heal_seed")
    minutes = h3.number_input("time cap (min)", 0.5, 60.0, 5.0, step=0.5, key="heal_minutes")
    st.file_uploader("Heal on your own text (.txt, one sentence or paragraph per line)", type=["txt"],
                     key="heal_file", on_change=common.heal_text_changed)
    st.caption(TEACH["heal"] + (f" Disabled: {no_text}." if no_text else ""))
    st.selectbox("Quantization", C.QUANT_MODES, key=K + "quant")
    st.caption(TEACH["quant"] + f" Runs on: {C.QUANT_DEVICES[st.session_state[K + 'quant']]}.")
    st.checkbox("Quantize word embeddings too (int8 only)", key=K + "quant_embeddings",
                disabled=st.session_state[K + "quant"] != "int8", help=TEACH["emb"])
    st.selectbox("Runtime", C.RUNTIMES, key=K + "runtime")
    st.caption(TEACH["runtime"])
    st.subheader("Latency workload")
    c1, c2 = st.columns(2)
    batch = c1.number_input("batch", 1, 64, common.LIVE["batch"], key="live_batch")
    seq = c2.number_input("sequence length", 4, b.info.get("max_positions", 512), common.LIVE["seq"], key="live_seq")
    apply = st.button("Apply", type="primary") or st.session_state.pop("auto_apply", False)
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
            comp = common.get_compressed(b, recipe)
            if comp is None:  # healing takes minutes: a background thread; when it ends, Apply runs again
                if st.session_state.get("heal_job") is None:
                    common.start_healing(b, recipe, minutes)
            else:
                measure(comp, recipe, common.PRECISE if precise else {"batch": int(batch), "seq": int(seq)})
        except C.CompressError as e:
            st.error(str(e))
    common.heal_progress()
    if st.session_state.get("heal_error"):
        st.error(f"Healing failed: {st.session_state.pop('heal_error')}")

    res = st.session_state.get("result")
    if res is None or res["model"] != common.model_key(b):
        st.info("Move the controls, then press Apply: the numbers below are measured on this machine.")
        st.stop()
    if res["recipe"] != recipe:
        st.warning(f"Showing the last applied recipe ({res['recipe'].describe()}); press Apply for the current one.")
    if res["applied"].get("kept_blocks"):
        st.caption(f"Blocks kept (by influence): {res['applied']['kept_blocks']}")
    if res["applied"].get("runtime_reason"):
        st.warning(f"Runtime {res['recipe'].runtime} could not apply, so eager ran: {res['applied']['runtime_reason']}")
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
        if n is c and "unhealed" in res["nums"]:
            h = res["applied"]["heal"]
            col.caption("before healing: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}"
                                                       for k, v in res["nums"]["unhealed"]["quality"].items())
                        + f". Healed {h['steps_run']} steps in {h['seconds']:.0f} s (best step {h['best_step']}, "
                          f"dev {h['metric']} {h['dev_before']:.4f} -> {h['dev_after']:.4f}"
                        + (", stopped early)" if h["stopped"] else ")"))
        col.caption("size breakdown: " + ", ".join(f"{k} {common.mb(v)}" for k, v in n["size_breakdown"].items()))
    st.caption(f"Workload batch {res['workload']['batch']} x seq {res['workload']['seq']}; "
               f"{C.cpu_info()['cpu']}, {C.cpu_info()['threads']} threads, flags {', '.join(C.cpu_info()['flags'])}. "
               f"Quality: {b.info.get('metric', '')}")

    st.subheader("Sample outputs")
    comp = common.get_compressed(b, res["recipe"])
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
