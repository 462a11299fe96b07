"""AppTest for every page, on a tiny random BERT registered as a bundled model (fast), plus MiniLM once; a shared
link's recipe on the Compress page: tests/test_app_links.py."""
import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from compress.models import limits
from conftest import ROOT
from ui import safe

APP = str(ROOT / "app.py")


def _metric(at, label):
    return next(m for m in at.metric if m.label == label)


def compress_page(model: str) -> AppTest:
    """A new session on a bundled model's Compress page."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["model"] = model
    at.run()
    at.switch_page("ui/pages/compress.py").run()
    return at


def test_model_page_shows_the_card(app):
    app.run()
    assert not app.exception
    assert _metric(app, "Architecture").value == "Bert"
    assert _metric(app, "Layers x heads").value == "2 x 4"
    assert _metric(app, "Params").value.endswith(" M")
    assert any("Quality metric" in m.value for m in app.markdown)
    assert "tiny-bert" in app.sidebar.caption[0].value
    start = app.get("page_link")[0].proto  # the first thing under the title: where a newcomer goes next
    assert start.page == "compress" and start.label.startswith("Start here: Compress")


def test_spectra_page_slider_moves_the_cut(app):
    app.run()
    app.switch_page("ui/pages/spectra.py").run()
    assert not app.exception
    assert _metric(app, "Layers factorized").value == "0 / 12"  # rank mode none
    app.radio(key="r_rank_mode").set_value("ratio").run()
    app.slider(key="r_rank").set_value(0.25).run()
    assert _metric(app, "Layers factorized").value == "12 / 12"
    kept_quarter = float(_metric(app, "Factorizable params kept").value.rstrip("%"))
    app.slider(key="r_rank").set_value(0.1).run()
    assert float(_metric(app, "Factorizable params kept").value.rstrip("%")) < kept_quarter
    app.slider(key="r_rank").set_value(1.0).run()
    assert _metric(app, "Layers factorized").value == "0 / 12"  # full rank would be bigger: all kept dense


def test_compress_page_apply_shows_both_sides(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    assert not app.exception
    app.selectbox(key="r_quant").set_value("int8").run()
    app.button[0].click().run()  # Apply
    assert not app.exception and not app.error
    sizes = [m for m in app.metric if m.label == "Size"]
    assert len(sizes) == 2 and "x smaller" in sizes[1].delta
    assert float(sizes[1].delta.split("x")[0]) > 3
    phone = app.table[0].value  # the same comparison as one table (a phone shows it instead of the two columns)
    assert list(phone.loc["Size"]) == [sizes[0].value, sizes[1].value, sizes[1].delta], phone
    assert phone.loc["fidelity · our sentences", "Compressed"] == \
        [m.value for m in app.metric if m.label == "fidelity · our sentences"][1]
    glance = [m.value for m in app.markdown if m.value.startswith("**int8**: ")]  # beside Apply: the same numbers
    assert glance and f"{sizes[1].delta}, " in glance[0] and "[Details](#result)" in glance[0], glance
    w = app.session_state["result"]["workload"]  # the speed names the workload it was timed on (a preset's: 8 x 128)
    assert f"x {'faster' if 'faster' in glance[0] else 'slower'} on " in glance[0] and f"({w['batch']}x{w['seq']})" \
        in glance[0], glance
    for label in ("fidelity · our sentences", "fidelity · Python docs"):  # both sets, each named
        fidelity = [float(m.value) for m in app.metric if m.label == label]
        assert fidelity[0] == 1.0 and 0.9 < fidelity[1] <= 1.0
    assert len([m for m in app.metric if m.label.startswith("retrieval overlap · ")]) == 4
    assert any(c.value == "GPU latency: no GPU on this machine" for c in app.caption) or C.gpu_info()
    assert [c.value for c in app.caption if c.value.endswith("of 5 results in both lists (✓).")]
    moved = [e for e in app.expander if e.label == "The 5 sentences that moved most"][0].dataframe[0].value
    assert list(moved.columns) == ["sentence", "cosine"] and list(moved["cosine"]) == sorted(moved["cosine"])
    assert 0 < moved["cosine"][0] <= 1 and moved["sentence"][0] in C.eval_set()[0]  # (our sentences: the default set)
    report = app.session_state["samples"]["Moved most"]  # the same sentences in the report's sample outputs
    assert report == [f"{c:.3f}: {t}" for t, c in zip(moved["sentence"], moved["cosine"])]
    assert app.query_params["quant"] == ["int8"] or app.query_params["quant"] == "int8"
    assert set(app.query_params) == {"model", "quant"}  # the fields off their defaults: a short link to share
    history = app.dataframe[-1].value
    assert len(history) == 1 and history["recipe"][0] == "int8"
    app.selectbox(key="r_quant").set_value("none").run()  # a row of History opened again: its recipe, its numbers
    app.button(key="history_open").click().run()
    assert not app.exception and app.selectbox(key="r_quant").value == "int8"
    assert any(h.value.startswith("Original vs compressed: int8") for h in app.subheader)  # (this session's last)
    assert not [w for w in app.warning if w.value.startswith("Showing the last applied recipe")]


@pytest.mark.heavy  # make test-slow only (37 s): the newcomer's browser test applies on MiniLM through the app and
@pytest.mark.slow  # test_quantize checks MiniLM's int8 fidelity and size in make test
def test_minilm_default_loads_and_applies():
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert _metric(at, "Params").value == "22.71 M"
    at.switch_page("ui/pages/compress.py").run()
    at.selectbox(key="r_quant").set_value("int8").run()
    at.button[0].click().run()
    assert not at.exception
    assert float([m for m in at.metric if m.label == "fidelity · our sentences"][1].value) >= 0.9
    assert float([m for m in at.metric if m.label == "fidelity · Python docs"][1].value) >= 0.9


def _zip_of(folder) -> bytes:
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in folder.iterdir():
            z.write(f, f"my-model/{f.name}")
    return buf.getvalue()


def test_a_bad_upload_shows_the_message_and_keeps_the_model(app, tmp_path):
    from builders import build_family
    app.run().run()  # (AppTest runs the page without app.py: see shell.page)
    app.radio(key="model_source").set_value("Upload a zip").run()
    app.file_uploader(key="upload").upload("weights.zip", b"PK\x03\x04 this is not a zip").run()
    assert not app.exception
    assert any("Could not load that model" in e.value and "zip" in e.value for e in app.sidebar.error)
    assert "tiny-bert" in app.sidebar.caption[0].value  # the model loaded before is still the active one
    assert _metric(app, "Architecture").value == "Bert"
    build_family("gpt2", tmp_path)  # now a good one: the card follows it
    app.file_uploader(key="upload").set_value(("gpt2.zip", _zip_of(tmp_path), "application/zip")).run()
    assert not app.exception and not app.sidebar.error
    assert _metric(app, "Architecture").value.startswith("GPT2")
    app.switch_page("ui/pages/compress.py").run()  # its link names the upload; a reload (a new session) says it is gone
    url = {k: app.query_params[k] for k in app.query_params}
    assert url["upload"] == "gpt2.zip" and "model" not in url
    again = AppTest.from_file(APP, default_timeout=120)
    again.query_params.update(url)
    again.run()
    said = [w.value for w in again.warning if "uploaded model" in w.value]
    assert said and safe.plain("gpt2.zip") in said[0] and "Upload it again" in said[0] and not again.exception


def test_upload_limit_in_config_matches_the_library():
    import tomllib
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] * 2**20 == C.MAX_UPLOAD_BYTES == limits.DEFAULT_UPLOAD_MB * 2**20


@pytest.mark.slow
def test_every_page_works_with_tinygpt():
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["model"] = "tinygpt"
    at.run()
    assert not at.exception
    assert _metric(at, "Architecture").value == "TinyGPT"
    assert any("bits_per_char" in m.value.replace("\\", "") for m in at.markdown)  # (shown as plain text)
    at.switch_page("ui/pages/spectra.py").run()
    at.radio(key="r_rank_mode").set_value("ratio").run()
    at.slider(key="r_rank").set_value(0.5).run()
    assert not at.exception and _metric(at, "Layers factorized").value.endswith("/ 24")
    charts = at.get("plotly_chart")  # each chart with its text alternative beneath it
    words = [c.value for c in at.caption if c.value.startswith("The chart in words: ")]
    assert charts and len(words) == len(charts)
    assert all(w.endswith(".") and ("points" in w or "map" in w) for w in words)
    at.switch_page("ui/pages/compress.py").run()
    heal_file = [e.proto for e in at.get("file_uploader") if e.proto.label.startswith("Heal on your own text")]
    assert [f.max_upload_size_mb for f in heal_file] == [C.MAX_HEAL_BYTES >> 20]  # its own 8 MB, not the server's
    assert not heal_file[0].type  # any name: Streamlit's own check of type= raised outside every guard ("h\0.txt")
    at.selectbox(key="r_quant").set_value("int8").run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    bpc = [float(m.value) for m in at.metric if m.label == "bits per char"]
    assert len(bpc) == 2 and 1.5 < bpc[0] < 2.0 and bpc[1] > 0
    samples = [c.value for c in at.code]
    assert len(samples) == 4 and all(s.startswith("The for statement") and len(s) > 100 for s in samples)


def test_technique_controls_apply_and_disable_with_reasons(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    assert app.checkbox(key="r_fnet").disabled is False
    app.select_slider(key="r_layers").set_value(1).run()
    app.select_slider(key="r_heads").set_value(2).run()
    assert app.checkbox(key="r_fnet").disabled  # FNet or head pruning, not both
    assert any("choose FNet or head pruning" in c.value for c in app.caption)
    app.slider(key="r_ffn").set_value(0.5).run()
    app.selectbox(key="r_runtime").set_value("freeze").run()
    app.button[0].click().run()
    assert not app.exception and not app.error
    params = [float(m.value.split()[0]) for m in app.metric if m.label == "Params"]
    assert params[1] < params[0]
    assert app.query_params["heads"] in ("2", ["2"]) and app.query_params["runtime"] in ("freeze", ["freeze"])
    assert app.query_params["layers"] in ("1", ["1"])
    assert any(c.value.startswith("Blocks kept (by influence): [") for c in app.caption)
    assert "1 layers, 2 heads, FFN 0.5, freeze" in app.dataframe[-1].value["recipe"][0]


def test_low_bit_table_and_embedding_rank_exclude_each_other(app, tiny_bert):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    app.radio(key="r_emb_bits").set_value(2).run()
    why = C.field_reason("emb_rank", tiny_bert, {**C.Recipe().to_dict(), "emb_bits": 2})
    assert why and "one way to shrink" in why  # the library's reason, shown by the page as plain text
    assert app.slider(key="r_emb_rank").disabled and any(safe.plain(why) in c.value for c in app.caption)
    app.button[0].click().run()
    assert not app.exception and not app.error
    sizes = [float(m.value.split()[0]) for m in app.metric if m.label == "Size"]
    assert sizes[1] < sizes[0] / 3  # the table is most of this tiny model
    assert app.query_params["emb_bits"] in ("2", ["2"]) and "embeddings 2-bit" in app.dataframe[-1].value["recipe"][0]
    app.radio(key="r_emb_bits").set_value(0).run()
    app.slider(key="r_emb_rank").set_value(0.5).run()
    assert app.radio(key="r_emb_bits").disabled



def test_a_rank_that_factorizes_nothing_says_so_beside_its_one_times(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    app.radio(key="r_rank_mode").set_value("ratio").run()
    app.slider(key="r_rank").set_value(0.9).run()
    app.button[0].click().run()
    assert not app.exception and not app.error
    assert "no layer factorized" in app.dataframe[-1].value["recipe"][0]  # History, and the result's title
    assert any("no layer factorized" in h.value for h in app.subheader)


@pytest.mark.slow
def test_fnet_is_disabled_for_a_decoder_with_the_reason():
    at = compress_page("tinygpt")
    assert at.checkbox(key="r_fnet").disabled
    assert any("future tokens" in c.value for c in at.caption)


def test_healing_runs_in_the_background_and_shows_before_and_after(app):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    app.radio(key="r_rank_mode").set_value("ratio").run()
    app.slider(key="r_rank").set_value(0.25).run()
    app.number_input(key="r_heal_steps").set_value(20).run()
    app.button[0].click().run()  # Apply: starts healing and returns at once
    assert not app.exception
    job = app.session_state["heal_job"]
    assert job is not None and job.kind == "heal"
    bars = [p.proto.text for p in app.get("progress") if "Heal" in p.proto.text]  # the steps run, of how many
    assert bars and "of 20 steps run" in bars[0] and "?" not in bars[0], bars
    assert job.ended.wait(120) and job.state == "done"
    app.run()  # the poller sees the thread done and reruns the page, which measures the healed model
    assert not app.exception and not app.error, [e.value for e in app.error]
    said = [c.value for c in app.caption if c.value.startswith("before healing: fidelity")]
    assert said and "Healed 20 steps" in said[0] and "all steps run" in said[0], said
    assert "healed 20 steps" in app.dataframe[-1].value["recipe"][0]


def test_spectra_page_measures_sensitivity_and_allocates_by_it(app):
    app.run()
    app.switch_page("ui/pages/spectra.py").run()
    app.radio(key="r_rank_mode").set_value("budget").run()
    app.slider(key="r_rank").set_value(0.5).run()
    spectral = _metric(app, "Mean energy kept").value
    app.button[0].click().run()  # Measure sensitivity
    assert not app.exception
    assert len(app.get("plotly_chart")) == 4  # one spectrum, all spectra, heatmap, sensitivity bars
    app.switch_page("ui/pages/compress.py").run()
    app.radio(key="r_allocate").set_value("sensitivity").run()
    app.switch_page("ui/pages/spectra.py").run()
    assert not app.exception and not app.info
    assert _metric(app, "Mean energy kept").value != spectral  # the ranks now follow the measured drops
