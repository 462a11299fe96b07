"""Learn sections drawn on one weight of the model: low rank, quantization, FFN narrowing, fewer layers; the word
table (vocabulary) and the static end's bag of tokens on a sentence."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import compress as C
from compress.learn import figures as L
from compress.learn import bag as LB
from compress.learn import vocab as LV
from compress.table import presets as P
from compress.techniques import positions
from ui import charts, jobs, safe
from ui.learn_common import DIV, OKABE_ITO, csv, meta, open_in_compress, or_say, predict, section


def _heat(fig, z, col, scale=DIV, mid=0.0, name=""):
    fig.add_trace(go.Heatmap(z=z, colorscale=scale, zmid=mid, showscale=col == 3, name=name,
                             hovertemplate="row %{y}, col %{x}: %{z:.4f}<extra></extra>"), 1, col)


@section
def low_rank(b):
    st.header("Low rank: what a rank cut does to a weight matrix", anchor="low-rank")
    layers = L.linear_layers(b)
    st.markdown("A Linear layer's W (m x n) is U S Vᵀ; keeping the r largest singular values gives the best rank-r "
                "matrix (Eckart-Young), stored as two thin layers with r (m + n) weights instead of m n. It pays only "
                "below the break-even rank m n / (m + n), and how much it keeps is the share of sum(S²) above the cut. "
                "*Reference: Eckart & Young 1936; for transformers, Noach & Goldberg 2020, 'Compressing pre-trained "
                "language models by matrix decomposition'.*")
    c1, c2 = st.columns([2, 3])
    layer = c1.selectbox("Layer", layers, index=min(4, len(layers) - 1), format_func=L.short, key="learn_lr_layer")
    frac = c2.slider("Rank (fraction of min(m, n))", 0.02, 1.0, 0.25, 0.01, key="learn_lr_rank")
    d = L.lowrank(b, layer, frac)
    fig = make_subplots(1, 3, subplot_titles=(f"W (top-left {d['w'].shape[0]}²)", f"rank-{d['rank']} W_r", "W - W_r"),
                        horizontal_spacing=0.04)
    lim = float(np.abs(d["w"]).max())
    for col, z in ((1, d["w"]), (2, d["w_r"]), (3, d["diff"])):
        _heat(fig, z, col)
        fig.data[-1].update(zmin=-lim, zmax=lim)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=330, margin={"t": 40, "b": 10},
                      title=f"{L.short(layer)} ({d['m']}x{d['n']}): rank {d['rank']} of {d['max_rank']}, "
                            f"relative error {d['error']:.3f}, energy kept {d['energy']:.3f}")
    charts.show(st, meta(fig, figure="lowrank", rank=d["rank"], error=d["error"], energy=d["energy"]),
                key="learn_lr_fig")
    k = np.arange(1, d["max_rank"] + 1)
    spec = make_subplots(specs=[[{"secondary_y": True}]])
    spec.add_trace(go.Scatter(x=k, y=d["s"] / d["s"][0], name="S / S[0]", line={"color": OKABE_ITO[0]}))
    spec.add_trace(go.Scatter(x=k, y=d["energy_curve"], name="energy kept", line={"color": OKABE_ITO[1]}),
                   secondary_y=True)
    spec.add_vline(x=d["rank"], line_dash="dash", annotation_text=f"cut: rank {d['rank']}")
    if d["break_even"] < d["max_rank"]:
        spec.add_vline(x=d["break_even"], line_dash="dot", line_color=OKABE_ITO[5],
                       annotation_text=f"break-even {d['break_even']:.0f}", annotation_position="bottom right")
    spec.update_layout(height=300, margin={"t": 30, "b": 10}, legend={"orientation": "h", "y": 1.15},
                       xaxis_title="rank", yaxis={"type": "log", "title": "S / S[0]"})
    spec.update_yaxes(title_text="energy kept", range=[0, 1.02], type="linear", tickmode="auto", showgrid=False,
                      secondary_y=True)  # its own ticks, not synced to the log axis
    charts.show(st, meta(spec, figure="spectrum", rank=d["rank"], break_even=d["break_even"]), key="learn_lr_spec")
    cols = st.columns(4)
    cols[0].metric("Params dense (m n)", f"{d['params_dense']:,}")
    cols[1].metric("Params at rank r (r (m + n))", f"{d['params_rank']:,}",
                   f"{d['params_rank'] / d['params_dense']:.2f} of dense", delta_color="off")
    cols[2].metric("Break-even rank", f"{d['break_even']:.0f}")
    cols[3].metric("Relative error ||W - W_r|| / ||W||", f"{d['error']:.3f}")
    if not d["saves"]:
        st.warning(f"Rank {d['rank']} is above the break-even rank {d['break_even']:.0f}: the two factors are "
                   "bigger than W, so the Compress page keeps this layer dense.")
    csv(lambda: pd.DataFrame({"rank": k, "singular_value": d["s"], "energy_kept": d["energy_curve"]}), "spectrum",
        "learn_lr_csv", len(k))
    q = L.lowrank(b, layer, 0.25)
    predict("at rank 0.25, what share of this layer's energy is kept, and what relative error is left?",
            f"Rank {q['rank']}: energy kept **{q['energy']:.3f}**, relative error **{q['error']:.3f}**: the error is "
            "sqrt(1 - energy), so even 90% of the energy leaves a 32% error.", "learn_lr_predict")
    open_in_compress(b, C.Recipe(rank_mode="ratio", rank=frac), "learn_lr_open")


@section
def quantization(b):
    st.header("Quantization: what rounding does to a row", anchor="quantization")
    st.markdown("int8 stores each weight as one of 256 levels times a scale; with one scale per output row "
                "(per-channel) an outlier row no longer coarsens every other row's grid, as one scale for the whole "
                "matrix (per-tensor) does. At 4 and 2 bits a scale and a minimum per group of a row keep the error "
                "bounded. int4 (Compress: Quantization int4) stores the blocks' weights so, two to a byte; in "
                "PyTorch they are unpacked on every call, and with runtime ONNX Runtime they are unpacked once when "
                "the session is built and run as ONNX Runtime's per-channel int8: the zip keeps int4's size, the run "
                "has int8's speed (MiniLM's 20x recipes, 4.5 MB, ran 3.4x to 4.6x faster than fp32 on 8 x 128 "
                "tokens, by CPU: BENCHMARKS.md). *Reference: Jacob et al. 2018, 'Quantization and training of neural "
                "networks for efficient integer-arithmetic-only inference'.*")
    layers = L.linear_layers(b)
    c1, c2, c3 = st.columns([3, 1, 2])
    layer = c1.selectbox("Layer", layers, index=min(4, len(layers) - 1), format_func=L.short, key="learn_q_layer")
    rows = b.model.get_submodule(layer).out_features
    row = int(c2.number_input("Row", 0, rows - 1, 0, key="learn_q_row"))
    bits = c3.slider("Bits", 2, 8, 8, key="learn_q_bits")
    d = L.quantize_row(b, layer, row, bits)
    fig = go.Figure(go.Histogram(x=d["values"], nbinsx=80, name="weights of the row", marker_color=OKABE_ITO[0]))
    grid = d["grid"][(d["grid"] >= d["values"].min() - d["scale_channel"]) &
                     (d["grid"] <= d["values"].max() + d["scale_channel"])]
    step = max(1, len(grid) // 64)  # at 8 bits: every few levels, else the lines fill the plot
    fig.update_layout(shapes=[{"type": "line", "x0": float(g), "x1": float(g), "y0": 0, "y1": 1, "yref": "paper",
                               "line": {"width": 1, "color": OKABE_ITO[1]}, "opacity": 0.5} for g in grid[::step]])
    # (one update: 64 add_vline calls took 3 s of every run of the page)
    fig.update_layout(height=300, margin={"t": 40, "b": 10}, bargap=0.05, xaxis_title="weight value",
                      title=f"Row {row} of {L.short(layer)} and its {bits}-bit per-channel grid"
                            + (f" (one level in {step} drawn)" if step > 1 else ""))
    err = d["matrix_error"]
    charts.show(st, meta(fig, figure="quantization", bits=bits, **{k.split(" ")[0]: v for k, v in err.items()}),
                    key="learn_q_fig")
    tbl = pd.DataFrame({"scheme": list(err), "row error": list(d["row_error"].values()), "matrix error": list(err.values())})
    st.dataframe(tbl.style.format({"row error": "{:.5f}", "matrix error": "{:.5f}"}), hide_index=True)
    st.caption(f"Relative errors ||W - round(W)|| / ||W|| at {bits} bits. Scales: per-tensor {d['scale_tensor']:.2e}, "
               f"this row's {d['scale_channel']:.2e} ({d['scale_tensor'] / d['scale_channel']:.1f}x finer).")
    csv(lambda: pd.DataFrame({"weight": d["values"], "per_tensor": d["per_tensor"], "per_channel": d["per_channel"],
                              "grouped": d["grouped"]}), f"row_{row}_{bits}bit", "learn_q_csv", len(d["values"]))
    st.subheader("The word table: rounded rows, or codes shared by rows")
    st.markdown("Rounding treats each row alone. **Product quantization** (Compress: Word-table product quantization) "
                "cuts every row into pieces of a few weights and clusters each slice's pieces into 256 codes, so a "
                "piece is one byte naming its nearest code: rows that look alike share codes. At the same bits a "
                "weight it keeps more of the table than rounding. Most of any text is a few thousand frequent "
                "tokens: with vocabulary pruning (rows by frequency), **Most frequent rows at 2 bits** gives those "
                "rows 4 weights a code and codebooks of their own, the rest 8 (both tiers' codebooks in int8), or 12: "
                "0.67 bits a weight, half as many rows again in the same bytes, each coarser. "
                "With healing, **heal the codebooks** trains the centroids with the blocks (the codes stay): the "
                "table learns what the blocks need of it, in the same bytes. "
                "*Reference: Jegou, Douze and Schmid 2011, 'Product quantization for nearest neighbor search'.*")
    token = int(st.number_input("Token id (a row of the word table)", 0, b.vocab_size - 1, min(2000, b.vocab_size - 1),
                                key="learn_q_token"))
    tab = pd.DataFrame(L.table_rounding(b, token))
    st.dataframe(tab, hide_index=True)
    st.caption(f"Product quantization: a group is a code's weights, the levels its 256 codes; its bytes per row and "
               f"bits count each row's share of the codebooks (256 codes a slice, fp16, stored once for the table: a "
               f"small vocabulary pays more of them). Here the codes are fitted on {L.PQ_SAMPLE:,} rows drawn at "
               f"random and the table error is measured on {L.PQ_SAMPLE:,} others, or on those rows when the table has "
               f"no others (the technique fits on every row).")
    q8 = L.quantize_row(b, layer, row, 8)["matrix_error"]
    predict("how much larger is the per-tensor int8 error of this layer than the per-channel one?",
            f"Per-tensor **{q8['per-tensor']:.4f}** vs per-channel **{q8['per-channel']:.4f}**: "
            f"{q8['per-tensor'] / max(q8['per-channel'], 1e-12):.1f}x.", "learn_q_predict")
    recipe = C.Recipe(quant="int8") if bits >= 8 else C.Recipe(quant="int4")
    open_in_compress(b, recipe, "learn_q_open")


@section
def ffn(b):
    st.header("FFN narrowing: which neurons matter", anchor="ffn")
    st.markdown("Each FFN neuron reads the token through one row of the first layer and writes back through one "
                "column of the second; the product of their norms bounds what it can add, so the weakest go first. "
                "The FFN holds about two thirds of a block's weights. *Reference: Michel et al. 2019 for the idea of "
                "structured pruning; the score is the weight-magnitude criterion of Han et al. 2015.*")
    c1, c2 = st.columns(2)
    block = c1.select_slider("Block", list(range(b.info["layers"])), key="learn_ffn_block")
    frac = c2.slider("FFN neurons kept", 0.05, 1.0, 0.5, 0.05, key="learn_ffn_frac")
    d = L.ffn_cut(b, block, frac)
    fig = go.Figure(go.Histogram(x=d["scores"], nbinsx=60, marker_color=OKABE_ITO[0], name="neurons"))
    fig.add_vline(x=d["threshold"], line_dash="dash", line_color=OKABE_ITO[5],
                  annotation_text=f"cut: keep {d['kept']} of {d['width']}")
    fig.update_layout(height=300, margin={"t": 40, "b": 10}, xaxis_title="importance ||W_in[i]|| ||W_out[:, i]||",
                      title=f"Block {block}: {d['kept']} neurons kept hold {d['mass_kept']:.1%} of the importance")
    charts.show(st, meta(fig, figure="ffn", kept=d["kept"], mass_kept=d["mass_kept"]), key="learn_ffn_fig")
    csv(lambda: pd.DataFrame({"neuron": np.arange(d["width"]), "importance": d["scores"],
                              "kept": d["scores"] >= d["threshold"]}), f"ffn_block_{block}", "learn_ffn_csv",
        d["width"])
    half = L.ffn_cut(b, block, 0.5)
    predict("keeping half the neurons of this block keeps what share of its importance?",
            f"**{half['mass_kept']:.1%}**" + (": more than half, because the importance sits in the strongest neurons."
                                               if half["mass_kept"] > 0.55 else ": about half: the scores are flat, so "
                                               "every neuron cut costs about the same."), "learn_ffn_predict")
    open_in_compress(b, C.Recipe(ffn=frac), "learn_ffn_open")


@section
def layers(b):
    st.header("Fewer layers: which blocks matter", anchor="layers")
    st.markdown("Block Influence is 1 - cos(a block's input, its output), averaged over real tokens of calibration "
                "text: a block that barely turns its input is the first to go, and the kept blocks stay whole. "
                "*Reference: Men et al. 2024, 'ShortGPT: layers in large language models are more redundant than you "
                "expect'.*")
    n = b.info["layers"]
    k = st.slider("Blocks kept", 1, n, max(1, n // 2), key="learn_layers_k")
    d = L.layers_kept(b, k)
    bi = d["influence"]
    fig = go.Figure(go.Bar(x=list(range(n)), y=bi, marker_color=[OKABE_ITO[0] if i in d["kept"] else "#BBBBBB"
                                                                  for i in range(n)], name="Block Influence"))
    fig.update_layout(height=300, margin={"t": 40, "b": 10}, xaxis_title="block", yaxis_title="1 - cos(in, out)",
                      title=f"Keeping {k} of {n}: blocks {d['kept']} (blue); grey ones are dropped")
    charts.show(st, meta(fig, figure="layers", kept=d["kept"], lowest_kept=d["lowest_kept"]), key="learn_layers_fig")
    csv(lambda: pd.DataFrame({"block": range(n), "influence": bi, "kept": [i in d["kept"] for i in range(n)]}),
        "block_influence", "learn_layers_csv", n)
    predict("which block changes its input most, and is it the last one?",
            f"Block **{int(np.argmax(bi))}** (influence {max(bi):.3f}); the least is block {int(np.argmin(bi))} "
            f"({min(bi):.3f}).", "learn_layers_predict")
    open_in_compress(b, C.Recipe(layers=0 if k == n else k), "learn_layers_open")
    if (pooler := b.adapter.pooler_module(b.model)) is not None:  # a part no block needs, and no output reads
        st.caption(f"Beside the blocks, {b.name} keeps a pooler ({C.count_params(pooler):,} weights, "
                   f"{C.size_bytes(pooler) / 1e6:.2f} MB) from its pre-training: sentence embeddings are the mean of "
                   "the last hidden states and never read it, so **Drop the unused pooler** removes it with no change "
                   "to any output.")
    if (table := positions.table(b)) is not None:  # rows a text longer than the ones it reads would need
        st.caption(f"{b.name} also keeps a learned position table: {table.num_embeddings:,} rows "
                   f"({C.size_bytes(table) / 1e6:.2f} MB), one for each position a text may reach. **Positions kept** "
                   "keeps its first N: a text of up to N tokens reads exactly the same, a longer one is cut to N.")


_VOCAB = ("Vocabulary pruning keeps the token-table rows of the healing text's tokens. A token of your sentence "
          "that was dropped reads another row: the kept row nearest its own (nearest), the mean of the rows "
          "of the kept word pieces it re-splits into, as the tokenizer would cut it without it (resplit), or the "
          "row of the kept token the original embeds most like it when each stands alone (output), or a weighted "
          "sum of four kept rows chosen to rebuild its own (sparse: orthogonal matching pursuit; fewer rows are kept "
          "for the same size). Which rows are kept: the healing text's tokens by count (text), or by their share "
          "of it plus their share of English (english: wordfreq's frequencies of 100,000 English words), so a "
          "sentence of everyday prose finds more of its own rows. The bars: the cosine of what it reads to its own "
          "row (1 = kept). *References: "
          "Abdaoui et al. 2020, 'Load what you need: smaller versions of multilingual BERT' (the table cut to the "
          "tokens in use); Pati et al. 1993, orthogonal matching pursuit; Speer 2022, wordfreq.*")


@section
def vocabulary(b, text):
    st.header("Vocabulary: what a dropped token reads", anchor="vocabulary")
    st.markdown(_VOCAB)
    frac = st.slider("Vocabulary kept (fraction of tokens)", 0.05, 1.0, 0.25, 0.05, key="learn_vocab_frac")
    output = st.toggle("Also output (runs each of the model's tokens through it alone, once: a job)",
                       key="learn_vocab_output")
    by = st.radio("Rows kept by", LV.KEEPS, horizontal=True, key="learn_vocab_keep",
                  help="text: the healing text's tokens, most frequent first; english: by their share of the healing "
                       "text plus of English (wordfreq's word frequencies), so words of everyday prose keep their rows")
    if (d := or_say(b, lambda: LV.cover(b, text, frac, keep_by=by))) is None:
        return
    if output and jobs.run("learn_vocab", lambda job: LV.distill_table(b) is not None,
                           f"Learn: each of the {b.vocab_size:,} tokens of {b.name} alone",
                           key=b.content_hash) is not None:
        d = LV.cover(b, text, frac, output=True, keep_by=by)  # its table is in the model's cache now
    fig = go.Figure([go.Bar(x=list(range(len(d["tokens"]))), y=d["cosine"][c], name=c, marker_color=OKABE_ITO[i],
                            customdata=safe.labels(d["reads"][c]),
                            hovertemplate="%{customdata}: %{y:.3f}<extra>" + c + "</extra>")
                     for i, c in enumerate(d["cosine"])])
    fig.update_xaxes(tickvals=list(range(len(d["tokens"]))), ticktext=safe.labels(d["tokens"]))
    kept = sum(d["kept"]["nearest"])
    fig.update_layout(height=300, margin={"t": 40, "b": 10}, yaxis_title="cosine to its own row", barmode="group",
                      title=f"{kept} of {len(d['tokens'])} tokens kept at {frac:g}")
    charts.show(st, meta(fig, figure="vocabulary", kept=kept, keep_by=by,
                         **{f"cos_{c}": float(np.mean(v)) for c, v in d["cosine"].items()}), key="learn_vocab_fig")
    st.dataframe(pd.DataFrame({"token": d["tokens"], **{f"{c} reads": v for c, v in d["reads"].items()}}),
                 hide_index=True)
    open_in_compress(b, C.Recipe(vocab=frac, vocab_cover="resplit", vocab_keep=by) if frac < 1 else None,
                     "learn_vocab_open")


_STATIC = ("The static end replaces the whole transformer by one table: a sentence is the mean of its tokens' rows, "
           "no attention, no layers (hundreds of times faster). Each row starts as the original's embedding of that "
           "token alone, weighted by how rare the token is (SIF: a / (a + p), p its Zipf probability), so 'the' and "
           "'.' count less than 'dough'. Healing then fits the table to the original's embeddings of many whole "
           "texts, labeled once (the Tokenlearn way); the fit learns each row's length, which is the token's weight. "
           "At fewer dimensions (Compress: embedding rank) the rows restart in the principal directions of those "
           "texts' embeddings (Tokenlearn's PCA), mapped back to the original's width so fidelity stays defined. "
           "One small attention layer over the rows (Compress: 'with one attention layer') lets the tokens see "
           "each other again before the mean, still without word order. "
           "The figure: each token's weight, and how close the bag of rows comes to the transformer's embedding of "
           "your sentence before any fit. *Reference: Arora et al. 2017 (SIF); Tulkens & van Dongen 2024, "
           "Model2Vec and Tokenlearn.*")


@section
def static_table(b, text):
    st.header("Static table: a sentence as a bag of tokens", anchor="static")
    st.markdown(_STATIC)
    a = st.select_slider("SIF's a (smaller: rare tokens weigh more)", [1e-2, 1e-3, 1e-4, 1e-5, 1e-6], 1e-5,
                         format_func=lambda v: f"{v:g}", key="learn_static_a")
    if (d := or_say(b, lambda: LB.bag(b, text, a))) is None:
        return
    fig = go.Figure(go.Bar(x=list(range(len(d["tokens"]))), y=d["weight"], marker_color=OKABE_ITO[0],
                           hovertemplate="%{y:.3f}<extra></extra>"))
    fig.update_xaxes(tickvals=list(range(len(d["tokens"]))), ticktext=safe.labels(d["tokens"]))
    fig.update_layout(height=300, margin={"t": 40, "b": 10}, yaxis_title="weight in the mean (SIF)",
                      title=f"cosine to the transformer: {d['cosine']:.3f} weighted, {d['cosine_plain']:.3f} plain")
    charts.show(st, meta(fig, figure="static", cosine=d["cosine"], plain=d["cosine_plain"],
                                lightest=min(d["weight"])), key="learn_static_fig")
    predict("does weighting rare tokens up bring the bag of rows closer to the transformer on your sentence?",
            f"Here: **{d['cosine']:.3f}** weighted (a = {a:g}) against **{d['cosine_plain']:.3f}** for the plain "
            "mean. On MiniLM's evaluation sets the weighted table keeps fidelity 0.39 before any fit (a = 1e-3: "
            "0.28); fitted to the transformer's embeddings of 91,434 texts (healing text 'all') it reaches 0.807 on "
            "both sets (BENCHMARKS.md, a computing corpus for the static end).",
            "learn_static_predict")
    open_in_compress(b, P.BY_NAME["static"].build(), "learn_static_open")  # the "static" preset
