"""The Compress page's take-away (AppTest): the peer measured beside the compressed model, the zip prepared on the
queue and uploaded back (compared with its original, the uploaded model itself), hostile zips refused in one line,
and the HTML report built from the page's numbers."""
import io
import json
import re
import zipfile

import compress as C
from ui import takeaway


def _applied(app, quant="int8"):
    app.run()
    app.switch_page("ui/pages/compress.py").run()
    app.selectbox(key="r_quant").set_value(quant).run()
    app.slider(key="r_ffn").set_value(0.5).run()
    app.button[0].click().run()  # Apply
    assert not app.exception and not app.error
    return app


def _sizes(app):
    return [m.value for m in app.metric if m.label == "Size"]


def test_apply_measures_the_peer_and_the_zip_uploads_back(app):
    _applied(app)
    peer = [c.value for c in app.caption if c.value.startswith("**Peer**")]
    assert peer and "ONNX Runtime int8 of the original" in peer[0] and "x smaller" in peer[0]
    res = app.session_state["result"]
    assert res["peer"]["applied"]["runtime_applied"] == "onnxruntime"
    app.button(key="zip_prepare").click().run()
    assert not app.exception and not app.error
    z = app.session_state["zip"]
    with zipfile.ZipFile(io.BytesIO(z["data"])) as f:
        card = json.loads(f.read("card.json"))
        assert {"weights.safetensors", "recipe.json", "README.md"} <= set(f.namelist())
    assert card["size_bytes"] == z["model_bytes"] == res["nums"]["compressed"]["size_bytes"]
    assert card["quality"] == res["nums"]["compressed"]["quality"]  # the page's numbers, not measured again
    shown = _sizes(app)

    app.slider(key="r_ffn").set_value(1.0).run()  # move away, then upload the zip back
    app.radio(key="model_source").set_value("Upload a zip").run()
    app.file_uploader(key="upload").upload("compressed.zip", z["data"]).run()
    assert not app.exception and not app.sidebar.error
    assert app.slider(key="r_ffn").value == 0.5 and app.selectbox(key="r_quant").value == "int8"  # its recipe
    assert any("Comparing the uploaded compressed model" in i.value for i in app.info)
    assert _sizes(app) == shown  # measured again, on the uploaded model: the same sizes
    assert "tiny-bert" in app.sidebar.caption[-1].value


def test_a_hostile_compressed_zip_is_one_line_and_the_model_stays(app):
    _applied(app)
    app.button(key="zip_prepare").click().run()
    data = app.session_state["zip"]["data"]
    with zipfile.ZipFile(io.BytesIO(data)) as f:
        files = {n: f.read(n) for n in f.namelist()}
    card = json.loads(files["card.json"])
    card["original"]["content_hash"] = "f" * 64
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as f:
        for n, v in {**files, "card.json": json.dumps(card).encode()}.items():
            f.writestr(n, v)
    app.radio(key="model_source").set_value("Upload a zip").run()
    app.file_uploader(key="upload").upload("evil.zip", buf.getvalue()).run()
    assert not app.exception
    errors = [e.value for e in app.sidebar.error]
    assert len(errors) == 1 and "other weights" in errors[0] and "\n" not in errors[0]
    assert "tiny-bert" in app.sidebar.caption[-1].value and app.session_state["result"] is not None
    card = {**json.loads(files["card.json"]), "quality": ["not", "a", "dict"], "size_bytes": "big"}  # loads; odd card
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as f:
        for n, v in {**files, "card.json": json.dumps(card).encode()}.items():
            f.writestr(n, v)
    app.file_uploader(key="upload").upload("odd.zip", buf.getvalue()).run()
    assert not app.exception and not app.sidebar.error
    assert any("Its card says no size; below" in i.value for i in app.info)


def test_the_report_holds_the_numbers_the_page_shows(app, tiny_bert):
    _applied(app)
    res = app.session_state["result"]
    html = takeaway.report_html(tiny_bert, res, {})
    for m in app.metric:  # every size, latency and quality number shown on the page
        if m.label in ("Size", "CPU latency p50") or m.label.startswith(("fidelity", "retrieval")):
            assert m.value in html, m.label
    assert "Peer: ONNX Runtime int8 of the original" in html and res["recipe"].to_json() in html.replace("&quot;", '"')
    assert not re.search(r"<script[^>]*\bsrc=|<link|<img|@import|@font-face", html)  # plotly inline, nothing fetched
    assert C.Recipe.from_json(res["recipe"].to_json()) == res["recipe"]
    said = [s.value for s in [*app.success, *app.info, *app.warning] if s.value.startswith("Quality: **")]
    assert said and said[0].split("**")[1] in re.search(r"<b>Quality: ([a-z ]+)</b>", html)[1]  # the page's verdict


def test_cli_report_measures_the_recipe_and_the_peer(tiny_bert, monkeypatch, tmp_path, capsys):
    from compress.__main__ import main
    monkeypatch.setitem(C.BUNDLED, "tiny-bert", lambda: tiny_bert)
    C.load_model.cache_clear()
    out = tmp_path / "r.html"
    assert main(["report", "--model", "tiny-bert", "--heads", "2", "--quant", "int8", "--batch", "2", "--seq", "16",
                 "--out", str(out)]) == 0
    html = out.read_text()
    assert json.loads(capsys.readouterr().out)["bytes"] == len(html.encode())
    assert html.count('class="plotly-graph-div"') == 3 and "Peer: ONNX Runtime int8 of the original" in html
    assert "The compressed tiny-bert is " in html and "x smaller than the original" in html
    assert "python -m compress report --model tiny-bert --heads 2 --quant int8 --out report.html" in html
    assert "Sample outputs" in html and "Per-layer report" not in html  # nothing factorized: no per-layer table
    C.load_model.cache_clear()


def test_sizes_and_ratios_read_right_at_every_scale():
    from compress.outputs.html import mb, ratio
    assert [mb(n) for n in (23_480_000, 1_000_000, 123_456, 45_678, 12)] == \
        ["23.5 MB", "1.0 MB", "0.12 MB", "0.046 MB", "0.000 MB"]  # a tiny model's parts add up as shown
    assert ratio(4.0, "smaller", "larger") == "4.00x smaller" and ratio(0.87, "smaller", "larger") == "1.15x larger"
    assert ratio(0.996, "smaller", "larger") == ratio(1.004, "faster", "slower") == "about the same"  # not '1.00x larger'
