"""AppTest of the Trade-offs page on the bundled tinygpt: a sweep started from the page runs on the server's job
queue, its trials appear with the frontier, a trial's recipe opens on the Compress page, bad choices are one line, and a new
server session (a restart) still shows the study, its plot and the Apply history."""
import os
import re
import time

import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from compress.outputs import plots
from compress.sweep import frontier, studies, run as sweep
from conftest import ROOT

APP = str(ROOT / "app.py")
pytestmark = pytest.mark.slow


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    """A results store of this test's own (the page and its sweep process both read COMPRESS_DATA)."""
    monkeypatch.setenv("COMPRESS_DATA", str(tmp_path))
    monkeypatch.delenv("COMPRESS_STORAGE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def page(model="tinygpt") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=400)
    at.query_params["model"] = model
    at.run()
    at.switch_page("ui/pages/tradeoffs.py").run()
    assert not at.exception
    return at


def _wait_done(name, seconds=900):  # a guard against a hang: a loaded 2-core CI box is slow
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if not studies.status(sweep.open_study(None, name))["active"] and \
                    studies.status(sweep.open_study(None, name))["complete"]:
                return
        except C.CompressError:
            pass
        job = studies.job_of(name)
        assert job is None or job.state != "failed", job.error
        time.sleep(1)
    raise AssertionError(f"{name} did not finish in {seconds} s")


def test_sweep_from_the_page_and_back_after_a_restart(store_dir):
    at = page()
    at.multiselect(key="tr_vary").set_value(["rank"]).run()
    at.text_input(key="tr_spec_rank").set_value("0.2:1.0:0.4").run()
    assert at.text_input(key="tr_fixed_rank").value == "rank_mode=ratio"  # rank needs a mode: offered
    at.multiselect(key="tr_objectives").set_value(["bits_per_char", "size_mb"]).run()
    at.button[0].click().run()  # Start sweep
    assert not at.exception and not at.error
    name = at.session_state["tr_study"]
    _wait_done(name)
    at.run()
    assert not at.exception
    assert "3 of 3 trials complete" in at.get("progress")[0].proto.text
    rows = frontier.rows(sweep.open_study(None, name))
    assert [r["rank"] for r in sorted(rows, key=lambda r: r["rank"])] == [0.2, 0.6, 1.0]
    table = at.dataframe[-1].value
    assert len(table) == 3 and set(table["state"]) == {"complete"} and "on the frontier" in table
    # what the study varied and asked first, on screen (a wide table hid the last columns off its right edge), in the
    # chart's words (bits_per_char read beside a chart that says 'bits per char')
    assert list(table.columns[:6]) == ["trial", "state", "rank", plots.label("bits_per_char"), plots.label("size_mb"),
                                       "on the frontier"]
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # the trade-off plot, and the 1-D curve (quality and size vs rank)
    # open a trial on the Compress page
    smallest = min(rows, key=lambda r: r["size_mb"])
    options = at.selectbox(key="tr_open_pick").options  # plain text: plotly's <br> is markup a picker shows raw
    assert len(options) == 3 and not [o for o in options if "<" in o or ">" in o], options
    assert [o for o in options if o.startswith(f"trial {smallest['trial']}: ") and "size (MB): " in o]
    at.selectbox(key="tr_open_pick").set_value(smallest["trial"]).run()
    at.button(key="tr_open").click().run()
    assert not at.exception
    at.switch_page("ui/pages/compress.py").run()  # AppTest does not follow st.switch_page (the browser test does)
    assert at.radio(key="r_rank_mode").value == "ratio" and at.slider(key="r_rank").value == pytest.approx(0.2)
    said = [i.value for i in at.info if "Measured by the sweep" in i.value]  # the store's numbers at once
    assert said and f"trial {smallest['trial']}" in said[0] and name in said[0].replace("\\", ""), said
    shown = {m.label: m.value for m in at.metric}
    assert shown["size (MB)"] == f"{smallest['size_mb']:,.2f} MB" and \
        shown["bits per char"] == f"{smallest['bits_per_char']:.4f}", shown
    assert not [m for m in at.metric if m.label == "Size"]  # nothing measured now
    at.button(key="trial_apply").click().run()  # Apply to re-measure: kept in the store's history
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len([m for m in at.metric if m.label == "Size"]) == 2 and not [i for i in at.info if "by the sweep" in i.value]
    # a restart: a new session of a new server, the same store
    again = page()
    assert again.selectbox(key="tr_pick").value == name
    assert len(again.get("plotly_chart")) == 2 and len(again.dataframe[-1].value) == 3
    again.switch_page("ui/pages/compress.py").run()
    assert again.caption and any("Nothing applied yet in this session" in c.value for c in again.caption)
    again.toggle(key="history_all").set_value(True).run()
    assert not again.exception, again.exception
    hist = again.dataframe[-1].value
    assert len(hist) == 1 and hist["model"][0] == "tinygpt" and "rank ratio 0.2" in hist["recipe"][0]
    assert list(hist.columns[:6]) == ["when", "model", "recipe", "size MB", "x smaller", "x faster"]  # a phone's width
    C.record_apply("another-visitor", "acme-confidential-v3.zip", C.Recipe().to_json(), {"size_mb": 1.0})
    again.run()  # another visitor's upload: its numbers shown, its file name not
    hist = again.dataframe[-1].value
    assert list(hist["model"]) == ["another session's upload", "tinygpt"] and "acme" not in hist.to_csv()


@pytest.mark.parametrize("model, vary, specs", [
    ("minilm", ["quant", "emb_bits"], {"quant": "none,int8,int4", "emb_bits": "0,4,2"}),  # an encoder: the useful one
    ("tinygpt", ["rank"], {"rank": "0.1:1.0:0.1"}),
])
def test_the_default_sweep_is_the_one_a_newcomer_learns_most_from(store_dir, model, vary, specs):
    at = page(model)
    assert at.multiselect(key="tr_vary").value == vary
    assert {k: at.text_input(key=f"tr_spec_{k}").value for k in vary} == specs
    assert ("8.65x" in at.multiselect(key="tr_vary").help) == (model == "minilm")  # says why, with the numbers
    assert "9 combination(s)" in " ".join(c.value for c in at.caption) or model != "minilm"


def test_find_me_a_recipe_opens_the_best_feasible_one(store_dir):
    at = page()
    at.selectbox(key="tr_target").set_value("size_mb").run()
    at.number_input(key="tr_bound").set_value(4.0).run()
    at.selectbox(key="tr_best").set_value("bits_per_char").run()
    at.multiselect(key="tr_find_fields").set_value(["layers", "ffn"]).run()
    at.number_input(key="tr_find_trials").set_value(6).run()
    next(b for b in at.button if b.label == "Find").click().run()
    assert not at.exception and not at.error
    name = at.session_state["tr_study"]
    _wait_done(name)
    at.run()
    rows = [r for r in frontier.rows(sweep.open_study(None, name)) if r["state"] == "complete"]
    assert len(rows) == 6
    feasible = [r for r in rows if r["size_mb"] <= 4.0]
    best = min(feasible, key=lambda r: r["bits_per_char"])
    assert [s.value for s in at.success if f"trial {best['trial']}" in s.value]
    at.button(key="tr_open_best").click().run()
    at.switch_page("ui/pages/compress.py").run()
    recipe = C.Recipe.from_json(best["recipe"])
    n = C.load_model("tinygpt").info["layers"]  # keeping all n blocks shows as the slider's "all" (0)
    assert at.session_state["r_layers"] == (0 if recipe.layers == n else recipe.layers)
    assert at.session_state["r_ffn"] == recipe.ffn and not [i for i in at.info if "set back" in i.value]


@pytest.mark.parametrize("vary, spec, objectives, says", [
    (["rank"], "0:1:0.1", ["bits_per_char"], "outside the technique table's range"),
    (["layers"], "1:9:1", ["size_mb"], "tinygpt has 4 blocks"),
    (["layers", "heads", "ffn"], None, [], "at least one objective"),
])
def test_bad_choices_are_one_line_and_start_nothing(store_dir, vary, spec, objectives, says):
    at = page()
    at.multiselect(key="tr_vary").set_value(vary).run()
    if spec:
        at.text_input(key=f"tr_spec_{vary[0]}").set_value(spec).run()
    at.multiselect(key="tr_objectives").set_value(objectives).run()
    at.button[0].click().run()
    assert not at.exception
    shown = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]  # the page escapes its markdown (ui/safe.plain)
    assert [e for e in shown if says in e], shown
    assert "tr_study" not in at.session_state and studies.names() == []


def test_a_crafted_study_link_is_one_line(store_dir):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"model": "tinygpt", "study": "x" * 5000})
    at.run()
    at.switch_page("ui/pages/tradeoffs.py").run()
    assert not at.exception
    assert any("No sweeps of tinygpt yet" in i.value for i in at.info)
    assert not os.listdir(store_dir) or all(f.endswith(".sqlite") for f in os.listdir(store_dir))


def test_only_the_browser_that_started_a_sweep_can_stop_it_even_after_a_reload(store_dir, monkeypatch):
    import threading
    from compress.serve import jobs
    q, gate = jobs.Queue(2, long=1), threading.Event()  # one long job at a time: the sweep waits, loads still run
    monkeypatch.setattr(jobs, "_QUEUE", q)
    q.submit("heal", lambda j: gate.wait(120))
    try:
        a = page()
        a.multiselect(key="tr_vary").set_value(["layers"]).run()
        a.multiselect(key="tr_objectives").set_value(["size_mb"]).run()
        a.button[0].click().run()  # Start sweep: it waits behind the healing
        name, key = a.session_state["tr_study"], a.query_params["key"]
        assert not a.exception and [b for b in a.button if b.key == "tr_cancel"]
        other = AppTest.from_file(APP, default_timeout=400)
        other.query_params.update({"model": "tinygpt", "study": name})
        other.run()
        other.switch_page("ui/pages/tradeoffs.py").run()
        assert any("waiting" in i.value for i in other.info) and not [b for b in other.button if b.key == "tr_cancel"]
        again = AppTest.from_file(APP, default_timeout=400)  # A reloads the page: a new session, the same URL
        again.query_params.update({"model": "tinygpt", "study": name, "key": key})
        again.run()
        again.switch_page("ui/pages/tradeoffs.py").run()
        again.button(key="tr_cancel").click().run()
        job = studies.job_of(name)
        assert not again.exception and q.wait(job, 60) and job.state == "cancelled"
    finally:
        gate.set()
