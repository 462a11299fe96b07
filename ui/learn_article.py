"""Learn sections about whole recipes: the article's claims next to this machine's numbers, and healing curves."""
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import compress as C
from compress.learn import article as ART
from compress.learn import figures as L
from compress.bench import healcurve
from ui import cached, charts, jobs, safe
from ui.learn_common import OKABE_ITO, csv, meta, open_in_compress, predict, section


def article(b):
    st.header("The article's claims, measured here", anchor="article")
    st.markdown(f"The techniques come from the article *{ART.ARTICLE}*. Its claimed gains are quoted as it gives them "
                "(cited constants); the measured columns are this machine's: size of the serialized weights, CPU "
                "latency of original and compressed interleaved (batch "
                f"{ART.WORKLOAD['batch']} x {ART.WORKLOAD['seq']} tokens, p50 of 7 runs), quality without healing. "
                "They come from the results store (any earlier Apply of the same recipe on this model), or from the "
                "button below, which measures every row on the server's job queue and keeps them in the store.")
    _article_table(b)


@section
def _article_table(b):
    try:
        measured = ART.stored(b)
    except C.CompressError as e:
        st.warning(f"The results store cannot be read, so nothing measured is shown: {safe.plain(e)}")
        measured = {}
    measured = {**st.session_state.get("learn_measured", {}).get(cached.model_key(b), {}), **measured}
    missing = [t for t in ART.CLAIMS if t not in measured]
    if missing and st.button(f"Measure the {len(missing)} missing row(s) on this machine (about 10 s each when it is "
                             "idle)", key="learn_art_measure", type="primary"):
        got = jobs.run("learn_article", lambda job: ART.measure(b, lambda f: job.progress.update(done=f), missing),
                       f"{b.name}: the article's recipes measured", key=cached.model_key(b))  # (never another's rows)
        if got is not None:
            try:
                ART.record(jobs.owner(), b, got)
            except C.CompressError as e:
                st.warning(f"Measured, but not kept in the results store: {safe.plain(e)}")
            measured = {**measured, **got}
            st.session_state.setdefault("learn_measured", {})[cached.model_key(b)] = measured
            st.rerun()  # the button's count and the table from what is measured now
    rows = pd.DataFrame(ART.table(b, measured))
    st.dataframe(rows, hide_index=True, column_config={"technique": st.column_config.TextColumn(pinned=True),
                                                       "in plain words": st.column_config.TextColumn(width="large")})
    cpu = C.cpu_info()
    st.caption(f"Machine: {cpu['cpu']}, {cpu['threads']} threads. Claims: the article's; '-' where it gives none or "
               "nothing is measured yet. 'As claimed' means within 15% of the claimed range.")
    csv(lambda: rows, f"article_vs_{b.name}", "learn_art_csv", len(rows))
    predict("int8 stores 8 bits instead of 32: will the whole model be exactly 4x smaller?",
            "Not exactly: " + (f"measured **{measured['dynamic int8']['x smaller']:.2f}x**. " if "x smaller" in
                               measured.get("dynamic int8", {}) else "measure the table to see the number. ")
            + "Each row keeps a float scale, LayerNorms and biases stay float, and a token-type table stays fp32.",
            "learn_art_predict")
    pick = st.selectbox("Open a row's recipe", list(ART.CLAIMS), key="learn_art_pick",
                        format_func=lambda t: f"{t}: {ART.recipes(b)[t].describe()}")
    open_in_compress(b, ART.recipe_of(b, pick), "learn_art_open")


def _curve(b) -> dict | None:
    """A healing run of this session on this model, else the curve shipped for it."""
    for (key, recipe_json), healed in reversed(list(st.session_state.get("healed", {}).items())):
        if key == cached.model_key(b) and healed.applied.get("heal"):
            try:  # an uploaded model's healing record is its card's (the uploader's JSON): drawn only when readable
                curve = healcurve.from_result(b.name, C.Recipe.from_json(recipe_json), healed.applied["heal"])
                pd.DataFrame(curve["history"])[["step", "dev"]].astype(float)
                return {**curve, "metric": str(curve["metric"])[:40]}
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
    return healcurve.shipped(b.name)


@section
def healing(b):
    st.header("Healing: quality won back by distillation", anchor="healing")
    st.markdown("A compressed model starts from the original's weights minus what was cut; a short distillation "
                "(the original as teacher, its outputs as targets) moves the remaining weights to make up for it. "
                "Most of the gain comes in the first steps; the best state on a dev split is kept. *Reference: Hinton "
                "et al. 2015, 'Distilling the knowledge in a neural network'.*")
    _sources(b)
    curve = _curve(b)
    if curve is None:
        st.info(f"No healing curve for {b.name} yet: heal a recipe on the Compress page (Healing steps > 0), then come "
                "back; the project ships curves for the bundled models only.")
        return
    hist = pd.DataFrame(curve["history"])
    higher = curve["metric"] == "fidelity"
    last = int(hist["step"].max())
    upto = st.slider("Steps shown", 0, last, last, step=max(1, last // 30), key="learn_heal_steps") if last else 0
    # (a run whose time cap was spent before its first step has one point: no range to slide over)
    shown = hist[hist["step"] <= upto]
    best = shown["dev"].cummax() if higher else shown["dev"].cummin()
    fig = go.Figure(go.Scatter(x=shown["step"], y=shown["dev"], mode="lines+markers", name=f"dev {curve['metric']}",
                               line={"color": OKABE_ITO[0]}))
    fig.add_trace(go.Scatter(x=shown["step"], y=best, mode="lines", name="best so far (kept)",
                             line={"color": OKABE_ITO[1], "dash": "dot"}))
    fig.update_xaxes(range=[0, last], title_text="healing step")
    fig.update_layout(height=320, margin={"t": 40, "b": 10}, yaxis_title=f"dev {curve['metric']} "
                      f"({'higher' if higher else 'lower'} is better)", legend={"orientation": "h", "y": 1.12},
                      title=f"{C.Recipe.from_json(curve['recipe']).describe()}: {curve['metric']} "
                            f"{hist['dev'].iloc[0]:.4f} at step 0, {best.iloc[-1]:.4f} by step {upto}")
    charts.show(st, meta(fig, figure="healing", step=upto, best=float(best.iloc[-1]), higher=higher),
                key="learn_heal_fig")
    st.caption(f"Source: {curve['source']}" + (f"; made on {curve['machine']} in {curve['seconds']:.0f} s, lr "
                                                f"{curve['lr']:g}, seed {curve['seed']}" if "machine" in curve else ""))
    csv(lambda: hist, f"healing_{b.name}", "learn_heal_csv", len(hist))
    early = hist[hist["step"] <= max(1, last // 10)]
    whole = hist["dev"].cummax() if higher else hist["dev"].cummin()
    gain = abs(early["dev"].iloc[-1] - hist["dev"].iloc[0]) / max(abs(whole.iloc[-1] - hist["dev"].iloc[0]), 1e-12)
    predict("what share of the whole healing gain comes in the first tenth of the steps?",
            f"**{gain:.0%}** of it, by step {int(early['step'].iloc[-1])} of {last}.", "learn_heal_predict")
    open_in_compress(b, C.Recipe.from_json(curve["recipe"]), "learn_heal_open")


_TEXTS = ("**What it learns from.** The healing text (Compress: Healing text): *styles*, ours (the project's "
          "sentences, Python's language reference, scientific docstrings: 5,678 texts, the default); *general*, "
          "60,000 sentences made from WordNet 3.0's glosses and examples; *both* of them; *all*, both and 25,756 "
          "sentences of FOLDOC, the dictionary of computing (assets/heal/README.md: sources, licences, sha256). The "
          "text moves quality between kinds of text more than it adds: MiniLM's 20x recipe healed on *styles* keeps "
          "about 0.89 on the Python docs and 0.77 on general prose never tuned on, on *both* 0.86 and 0.80, on *all* "
          "0.88 and 0.81 (with a 2-bit table; BENCHMARKS.md). An encoder learns the original's sentence embedding and, weighted by the hidden-state "
          "weight (default 3; at 0 only the embedding: 0.833 / 0.853 at 20x after 600 steps, against 0.844 / 0.867), "
          "each kept block's hidden states: those of the original block it came from, below.")


@section
def _sources(b):
    st.markdown(_TEXTS)
    n = int(b.info.get("layers") or 0)
    if b.task != "embedding" or n < 2:
        st.caption(f"{b.name} heals on the original's next-token distributions (KL), not on hidden states: no block "
                   "mapping." if b.task != "embedding" else f"{b.name} has one block: it learns that block.")
        return
    k = st.slider("Blocks kept (Fewer layers)", 1, n, max(1, n // 2), key="learn_heal_blocks")
    rows = L.block_map(b, k)
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption(f"With {k} of {n} blocks, Fewer layers keeps the {k} of highest influence (how much a block changes "
               "its input), in their order; while healing, each kept block's hidden states are pulled toward those of "
               "the original block in its row.")
