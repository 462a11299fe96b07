"""AppTest of the app under hostile links, odd models and several sessions at once: one clear line, never an
exception, no session seeing another's numbers, and the job queue serving every session."""
import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from conftest import ROOT
from test_app import APP, compress_page


def test_two_sessions_never_see_each_others_recipe_or_model(tiny_bert, monkeypatch):
    import torch
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    before = {k: v.clone() for k, v in tiny_bert.model.state_dict().items()}
    sessions = []
    for quant in ("int8", "bf16"):
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params["model"] = "tiny-bert"
        at.run()
        at.switch_page("ui/pages/compress.py").run()
        at.selectbox(key="r_quant").set_value(quant).run()
        at.button[0].click().run()
        sessions.append(at)
    for at, quant in zip(sessions, ("int8", "bf16")):
        at.run()
        assert list(at.dataframe[-1].value["recipe"]) == [quant]
        assert at.selectbox(key="r_quant").value == quant
    sizes = [[m.value for m in at.metric if m.label == "Size"][1] for at in sessions]
    assert sizes[0] != sizes[1]
    after = tiny_bert.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the shared original is never mutated


def test_link_values_below_a_sliders_range_and_short_uploads_show_no_exception(app):
    app.query_params.update({"rank_mode": "ratio", "rank": "0.01"})  # the library takes it, the slider starts at 0.02
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    assert not app.exception and app.slider(key="r_rank").value == 0.01
    app.switch_page("ui/pages/spectra.py").run()
    assert not app.exception


@pytest.mark.slow
def test_empty_prompt_for_a_decoder_is_one_line(tiny_gpt, monkeypatch):
    monkeypatch.setitem(C.BUNDLED, "tiny-gpt", lambda: tiny_gpt)  # a 2-block decoder: the Apply is a moment
    at = compress_page("tiny-gpt")
    at.button[0].click().run()
    at.text_input(key="prompt").set_value("").run()
    assert not at.exception and any("give a prompt" in i.value for i in at.info)


def test_a_model_with_few_positions_gets_a_sequence_length_it_can_take(app, tiny_bert, monkeypatch):
    import dataclasses
    short = dataclasses.replace(tiny_bert, info={**tiny_bert.info, "max_positions": 16}, cache={})
    monkeypatch.setitem(C.BUNDLED, "short", lambda: short)
    app.query_params["model"] = "short"
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    assert not app.exception and app.number_input(key="live_seq").value == 16


def test_no_traceback_is_ever_shown_and_the_server_listens_on_localhost():
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert 'showErrorDetails = "none"' in config
    assert "--server.address 127.0.0.1" in (ROOT / "Makefile").read_text()


def test_an_apply_waits_for_one_healing_step_not_the_whole_healing(tiny_bert, monkeypatch):
    """Two sessions on one server: A heals in the background on the job queue, B's Apply runs between two of A's
    steps (B sees its numbers while A still heals), and A's Stop ends it keeping its best state."""
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    a, b = (AppTest.from_file(APP, default_timeout=120) for _ in range(2))
    for at in (a, b):
        at.query_params["model"] = "tiny-bert"
        at.run()
        at.switch_page("ui/pages/compress.py").run()
    a.number_input(key="r_heal_steps").set_value(5000).run()
    a.button[0].click().run()  # A: healing starts on the queue
    heal = a.session_state["heal_job"]
    for _ in range(100):
        if heal.progress.get("step"):
            break
        heal.ended.wait(0.1)
    b.selectbox(key="r_quant").set_value("int8").run()
    b.button[0].click().run()  # B: Apply, queued behind A's healing
    assert not b.exception and not b.error and len([m for m in b.metric if m.label == "Size"]) == 2
    assert not heal.ended.is_set()  # B did not wait for A's 5,000 steps
    heal.stop.set()  # A's Stop (keeps the best state; a Cancel would drop it)
    assert heal.ended.wait(60) and heal.result is not None and heal.result.applied["heal"]["stopped"]


def test_an_encoder_without_a_tokenizer_says_so_instead_of_sample_outputs(tiny_bert, monkeypatch):
    """An upload with no tokenizer: Apply works, and the sample outputs are one line, not a failed search."""
    from streamlit.testing.v1 import AppTest
    from compress.models.bundle import ModelBundle
    from conftest import ROOT
    bare = ModelBundle(tiny_bert.model, "tiny-bert-bare", tiny_bert.adapter, None, "tiny-bert-bare-hash",
                       tiny_bert.info)
    monkeypatch.setitem(C.BUNDLED, "tiny-bert-bare", lambda: bare)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["model"] = "tiny-bert-bare"
    at.run()
    at.switch_page("ui/pages/compress.py").run()
    at.button[0].click().run()  # Apply
    assert not at.exception and not at.error
    assert any("no tokenizer: no sample outputs" in i.value for i in at.info)
