"""Compress: presets and the few controls that matter first (the rest folded), Apply, original vs compressed."""
import dataclasses

import pandas as pd
import streamlit as st

import compress as C
from compress.outputs import html as htmlreport
from ui import cached, charts, compare, guide, jobs, safe, seqcurve, shell, state, takeaway, trial
from ui.controls import recipe_controls

LIVE = {"kind": "ids", "batch": 8, "seq": 32}      # live latency: a few seconds on 2 cores
PRECISE = {"kind": "ids", "batch": 8, "seq": 128}  # the library's default workload
SENTENCES = {"kind": "sentences"}                  # real sentences, batches of 32 (pipeline.WORKLOADS)
MAX_TEXT = 500  # characters of a prompt or a search: a 5 MB prompt held the queue 38 s and went into the report


def shape(w) -> str:
    return f"{w['batch']}x{w['seq']}" if C.has_shape(w["kind"]) else "sentences"


def measure_job(b, recipe, w, healed=None, peer=False):
    """Apply, as a job for the queue (no streamlit calls): compress (or take the healed / uploaded model), then size,
    quality and interleaved latency of original vs compressed (the library's report), quality before healing, and
    with peer the same for what a user would pick instead (ONNX Runtime int8 of the original)."""
    def fn(job):
        comp = healed or C.compressed_model(b, recipe)
        unhealed = C.compressed_model(b, dataclasses.replace(recipe, heal_steps=0, heal_corpus="", runtime="eager")) \
            if recipe.heal_steps else None  # quality before healing, on the same held-out sets
        m = C.measure_compression(b, comp, w["kind"], w.get("batch", 8), w.get("seq", 128), 7,
                                  peer=C.peer_model(b) if peer else None, unhealed=unhealed,
                                  progress=lambda f: job.progress.update(done=f))
        res = {**htmlreport.result(m.to_dict(), recipe), "model": cached.model_key(b), "workload": w}
        if m.peer is not None:
            res["peer"] = htmlreport.result(m.peer.to_dict(), htmlreport.PEER)
        return res
    return fn


def record(res):
    """A finished Apply: the result shown, and a row of the history in the results store (tagged with this browser
    session; a store that fails says so in one line and the result is still shown)."""
    st.session_state.result = res
    row = {"recipe": res["recipe"].ran(res["applied"]),
           **C.row(res["nums"]["original"], res["nums"]["compressed"], res["lat"], res["recipe"]),
           "workload": shape(res["workload"]), "model_hash": b.content_hash,  # (trial.stored: whose numbers, and
           "heal steps run": (res["applied"].get("heal") or {}).get("steps_run")}  # whether a healing ran them all)
    try:
        C.record_apply(jobs.owner(), b.name, res["recipe"].to_json(), row)
    except C.CompressError as e:
        st.warning(f"This Apply was not kept in the history: {safe.plain(e)}")


def history():
    """Every Apply kept in the results store: this session's, or every session's (it survives a restart)."""
    head = st.empty()  # the heading first, its toggle right above the table it switches
    every = st.toggle("Every session's", key="history_all")
    head.subheader("History" + (" (every session)" if every else " (this session)"))
    try:
        rows = C.applies(None if every else jobs.owner())
    except C.CompressError as e:
        st.error(safe.plain(e))
        return
    mine = jobs.owner()[:8]  # another visitor's upload is theirs: its file name ("acme-confidential.zip") stays hidden
    rows = [r if r["session"] == mine or r["model"] in C.BUNDLED else {**r, "model": "another session's upload"}
            for r in rows]
    if rows:  # what was asked and what it gave first: on a phone the rest scrolls
        table = pd.DataFrame(rows).drop(columns=["recipe_json", "model_hash"], errors="ignore")
        table = charts.columns_first(table, ("when", "model", "recipe", "size MB", "x smaller", "x faster", "timing"))
        st.dataframe(table.rename(columns=C.metric_label), hide_index=True)
        reopen([r for r in rows if r["model"] == b.name and r.get("model_hash") == b.content_hash])
    else:
        st.caption("Nothing applied yet" + ("." if every else " in this session."))


def reopen(rows):
    """A History row of this model back into the controls: its stored numbers show as 'Measured here before'."""
    if not rows:
        return
    c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
    i = c1.selectbox(f"Open a row of {b.name} again (its recipe into the controls, its numbers shown)",
                     range(len(rows)), key="history_pick",
                     format_func=lambda i: f"{rows[i]['when']}: {safe.plain(str(rows[i]['recipe']))[:100]}")
    c2.button("Open", key="history_open", on_click=_open, args=(rows[i].get("recipe_json"),))


def _open(recipe_json):
    try:
        state.set_recipe(C.Recipe.from_json(recipe_json))
    except C.CompressError as e:  # a row written by another version
        st.toast(safe.plain(f"That row's recipe cannot be opened here: {e}"))


def show(res):
    """The last Apply: original vs compressed side by side, sample outputs, the per-layer report."""
    if res["recipe"] != recipe:
        st.warning(f"Showing the last applied recipe ({res['recipe'].describe()}); press Apply for the current one.")
    if res["applied"].get("kept_blocks"):
        st.caption(f"Blocks kept (by influence): {res['applied']['kept_blocks']}")
    if res["applied"].get("runtime_setting"):
        st.caption(f"Runtime: ONNX Runtime, {safe.plain(res['applied']['runtime_setting'])}; size = the .onnx file's "
                   "bytes")  # (an uploaded card's text)
    if res["applied"].get("runtime_reason"):
        st.warning(f"Runtime {res['recipe'].runtime} could not apply, so eager ran: "
                   f"{safe.plain(res['applied']['runtime_reason'])}")
    o = res["nums"]["original"]
    st.subheader(f"Original vs compressed: {res['recipe'].ran(res['applied'])}", anchor="result")
    guide.verdict_line(res["nums"]["compressed"]["quality"], bool(res["applied"].get("heal")))
    busy = res["lat"]["compressed"].get("others_busy")
    if busy is not None and busy > C.BUSY:
        st.warning(f"Timing unreliable: other processes on this machine used {busy:.0%} of its CPUs while these "
                   "latencies were measured (this server's other work waits on its job queue; these are other "
                   "programs, e.g. browsers on the same machine). Sizes and quality are exact; press Apply again "
                   "for the speed-up.")
    compare.show(res)
    st.caption(f"Workload: {C.WORKLOADS[res['workload']['kind']]} ({shape(res['workload'])}); "
               f"{C.machine_line()}. "
               f"Quality: {safe.plain(C.quality_words(b))}")
    if res.get("peer"):
        guide.peer_line(res["peer"], o)

    st.subheader("Sample outputs")
    shown = res["recipe"]
    healed = cached.session_model(b, shown)

    def comp():  # in the queue's job: a miss of the shared cache compresses there, not in this page's thread
        return healed or C.compressed_model(b, shown)
    if b.tokenizer is None:
        st.info("This model has no tokenizer: no sample outputs (its quality numbers use random token ids).")
    elif b.task == "embedding":
        where = st.radio("Search in", list(C.EVAL_SETS), horizontal=True, key="search_set",
                         format_func=lambda n: C.EVAL_SETS[n][-1])
        query = st.text_input("Search the evaluation sentences", C.eval_set(where)[2][0], key=f"query_{where}",
                              max_chars=MAX_TEXT)

        def search_both(job):  # one lookup of the compressed model for its search and its sentences that moved most
            c = comp()
            return C.search(b, query, where), C.search(c, query, where), C.farthest(c, b, where)
        got = sampled(shown, (where, query), search_both, f"{b.name}: search {query[:40]!r}")
        if got is not None:
            a, z, far = got
            both = {r["sentence"] for r in a} & {r["sentence"] for r in z}
            cols = st.columns(2)
            for col, name, hits in ((cols[0], "Original top 5", a), (cols[1], "Compressed top 5", z)):
                col.markdown(f"**{name}**\n\n" + "\n".join(
                    f"{i}. {'✓ ' if h['sentence'] in both else ''}{h['sentence']} *({h['topic']}, {h['score']:.3f})*"
                    for i, h in enumerate(hits, 1)))
            st.caption(f"{len(both)} of 5 results in both lists (✓).")
            if far:  # what the mean hides: a few sentences can lose far more (a token that reads another's row)
                with st.expander(f"The {len(far)} sentences that moved most"):
                    st.dataframe(pd.DataFrame(far), hide_index=True)
                    st.caption("Each one's cosine to the original's embedding of it; fidelity is the mean over "
                               "the set.")
            moved = {"Moved most": [f"{f['cosine']:.3f}: {f['sentence']}" for f in far]} if far else {}
            keep_samples(shown, {"Original": [h["sentence"] for h in a], "Compressed": [h["sentence"] for h in z],
                                 **moved, "_note": f"Top 5 of the evaluation sentences for the query {query!r}" + (
                                     "; moved most: the sentences of the set farthest from the original's (their "
                                     "cosine)." if far else ".")})
    else:
        prompt = st.text_input("Prompt to continue", "The for statement", key="prompt", max_chars=MAX_TEXT)
        ways = (("greedy", {}), ("sampled, seed 0", {"greedy": False, "seed": 0}))

        def continue_all(job):  # every continuation on the queue: never while another session's latency is timed
            out = {}
            for name, m in (("Original", b), ("Compressed", comp())):
                for how, kw in ways:
                    try:
                        out[name, how] = prompt + C.complete(m, prompt, b.adapter.sample_tokens, **kw)
                    except C.CompressError as e:  # e.g. an empty prompt
                        out[name, how] = e
            return out
        got = sampled(shown, prompt, continue_all, f"{b.name}: continue {prompt[:40]!r}")
        if got is not None:
            keep_samples(shown, {n: [f"{how}: {got[n, how]}" for how, _ in ways] for n in ("Original", "Compressed")})
            cols = st.columns(2)
            for col, name in zip(cols, ("Original", "Compressed")):
                col.markdown(f"**{name}**")
                for how, _ in ways:
                    col.caption(how)
                    v = got[name, how]
                    if isinstance(v, C.CompressError):
                        col.info(safe.plain(v))
                    else:
                        col.code(v, language=None, wrap_lines=True)

    with st.expander("Per-layer report"):
        st.dataframe(pd.DataFrame(res["layers"]), hide_index=True)
    takeaway.section(b, res)


def uploaded(recipe):
    """A compressed model uploaded back (sidebar): what its card says, next to what is measured here."""
    up = st.session_state.get("uploaded")
    if not up or up["key"] != (cached.model_key(b), recipe.to_json()):
        return
    c = up["card"]
    size, q = c.get("size_bytes"), c.get("quality", {})  # (checked at load: compress/outputs/cardcheck.py)
    said = safe.plain(", ".join(f"{C.metric_label(k)[:60]} {v:.4f}" for k, v in list(q.items())[:10]))  # its keys
    which = b.name if b.name in C.BUNDLED else "the upload it was made from"
    st.info(f"Comparing the uploaded compressed model with its original, {which}. Its card says "
            + (f"{size / 1e6:.2f} MB" if isinstance(size, int) else "no size") + (f", {said}" if said else "")
            + "; below, what this machine measures.")
    with st.expander("Its card.json"):
        st.json(c)


def sampled(recipe, what, fn, label: str):
    """The sample outputs of the shown recipe for this prompt or query: made on the queue once, then kept for the
    session's next runs (every click on the page regenerated them: 200 tokens x 4 continuations on tinygpt)."""
    key = (cached.model_key(b), recipe.to_json(), what)
    got = st.session_state.get("sample_of", {}).get(key)
    if got is None and (got := jobs.run("sample", fn, label, key=key)) is not None:
        st.session_state.sample_of = {key: got}  # the last one only: a session holds one set of samples
    return got


def keep_samples(recipe, samples: dict):
    """The sample outputs shown, for the report (it reuses what the page showed)."""
    st.session_state.samples = {"_key": (cached.model_key(b), recipe.to_json()), **samples}


b = shell.page()
n_params = b.info.get("params") or C.count_params(b.model)
live_w, smaller = C.default_workload(n_params, LIVE)  # batch 1 over 300M parameters, and the words saying so
precise_w = C.default_workload(n_params, PRECISE)[0]
st.title("Compress", anchor=False)  # (no heading link: one Tab stop fewer before Apply)
st.markdown("[Skip to the recipe's controls](#recipe)")  # Apply is next, inside a 1,366 x 768 screen; then the result
bar = st.columns([1, 2.2, 4.8], vertical_alignment="center")
apply = bar[0].button("Apply", type="primary") or st.session_state.pop("auto_apply", False)
precise = bar[1].button(f"Precise benchmark ({precise_w['batch']} x {precise_w['seq']})",
                        help=f"The library's default workload: batch {precise_w['batch']} x seq {precise_w['seq']} "
                             "ids" + (" (batch 1 over 300M parameters)" if smaller else ""))
glance = bar[2].empty()  # the result in one line beside the button, filled when it is measured (below)
left, right = st.columns([1, 2])
with left:
    st.subheader("Recipe", anchor="recipe")
    guide.presets(b)
    minutes = recipe_controls(b)
    fold = st.expander("Latency workload (random ids, real text or sentences) and the peer", key="workload_box")
    kind = fold.radio("Workload", list(C.WORKLOADS), horizontal=True, key="live_workload",
                    format_func=lambda k: {"ids": "random ids (batch x seq)", "passages": "real text (batch x seq)",
                                          "sentences": "real sentences"}[k],
                    help="; ".join(f"{k}: {v}" for k, v in C.WORKLOADS.items()))
    c1, c2 = fold.columns(2)
    batch = c1.number_input("batch", 1, 64, live_w["batch"], key="live_batch", disabled=not C.has_shape(kind))
    most = b.info.get("max_positions", 512)  # an upload may have fewer positions than the default
    seq = c2.number_input("sequence length", 1, most, min(LIVE["seq"], most), key="live_seq",
                          disabled=not C.has_shape(kind))
    if smaller:
        st.caption(f"This model has {smaller}.")
    peer = fold.toggle("Also measure the peer (ONNX Runtime int8 of the original)", True, key="peer",
                     help="What a user would pick instead, measured in the same job, on the same workload")

try:
    recipe = state.current_recipe()
except C.CompressError as e:
    right.error(f"Impossible recipe: {safe.plain(e)}")
    st.stop()
jobs.find_healing()  # (before the URL is written again: a reload's token)
state.put_in_url(b, recipe, minutes)

with right:
    mk = cached.model_key(b)  # an Apply awaited for another model is cancelled (its recipe's changes keep it)
    if apply or precise or jobs.waiting("apply", mk):
        try:  # every measurement runs on the server's job queue: never timed while other work runs
            healed = cached.session_model(b, recipe)
            if recipe.heal_steps and healed is None and not jobs.waiting("apply", mk):
                if st.session_state.get("heal_job") is None:  # healing takes minutes: in the background;
                    jobs.start_healing(b, recipe, minutes)     # when it ends, Apply runs again
            else:
                live = {"kind": kind, "batch": int(batch), "seq": int(seq)} if C.has_shape(kind) else SENTENCES
                w = precise_w if precise else live
                res = jobs.run("apply", measure_job(b, recipe, w, healed, peer),
                               f"{b.name}: {recipe.describe()} ({shape(w)})", key=mk)
                if res is not None:
                    record(res)
        except C.CompressError as e:
            st.error(safe.plain(e))
    jobs.heal_progress()
    if st.session_state.get("heal_error"):
        st.error(f"Healing failed: {safe.plain(st.session_state.pop('heal_error'))}")

    uploaded(recipe)
    res = st.session_state.get("result")
    opened = trial.of(b, recipe)  # a sweep's trial opened from the Trade-offs page: its stored numbers at once
    if opened is not None and (res is None or res["model"] != cached.model_key(b) or res["recipe"] != recipe):
        trial.show(opened)
    elif res is None or res["model"] != cached.model_key(b):
        if not trial.stored(b, recipe, jobs.owner()):  # (a shared link's recipe, measured by its sender)
            st.info("Move the controls, then press Apply: the numbers below are measured on this machine.")
    else:
        show(res)
        glance.markdown(guide.glance(res, recipe))
    seqcurve.section(b, recipe)  # an attention variant's cost over T, on request
jobs.history()
history()
