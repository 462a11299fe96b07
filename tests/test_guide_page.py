"""The Compress page's guides (ui/guide.py): a preset fills the controls with its measured recipe (one this model
cannot take says why), an Apply shows a quality verdict with its thresholds, and the Quantization control teaches
the value chosen."""
import compress as C
from compress.table import presets


def test_a_preset_fills_the_controls_and_apply_shows_a_verdict(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    box = app.selectbox(key="preset")
    assert "static" in box.options and "about 10x (not for this model)" in box.options  # tiny-bert: 2 of 3 layers
    box.set_value("about 4x").run()
    assert not app.exception
    assert app.session_state["r_quant"] == "int8"
    assert any("Measured on MiniLM" in c.value and "3.87x smaller" in c.value for c in app.caption)
    assert any("These are minilm's numbers, not tiny-bert's: Apply measures it on tiny-bert." == c.value
               for c in app.caption)  # (a decoder's 4x ran 1.15x slower under MiniLM's "1.7x faster")
    assert app.number_input(key="heal_minutes").value == 5.0  # no healing: the cap is left as it was
    box.set_value("about 10x").run()
    assert any("cannot apply to tiny-bert" in c.value for c in app.caption)
    box.set_value("static").run()  # its labeling and 1,600 steps need more than the default 5 min
    assert not app.exception and app.number_input(key="heal_minutes").value == 15.0
    assert any("set healing's time cap to 15 min" in c.value for c in app.caption)
    assert not [c for c in app.caption if "no longer hold" in c.value]
    app.session_state["r_vocab"] = 0.3  # a control moved: the preset's numbers are not this recipe's any more
    app.run()
    assert any("no longer hold static's recipe" in c.value for c in app.caption)
    box.set_value("about 4x").run()
    next(b for b in app.button if b.label == "Apply").click().run()
    assert not app.exception
    said = [m.value for m in [*app.success, *app.info, *app.warning] if m.value.startswith("Quality: **")]
    assert len(said) == 1 and "fidelity" in said[0] and ">= 0.95" in said[0]
    assert C.Recipe(**presets.BY_NAME["about 4x"].recipe) == app.session_state["result"]["recipe"]


def test_the_speed_names_its_workload_and_nothing_where_a_result_does_not_say_it():
    from ui.guide import timed_on
    assert timed_on({"kind": "ids", "batch": 8, "seq": 32}).endswith("(8x32)")
    assert timed_on(None) == timed_on({}) == timed_on({"kind": "ids"}) == ""


def test_quantization_teaches_only_the_value_chosen(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    steps = {s.name: s.teach for s in C.STEPS}
    shown = lambda: [c.value for c in app.caption]  # noqa: E731
    assert not any(steps[n] in c for c in shown() for n in ("int8", "int4", "half"))
    assert any(c.startswith("Quantization: choose one of int8, int4, fp16, bf16") for c in shown())
    app.selectbox(key="r_quant").set_value("int4").run()
    assert any(steps["int4"] in c for c in shown())
    assert not any(steps[n] in c for c in shown() for n in ("int8", "half"))
    assert not any(c.startswith("Quantization: choose one") for c in shown())
