"""Trade-offs: sweeps over the technique table's fields as Optuna studies in the results store, run on the server's
job queue (a long job: they outlive the tab; Apply runs between trials), every trial on a plot with the frontier, a
click opening a recipe on the Compress page, the table as CSV; and "find me a recipe" (a constrained study)."""
import functools
import secrets
import shlex
import time

import pandas as pd
import streamlit as st

import compress as C
from compress.sweep import frontier, space as S, studies, run as sweep
from compress.outputs import html as htmlreport, plots
from compress.serve import store
from ui import charts, jobs, safe, shell, trial
from ui.state import current_recipe, set_recipe

REFRESH_S = 5  # a running sweep's view refreshes this often
TIMED_X = {"size_mb": "size (MB)", "latency_ms": "latency (ms)"}
MAX_SPEC = 500  # characters of a values or fixed-fields box


def open_recipe(row: dict, study: str):
    """A trial's recipe into the Compress page's controls, and go there: it shows the trial's stored numbers."""
    set_recipe(C.Recipe.from_json(row["recipe"]))
    trial.keep(b, study, row)
    st.switch_page("ui/pages/compress.py")


def start(the_plan: dict, what: str, name: str | None = None):
    """Start (or resume) a sweep; this browser keeps its key (in the session and the URL: a reload keeps Stop)."""
    name, key = name or f"{b.name} {what} {time.strftime('%Y-%m-%d %H:%M:%S')}", secrets.token_urlsafe(16)
    jobs.queue()  # the server's queue, wired to the results store, before the sweep joins it
    studies.start(b, the_plan, name, jobs.owner(), key, jobs.client())
    st.session_state.setdefault("tr_keys", {})[name] = key
    st.query_params.update(study=name, key=key)
    st.session_state.tr_cli = " ".join(shlex.quote(x) for x in the_plan["cli"])
    st.session_state.tr_study = name
    st.session_state.tr_live = True
    st.session_state.pop("tr_pick", None)  # show the new study


def my_key(name: str) -> str | None:
    """The key this browser holds for the sweep `name`: kept in the session, or in the URL across a reload."""
    url_key = st.query_params.get("key") if st.query_params.get("study") == name else None
    return st.session_state.get("tr_keys", {}).get(name) or url_key


def default_fixed(vary) -> str:
    """The current recipe's fields away from their defaults (not the varied ones); a rank mode when rank varies."""
    try:
        r = current_recipe().to_dict()
    except C.CompressError:
        r = C.Recipe().to_dict()
    out = {k: v for k, v in r.items() if v != C.FIELDS[k].default and k not in vary and not k.startswith("heal_")}
    if "rank" in vary and "rank_mode" not in vary and out.get("rank_mode", "none") == "none":
        out["rank_mode"] = "ratio"
    return ",".join(f"{k}={C.FIELDS[k].text(v)}" for k, v in out.items())


def heal_estimate(trials, steps) -> str:
    """What healing adds: steps x trials at ~230 steps/min per 22.7 M params (MiniLM on the project's 2-core Xeon)."""
    per_step = 60 / 230 * C.count_params(b.model) / 22.7e6
    return f"about {trials * steps * per_step / 60:.0f} min of healing ({steps} steps x {trials} trials)"


b = shell.page()
st.title("Trade-offs")
url = store.storage_url()
st.caption(f"Sweeps are Optuna studies in the results store ({store.shown(url)}). They run on the server's job queue "
           "(Apply waits for one trial at most), keep running when this tab closes, and any session can open them; "
           "optuna-dashboard opens the same store.")
try:
    lim = studies.limits()
    st.caption(f"A healing trial lets an Apply in after each healing step. Only the browser that started a sweep can "
               f"stop it: its address holds the sweep's key after a reload, so share the address without its "
               f"`key=` (anyone who opens it with the key may stop the sweep). This server runs at most "
               f"{lim['COMPRESS_SWEEPS_PER_SESSION']:g} sweep{'s' * (lim['COMPRESS_SWEEPS_PER_SESSION'] != 1)} per "
               "session, "
               f"{lim['COMPRESS_SWEEPS_PER_SERVER']:g} in all, {lim['COMPRESS_SWEEP_MINUTES']:g} min each.")
except C.CompressError as e:  # a bad setting of the server: said here, and Start says it again
    st.warning(safe.plain(e))
metrics = S.metrics_for(b)
quality = [m for m in metrics if m in S.QUALITY]

sweep_tab, find_tab = st.tabs(["Sweep", "Find me a recipe"])
with sweep_tab:
    first = S.first_sweep(b)  # the most useful first sweep for this model (the help says why)
    fields = st.multiselect("Fields to vary", S.variable(), default=list(first), key="tr_vary",
                            format_func=lambda k: f"{C.FIELDS[k].label} ({k})",
                            help=S.FIRST_WHY if "rank" not in first else "Decoders start from rank (tinygpt: ratio "
                            "0.5 kept bits/char 1.713 against 1.702, 1.3x smaller).")
    specs = {k: st.text_input(f"{k} values", first.get(k) or S.default_spec(k, b), key=f"tr_spec_{k}",
                              max_chars=MAX_SPEC,
                              help="a:b:s (inclusive) or v1,v2,...; the technique table's range") for k in fields}
    fixed = st.text_input("Fixed fields", default_fixed(fields), key=f"tr_fixed_{'-'.join(fields)}", max_chars=MAX_SPEC,
                          help='k=v,k=v (a per-block head list: heads=4,4,2); the rest take their defaults')
    objectives = st.multiselect("Objectives", metrics, default=[quality[0], "size_mb"], key="tr_objectives",
                                format_func=plots.label)
    c1, c2, c3 = st.columns(3)
    budget = c1.radio("Budget", ["trials", "minutes"], horizontal=True, key="tr_budget",
                      help="<= 2 fields with no trial count: every combination (grid)")
    amount = c2.number_input(budget, 1, 1000, 10 if budget == "trials" else 5, key=f"tr_amount_{budget}")
    heal = c3.number_input("Healing steps per trial", 0, S.MAX_HEAL_STEPS, 0, step=50, key="tr_heal")
    n_trials = int(amount) if budget == "trials" else None
    grid = budget == "trials" and len(fields) <= 2
    size = 0
    try:
        size = S.Space(b.name, {k: S.values(k, v) for k, v in specs.items()}, ()).grid_size()
    except C.CompressError:
        pass
    st.caption((f"{size} combination(s); " if size else "") + ("every combination (grid) up to the trial count" if grid
               else "NSGA-II (TPE for one objective)") + (f"; {heal_estimate(n_trials or 10, heal)}" if heal else ""))
    if st.button("Start sweep", type="primary"):
        try:
            start(studies.plan(b, specs, fixed, objectives, n_trials, None if n_trials else float(amount), heal,
                               grid=grid), "+".join(fields))
        except C.CompressError as e:
            st.error(safe.plain(e))

with find_tab:
    c1, c2, c3 = st.columns(3)
    target = c1.selectbox("Target", ["size_mb", "speedup", "x_smaller", "latency_ms"], key="tr_target",
                          format_func=plots.label)
    op = "<=" if S.METRICS[target][0] == "minimize" else ">="
    bound = c2.number_input(f"{op}", 0.0, 1e6, {"size_mb": 9.0, "latency_ms": 50.0}.get(target, 3.0), key="tr_bound")
    best_of = c3.selectbox("Best in", quality, key="tr_best",
                           format_func=lambda m: f"{plots.label(m)} ({S.METRICS[m][0][:3]})")
    find_fields = st.multiselect("Fields to search", S.variable(), key="tr_find_fields",
                                 default=[k for k in ("layers", "heads", "ffn", "emb_bits", "quant") if
                                          C.field_reason(k, b, C.Recipe().to_dict()) is None])
    find_trials = st.number_input("Trials", 4, 500, 30, key="tr_find_trials")
    if st.button("Find", type="primary"):
        try:
            specs = {k: S.default_spec(k, b) for k in find_fields}
            start(studies.plan(b, specs, "", [best_of], int(find_trials), constraints=[f"{target}{op}{bound:g}"]),
                  f"find {target}{op}{bound:g}")
        except C.CompressError as e:
            st.error(safe.plain(e))

def live(now: bool):
    """Keep the studies section refreshing while a sweep runs; a full rerun when that changes."""
    if st.session_state.get("tr_live", False) != now:
        st.session_state.tr_live = now
        st.rerun()


def studies_section():
    """The store's studies of this model; refreshed every few seconds while one runs (a fragment)."""
    st.subheader("Studies")
    try:
        names = studies.names(b.name, content_hash=b.content_hash)
    except C.CompressError as e:
        st.error(safe.plain(e))
        return live(False)
    wanted = st.session_state.get("tr_study") or st.query_params.get("study")
    job = studies.job_of(wanted) if wanted else None
    if wanted and wanted not in names:
        if job is not None and job.state in ("failed", "cancelled") and job.error:
            st.error(f"The sweep stopped: {safe.plain(job.error)}")
        elif job is not None and not job.ended.is_set():
            ahead = jobs.queue().position(job) - 1
            st.info(f"{safe.plain(wanted)}: waiting, {ahead} job(s) ahead in the queue" if ahead >= 0 else
                    f"Starting {safe.plain(wanted)}...")
            if studies.may_stop(wanted, my_key(wanted)) and st.button("Cancel", key="tr_cancel"):
                studies.stop(wanted, my_key(wanted))
                st.rerun()
            return live(True)
        else:
            st.warning(f"No study {safe.plain(wanted[:100])} of {b.name} in the store.")  # a link's text: plain
    if not names:
        st.info(f"No sweeps of {b.name} yet: start one above, or run `python -m compress sweep --model {b.name} ...`.")
        return live(False)
    name = st.selectbox("Study", names, index=names.index(wanted) if wanted in names else 0, key="tr_pick")
    try:
        study = sweep.open_study(None, name)
        rows = frontier.rows(study)
        stat = studies.status(study)
    except C.CompressError as e:
        st.error(safe.plain(e))
        return live(False)
    sp = sweep.space_of(study)
    done, target_n = stat["complete"], stat["target"]
    st.progress(min(1.0, done / max(1, target_n)), text=f"{done} of {target_n} trials complete"
                + (f", {stat['running']} running on {stat['workers']} worker(s)" if stat["active"] else ", no worker running")
                + (f", about {stat['eta_s'] // 60} min {stat['eta_s'] % 60} s left" if stat["eta_s"] else "")
                + (f"; {stat['failed']} failed" if stat["failed"] else "") + (f"; {stat['skipped']} skipped" if stat["skipped"] else ""))
    if st.session_state.get("tr_cli") and name == st.session_state.get("tr_study"):
        st.caption("The same sweep from the CLI (add `--study NAME --storage URL` to join this one):")
        st.code(st.session_state.tr_cli, language="bash", wrap_lines=True)
    if studies.may_stop(name, my_key(name)) and not stat["stopping"] and st.button("Stop", key="tr_stop"):
        studies.stop(name, my_key(name))  # only the browser that started it (others see it, without this button)
        st.rerun()
    mine = studies.job_of(name)
    if not stat["active"] and done < target_n and (mine is None or mine.ended.is_set()) and \
            st.button(f"Resume ({target_n - done} trial(s) to go)", key="tr_resume"):
        try:
            start(studies.resume_plan(study), "", name)
        except C.CompressError as e:
            st.error(safe.plain(e))
        else:
            st.rerun()
    if stat["stopping"] and stat["active"]:
        st.info("Stopping after the running trial(s).")

    if sp["constraints"] and len(sp["objectives"]) == 1:  # a "find me a recipe" study
        target = " and ".join(f"{m} {op} {v:g}" for m, op, v in sp["constraints"])
        best = [r for r in rows if r["on_frontier"]]
        if best:
            r = best[0]
            st.success(f"Best recipe with {target}: {plots.hover(r, sp['objectives'] + ['size_mb'], '; ')}")
            if st.button("Open the best recipe on Compress", key="tr_open_best"):
                open_recipe(r, name)
        elif done:
            st.info(f"No trial meets {target} yet.")
    if rows and any(r["state"] == "complete" for r in rows):
        ys = [m for m in quality if any(m in r for r in rows)]
        c1, c2, c3 = st.columns(3)
        xs = [x for x in TIMED_X if any(x in r for r in rows)]
        x = c1.radio("x", xs, horizontal=True, key="tr_x", format_func=TIMED_X.get) if len(xs) > 1 else xs[0]
        y = c2.selectbox("y", ys, index=ys.index(sp["objectives"][0]) if sp["objectives"][0] in ys else 0, key="tr_y",
                         format_func=plots.label)
        log = c3.checkbox("log x axis", key="tr_log")
        event = charts.show(st, plots.tradeoff(rows, x, y, log), on_select="rerun", selection_mode="points",
                                key=f"tr_plot_{name}")
        picked = [p["customdata"][0] for p in (event.selection.points if event else []) if p.get("customdata")]
        if picked:
            open_recipe(next(r for r in rows if r["trial"] == picked[0]), name)
        st.caption("Click a point to open its recipe and the numbers the sweep measured on the Compress page. "
                   "Frontier points' latency is re-measured once before a sweep ends (the error bars: p10-p90).")
        if len(sp["vary"]) == 1 and C.FIELDS[next(iter(sp["vary"]))].kind in ("fraction", "count", "float", "int"):
            charts.show(st, plots.curve(rows, next(iter(sp["vary"])), y), key=f"tr_curve_{name}")
        done_rows = [r for r in rows if r["state"] == "complete"]
        c1, c2 = st.columns([3, 1])
        pick = c1.selectbox("Open a trial's recipe", [r["trial"] for r in done_rows], key="tr_open_pick",
                            format_func=lambda n: plots.hover(next(r for r in done_rows if r["trial"] == n),
                                                              sp["objectives"], "; "))  # plain text: no markup
        if c2.button("Open on Compress", key="tr_open"):
            open_recipe(next(r for r in done_rows if r["trial"] == pick), name)
    if stat["active"]:  # a live table costs the machine the sweep is timing on: shown when the sweep ends
        st.caption("The trials' table and CSV appear when the sweep ends.")
    else:
        table = pd.DataFrame(rows)
        table = charts.columns_first(table, ("trial", "state", *sp["vary"], *sp["objectives"], "on_frontier"))
        words = {"on_frontier": "on the frontier", "feasible": "meets the constraints"}  # (the chart's words; the
        st.dataframe(table.rename(columns=lambda k: words.get(k) or plots.label(k)), hide_index=True)  # CSV: names)
        c1, c2 = st.columns(2)
        c1.download_button("Download CSV", safe.csv_bytes(table), file_name=f"{name}.csv".replace(" ", "_"),
                           mime="text/csv", key="tr_csv", on_click="ignore")
        c2.download_button("Download the report (.html)", functools.partial(htmlreport.study_of, name),
                           file_name=f"{name}-report.html".replace(" ", "_"), mime="text/html", key="tr_report", on_click="ignore",
                           help="One self-contained file: the frontier plot, the frontier and every trial, the "
                                "space and the machine (the store's numbers; nothing is measured again)")
    live(stat["active"])


st.fragment(safe.guarded("the studies")(studies_section),  # a fragment: outside the page's boundary, so its own
            run_every=REFRESH_S if st.session_state.get("tr_live") else None)()
