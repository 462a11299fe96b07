"""The Compress page's cost over sequence length: when the recipe has an efficient-attention variant, a button
times the original and the variant over T on the job queue (compress/bench/seqlen.py) and draws both curves with
the crossover T, on this CPU."""
import pandas as pd
import streamlit as st

import compress as C
from compress.bench import seqlen
from compress.outputs import plots
from ui import cached, charts, jobs, safe

LONGEST = [t for t in seqlen.LENGTHS if t >= 512]


def section(b, recipe) -> None:
    if recipe.attention == "none":
        return
    v = seqlen.attention_only(recipe)
    st.subheader("Cost over sequence length", anchor="seqlen")
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    longest = c1.selectbox("Longest T", LONGEST, index=LONGEST.index(2048), key="seqlen_longest",
                           help="Timing only beyond the model's trained positions (they are tiled): quality means "
                                "nothing there")
    key = (cached.model_key(b), v.to_json(), longest)
    run = c2.button(f"Time the original and {v.describe()} over T (batch 1)", key="seqlen_run")
    if run or jobs.waiting("seqlen", key):
        got = jobs.run("seqlen", lambda job: {"key": key, **seqlen.of_recipe(b, v, longest, log=lambda m: None)},
                       f"{b.name}: {v.describe()} over T up to {longest}", key=key)
        if got is not None:  # (its own key: a job awaited from an earlier run may be for other settings)
            st.session_state.seqlen = got
    got = st.session_state.get("seqlen")
    if got is None or got["key"] != key:
        st.caption(f"Latency and peak memory of one forward call at T = {', '.join(map(str, seqlen.LENGTHS))}: about "
                   "a minute or more (up to T = 4096 several), on the job queue; Cancel stops it between lengths.")
        return
    charts.show(st, plots.seqlen(got["rows"], got["crossover"]), key="seqlen_chart")
    st.markdown(safe.plain(plots.seqlen_words(got, C.machine_line())))
    if busy := plots.seqlen_unreliable(got["rows"]):  # (the report says it too, the CLI's table: seqlen.markdown)
        st.warning(busy)
    for note in got["notes"]:
        st.info(safe.plain(note))
    st.dataframe(pd.DataFrame(got["rows"]).rename(columns={"ms": "ms (median)", "peak_mb": "peak MB rise",
                                                           "others_busy": "other programs' CPU share"}),
                 hide_index=True)
