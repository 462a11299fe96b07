"""Every page with an upload of each newer family (AppTest): a Qwen2 (the Llama family, 4 query heads over 2 k/v heads,
with its BPE), an MPNet and a ModernBERT. Each page opens; Apply with heads + FFN + int8 shows both sides' quality (bits
per token and the continuations for the decoder, fidelity for the encoders); what a family cannot do (MPNet's attention
variants, the encoders' token pooling) is greyed out with the table's one line."""
import pytest
from streamlit.testing.v1 import AppTest

import compress as C
from conftest import ROOT
from ui import safe


def _open(fixture, request, monkeypatch):
    """The upload registered as a bundled model, its Model and Spectra pages opened: (bundle, Layers x heads metric,
    AppTest now on Compress)."""
    b = request.getfixturevalue(fixture)
    monkeypatch.setitem(C.BUNDLED, fixture, lambda: b)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["model"] = fixture
    at.run()
    assert not at.exception
    layers = next(m for m in at.metric if m.label == "Layers x heads")
    assert layers.value == "2 x 4"
    at.switch_page("ui/pages/spectra.py").run()
    assert not at.exception
    at.switch_page("ui/pages/compress.py").run()
    return b, layers, at


def _apply_then_the_rest(at) -> tuple[dict, int]:
    """Heads 2 + FFN 0.5 + int8, Apply, then Trade-offs and Learn open: ({label: [values]}, code blocks) of Apply."""
    at.select_slider(key="r_heads").set_value(2).run()
    at.slider(key="r_ffn").set_value(0.5).run()
    at.selectbox(key="r_quant").set_value("int8").run()
    at.button[0].click().run()
    assert not at.exception and not at.error
    shown, codes = {}, len(at.code)
    for m in at.metric:
        shown.setdefault(m.label, []).append(m.value)
    for page in ("tradeoffs", "learn"):
        at.switch_page(f"ui/pages/{page}.py").run()
        assert not at.exception and not at.error, page
    return shown, codes


def test_every_page_works_with_a_llama_upload(request, monkeypatch):
    _, layers, at = _open("tiny_qwen2", request, monkeypatch)
    assert layers.help == "4 query heads share 2 key/value heads"
    shown, codes = _apply_then_the_rest(at)
    bits = [float(v) for v in shown["bits per token"]]
    assert len(bits) == 2 and all(b > 0 for b in bits)
    assert codes == 4  # greedy and sampled continuations, original and compressed


@pytest.mark.parametrize("fixture", ["tiny_mpnet", "tiny_modernbert"])
def test_every_page_works_with_an_encoder_upload(fixture, request, monkeypatch):
    b, _, at = _open(fixture, request, monkeypatch)
    pool = at.radio(key="r_pool")
    assert pool.disabled and safe.plain(C.refusal(b, C.Recipe(pool=2, pool_at=1))) in pool.help  # as plain text
    assert at.selectbox(key="r_attention").disabled == (fixture == "tiny_mpnet")
    fidelity = [float(v) for v in _apply_then_the_rest(at)[0]["fidelity · our sentences"]]
    assert len(fidelity) == 2 and fidelity[0] == 1.0 and 0 < fidelity[1] <= 1.0  # the original's, the compressed one's
