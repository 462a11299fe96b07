"""A shared link on the Compress page, in AppTest (split from tests/test_app.py): its recipe restored into the
controls, counts a model cannot take set back to all with a message, a bad link ignored with one, and healing's time
cap kept beside its steps."""
import re

import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from test_app import APP
from ui import safe



def test_recipe_is_restored_from_the_link_and_its_attention_variant_timed_over_t(app, tiny_bert):
    app.query_params.update({"rank_mode": "energy", "rank": "0.8", "quant": "bf16", "ffn": "0.5", "attention": "local",
                             "window": "4"})
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    folded = [e.label for e in app.expander if e.label.startswith("More techniques")]
    assert folded == ["More techniques (in this recipe: FFN 0.5, local attention W=4)"]  # folded controls the link
    #  set say so
    assert app.slider(key="r_ffn").value == 0.5
    assert app.radio(key="r_rank_mode").value == "energy"
    assert app.slider(key="r_rank").value == pytest.approx(0.8)
    assert app.selectbox(key="r_quant").value == "bf16" and app.selectbox(key="r_attention").value == "local"
    app.selectbox(key="seqlen_longest").set_value(512).run()  # the variant alone, over T (seqlen.py)
    app.button(key="seqlen_run").click().run()
    assert not app.exception and not app.error
    words = [c.value for c in app.caption if c.value.startswith("The chart in words: Cost of one forward call")]
    assert words and all(safe.plain(s) in words[0]
                         for s in ("local attention W=4 (ms): 3 points", "sdpa (MB): 3 points"))
    table = next(d.value for d in app.dataframe if "T" in d.value.columns)
    assert sorted(set(table["model"])) == ["eager", "local attention W=4", "sdpa"] and sorted(set(table["T"])) == [
        128, 256, 512]
    got = app.session_state["seqlen"]  # timed while other programs were busy: the crossover is said to be unsure
    got["rows"] = [{**r, "others_busy": 0.9} for r in got["rows"]]
    app.run()
    assert any("Timing unreliable: other programs used up to 90%" in w.value for w in app.warning)
    next(b for b in app.button if b.label == "Apply").click().run()  # the report takes the curve the page timed
    assert not app.exception and not app.error
    from ui import takeaway
    from compress.outputs import html as report, plots
    res, b = app.session_state["result"], tiny_bert
    curve = takeaway.timed(b, res["recipe"], app.session_state["seqlen"])
    html = takeaway.report_html(b, res, {}, curve)
    said = plots.seqlen_unreliable(got["rows"])  # the page's warning, word for word
    assert curve is got and "<h2>Cost over sequence length</h2>" in html and f"<p>{report._e(said)}</p>" in html
    assert said.startswith("Timing unreliable") and said in [w.value for w in app.warning]
    assert "local attention W=4 is faster than the original (sdpa)" in html and "The chart in words: Cost of" in html
    other = C.Recipe.from_dict({**res["recipe"].to_dict(), "window": 8})  # another window: not this curve
    assert takeaway.timed(b, other, got) is None and takeaway.timed(b, C.Recipe(), got) is None
    assert "Cost over sequence length" not in takeaway.report_html(b, res, {})


def test_counts_this_model_cannot_take_are_set_back_to_all_with_a_message(app):
    app.query_params.update({"layers": "5", "heads": "9"})  # tiny-bert: 2 blocks of 4 heads
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    assert not app.exception
    assert app.select_slider(key="r_layers").value == 0 and app.select_slider(key="r_heads").value == 0
    said = " ".join(i.value for i in app.info)
    assert "layers = 5 does not fit tiny-bert, which has 2 blocks" in said and "heads = 9" in said


def test_a_count_equal_to_the_model_s_shows_as_all_silently(app):
    """layers = 2 on tiny-bert's 2 blocks (a sweep's range ends at n): the slider's "all", no message."""
    app.query_params.update({"layers": "2", "heads": "4"})
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    assert not app.exception and not [i for i in app.info if "set back" in i.value or "does not fit" in i.value]
    assert app.select_slider(key="r_layers").value == 0 and app.select_slider(key="r_heads").value == 0


def test_a_gqa_model_offers_equal_groups_only_and_sets_other_counts_back(monkeypatch):
    """A Llama-family model, 4 query heads over 2 key/value heads: the heads control offers 2 and all; a link's 3
    is set back to all with the library's reason."""
    from test_llama import _bundle, _model
    monkeypatch.setitem(C.BUNDLED, "tiny-llama", lambda: _bundle(_model("llama"), "llama"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"model": "tiny-llama", "heads": "3"})
    at.run()
    at.switch_page("ui/pages/compress.py").run()
    assert not at.exception
    heads = at.select_slider(key="r_heads")
    assert heads.value == 0 and list(heads.options) == ["2", "all 4"]
    assert "keep 2, 4 heads per block, got 3: set back to all" in " ".join(i.value for i in at.info)


def test_a_bad_link_is_ignored_with_a_message(app):
    app.query_params.update({"rank": "7"})
    app.run()
    assert any("recipe in the link was ignored" in w.value for w in app.warning)
    app.switch_page("ui/pages/compress.py").run()
    assert app.slider(key="r_rank").value == 1.0


def test_a_links_healing_time_cap_travels_with_its_steps(app):
    """A preset's 45 minutes go into the link beside its healing steps, and a session opened from the link gets them
    (the default 5 would cut the healing short, and nothing said so); a cap outside 0.5-60 min is ignored, said."""
    app.query_params.update({"heal_steps": "400", "heal_minutes": "45"})
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    assert app.number_input(key="heal_minutes").value == 45 and app.query_params["heal_minutes"] in ("45", ["45"])
    app.number_input(key="heal_minutes").set_value(5.0).run()  # the default cap: left out of the link
    assert "heal_minutes" not in app.query_params
    for bad in ("1e9", "nan", "ten"):
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params.update({"model": "tiny-bert", "heal_steps": "400", "heal_minutes": bad})
        at.run()
        assert any("healing time cap was ignored" in w.value for w in at.warning), bad
        at.switch_page("ui/pages/compress.py").run()
        assert at.number_input(key="heal_minutes").value == 5.0


def test_a_link_to_a_recipe_measured_before_shows_the_stored_numbers_at_once(app, tiny_bert):
    """A shared link's receiver sees the sender's numbers from the results store without measuring (or healing) again,
    marked as stored; another recipe, or none measured, says to press Apply (a newcomer's review: the room got blank
    pages)."""
    link = {"quant": "int8", "ffn": "0.75"}
    app.query_params.update(link)
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    next(b for b in app.button if b.label == "Apply").click().run()
    assert not app.exception
    size = app.session_state["result"]["nums"]["compressed"]["size_bytes"]
    for query, stored in ((link, True), ({**link, "ffn": "0.5"}, False)):
        fresh = AppTest.from_file(APP, default_timeout=120)
        fresh.query_params.update({"model": "tiny-bert", **query})
        fresh.run()
        fresh.switch_page("ui/pages/compress.py").run()
        assert not fresh.exception
        said = [i.value for i in fresh.info if i.value.startswith("**Measured here before**")]
        assert len(said) == stored, said
        if stored:
            assert "another session" in said[0] and f"{size / 1e6:.1f} MB" in said[0] and "x smaller" in said[0]
            assert "fidelity" in said[0] and "Apply measures it again here" in said[0]
        else:
            assert any(i.value.startswith("Move the controls") for i in fresh.info)
    # an upload of the same weights with another config (the same hash) is never shown as the bundled model's
    C.record_apply("attacker", "tiny-bert.zip", C.Recipe(quant="int8", ffn=0.5).to_json(),
                   {"recipe": "poisoned", "size MB": 0.01, "x smaller": 999, "model_hash": tiny_bert.content_hash})
    fresh = AppTest.from_file(APP, default_timeout=120)
    fresh.query_params.update({"model": "tiny-bert", "quant": "int8", "ffn": "0.5"})
    fresh.run()
    fresh.switch_page("ui/pages/compress.py").run()
    assert not [i for i in fresh.info if "poisoned" in i.value or i.value.startswith("**Measured here before**")]
    # a healing its time cap cut short is not the recipe's numbers (the receiver's cap may let it run); a whole one is
    healed = C.Recipe(quant="int8", heal_steps=400)
    for run, shown in (12, False), (None, False), (400, True):  # (None: a row of before, which did not say)
        ran = healed.ran({"heal": {"steps_run": run or 400, "ended": "time cap", "best_step": 10}})
        C.record_apply("sender", "tiny-bert", healed.to_json(), {"recipe": ran, "size MB": 0.5, "x smaller": 3.9,
                                                                  "model_hash": tiny_bert.content_hash,
                                                                  "heal steps run": run})
        fresh = AppTest.from_file(APP, default_timeout=120)
        fresh.query_params.update({"model": "tiny-bert", "quant": "int8", "heal_steps": "400", "heal_minutes": "45"})
        fresh.run()
        fresh.switch_page("ui/pages/compress.py").run()
        said = [i.value for i in fresh.info if i.value.startswith("**Measured here before**")]
        assert len(said) == shown and all("healed 400 steps" in s and " of 400" not in s for s in said), said


def test_a_reload_while_healing_finds_the_healing_its_stop_and_its_result(app, monkeypatch):
    """A reload is a new session: the URL's token of the healing (kept with the recipe) finds it again, with its bar
    and Stop, and the healed model comes to the new session; the same visitor's second healing is refused with the
    running one shown."""
    from ui import jobs
    monkeypatch.setattr(jobs, "client", lambda: "192.0.2.7")  # one remote visitor (AppTest has no address)
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    app.radio(key="r_rank_mode").set_value("ratio").run()
    app.slider(key="r_rank").set_value(0.25).run()
    app.number_input(key="r_heal_steps").set_value(100000).run()
    app.button[0].click().run()  # Apply: healing starts in the background
    assert not app.exception and not app.error, [e.value for e in app.error]
    job = app.session_state["heal_job"]
    url = {k: app.query_params[k] for k in app.query_params}
    assert job is not None and not job.ended.is_set() and url["healing"] == app.session_state["heal_token"]
    again = AppTest.from_file(APP, default_timeout=120)  # the reload: a new session on the same URL
    again.query_params.update(url)
    again.run()
    again.switch_page("ui/pages/compress.py").run()
    assert not again.exception and not again.error, [e.value for e in again.error]
    assert again.session_state["heal_job"] is job and job.owner == again.session_state["sid"]
    assert any(b.label.startswith("Stop") for b in again.button)
    other = AppTest.from_file(APP, default_timeout=120)  # a link with another token finds nothing
    other.query_params.update({**url, "healing": "x" * 22})
    other.run()
    other.switch_page("ui/pages/compress.py").run()
    assert "heal_job" not in other.session_state or other.session_state["heal_job"] is None
    other.button[0].click().run()  # its own healing: refused (one at a time per visitor), the running one shown
    assert any("already healing" in e.value for e in other.error) and other.session_state["heal_job"] is job
    assert any(b.label.startswith("Stop") for b in other.button) and sum(h.job is job for h in jobs._HEALERS) == 1
    while "step" not in job.progress and not job.ended.wait(0.1):  # Stop before the first step drops the healing
        pass
    again.run()
    again.button(key="heal_stop").click().run()
    assert job.ended.wait(120) and job.state == "done"
    again.run()
    assert not again.exception and not again.error, [e.value for e in again.error]
    assert "healed" in again.dataframe[-1].value["recipe"][0] and "Stop" in again.dataframe[-1].value["recipe"][0]
    kept = C.applies(again.session_state["sid"])[0]  # the row says how many steps ran (trial.stored reads it)
    assert kept["heal steps run"] == int(re.search(r"healed (\d+) of 100000 steps", kept["recipe"])[1]), kept
    assert "healing" not in again.query_params  # the token goes with the healing
